"""The source half of ``poolscope audit``: what the code hands to which pool, from its AST.

Nothing is executed. Names are resolved through the module's imports
(``import requests as rq``, ``from openai import OpenAI as Client``), through
``functools.partial`` objects bound to a name, and through clients stored on a
name, on ``self`` or on an app's ``state`` (``app.state.llm = OpenAI()``, then
``request.app.state.llm.chat.completions.create(...)``). A call in an
``async def`` that blocks, directly or through the module's own sync functions,
is on the event loop; a function passed to an executor is not called there.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ._findings import (
    DEFAULT_EXECUTOR,
    EXECUTORS,
    LLM_LIMIT,
    LOOP_BLOCKED,
    SYNC_ROUTES,
    THREADED_RESPONSES,
    Finding,
)

__all__ = ["SourceScan", "scan"]

_HTTP_VERBS: Final = ("get", "post", "put", "patch", "delete", "head", "options", "request")
BLOCKING_CALLS: Final = {
    "time.sleep": "time.sleep",
    "urllib.request.urlopen": "urllib.request",
    "urllib3.request": "urllib3",
    "subprocess.run": "subprocess",
    "subprocess.call": "subprocess",
    "subprocess.check_call": "subprocess",
    "subprocess.check_output": "subprocess",
    **{f"requests.{verb}": "requests" for verb in _HTTP_VERBS},
    **{f"httpx.{verb}": "httpx" for verb in (*_HTTP_VERBS, "stream")},
}
"""Calls that block their thread, by what makes them."""
SYNC_CLIENTS: Final = {
    "openai.OpenAI": "openai",
    "openai.AzureOpenAI": "openai",
    "anthropic.Anthropic": "anthropic",
    "anthropic.AnthropicBedrock": "anthropic",
    "anthropic.AnthropicVertex": "anthropic",
    "requests.Session": "requests",
    "requests.session": "requests",
    "httpx.Client": "httpx",
    "urllib3.PoolManager": "urllib3",
}
ASYNC_CLIENTS: Final = {
    "openai.AsyncOpenAI": "openai",
    "openai.AsyncAzureOpenAI": "openai",
    "anthropic.AsyncAnthropic": "anthropic",
    "anthropic.AsyncAnthropicBedrock": "anthropic",
    "anthropic.AsyncAnthropicVertex": "anthropic",
    "httpx.AsyncClient": "httpx",
}
LLM_SDKS: Final = frozenset({"openai", "anthropic"})
SEMAPHORES: Final = frozenset(
    {
        "asyncio.Semaphore",
        "asyncio.BoundedSemaphore",
        "anyio.Semaphore",
        "anyio.CapacityLimiter",
        "threading.Semaphore",
        "threading.BoundedSemaphore",
        "poolscope.instrument_semaphore",
        "poolscope.instrument_limiter",
    }
)
SHARED_POOLS: Final = {
    "asyncio.to_thread": "the loop's default executor",
    "anyio.to_thread.run_sync": "anyio's default limiter (40 tokens)",
    "starlette.concurrency.run_in_threadpool": "anyio's default limiter (40 tokens)",
    "fastapi.concurrency.run_in_threadpool": "anyio's default limiter (40 tokens)",
}
EXECUTOR_CLASSES: Final = frozenset(
    {
        "concurrent.futures.ThreadPoolExecutor",
        "concurrent.futures.thread.ThreadPoolExecutor",
        "concurrent.futures.ProcessPoolExecutor",
        "concurrent.futures.process.ProcessPoolExecutor",
    }
)
STREAMING_RESPONSES: Final = frozenset(
    {"starlette.responses.StreamingResponse", "fastapi.responses.StreamingResponse"}
)
FILE_RESPONSES: Final = frozenset(
    {"starlette.responses.FileResponse", "fastapi.responses.FileResponse"}
)
BACKGROUND_TASKS: Final = frozenset(
    {"starlette.background.BackgroundTask", "fastapi.background.BackgroundTask"}
)
ROUTE_DECORATORS: Final = frozenset({*_HTTP_VERBS, "api_route", "route"})
_NAMED_BY: Final = "poolscope.instrument_executor"
_PARTIAL: Final = "functools.partial"

_Key = tuple[str, ...]
"""Where a client or semaphore lives: ``("llm",)``, ``("self", "llm")``, ``("state", "llm")``."""
_Function = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class _Blocking:
    """A call that blocks its thread: what it is and, for a client, which."""

    label: str
    """As the finding names it: ``llm.chat.completions.create (openai.OpenAI, sync)``."""
    llm: bool


@dataclass
class SourceScan:
    """What one file does: its findings, and whether it made any LLM call."""

    path: Path
    findings: list[Finding] = field(default_factory=list)
    llm_calls: int = 0


def _key(target: ast.expr) -> _Key | None:
    if isinstance(target, ast.Name):
        return (target.id,)
    if isinstance(target, ast.Attribute):
        owner = target.value
        if isinstance(owner, ast.Name) and owner.id == "self":
            return ("self", target.attr)
        if isinstance(owner, ast.Attribute) and owner.attr == "state":
            return ("state", target.attr)
    return None


def _chain(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; None for anything but names and attributes."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _lives_at(chain: list[str], key: _Key) -> bool:
    if len(key) == 1:
        return chain[0] == key[0]
    if key[0] == "self":
        return chain[:2] == list(key)
    return any(chain[i : i + 2] == list(key) for i in range(len(chain) - 1))


def _body_nodes(function: _Function) -> Iterator[ast.AST]:
    """The nodes that run when ``function`` runs: not those of functions defined in it."""
    pending: list[ast.AST] = list(function.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        yield node
        pending.extend(ast.iter_child_nodes(node))


class _Module:
    def __init__(self, path: Path, tree: ast.Module) -> None:
        self.path = path
        self.tree = tree
        self.aliases: dict[str, str] = {}
        self.partials: dict[str, ast.Call] = {}
        """Names bound to ``functools.partial(f, *args)``: the ``partial(...)`` call."""
        self.clients: dict[_Key, str] = {}
        self.semaphores: set[_Key] = set()
        self.functions: dict[str, list[_Function]] = {}
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        self._read_imports()
        self._read_bindings()

    # --- names -------------------------------------------------------------------

    def _read_imports(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    local = alias.asname or alias.name.partition(".")[0]
                    self.aliases[local] = alias.name if alias.asname else local
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions.setdefault(node.name, []).append(node)

    def qualify(self, node: ast.expr) -> str | None:
        """The dotted name ``node`` stands for, through imports and bound partials."""
        if isinstance(node, ast.Name):
            if node.id in self.partials:
                return self.qualify(self.partials[node.id].args[0])
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            owner = self.qualify(node.value)
            return f"{owner}.{node.attr}" if owner else None
        if isinstance(node, ast.Call) and self.qualify(node.func) == _PARTIAL and node.args:
            return self.qualify(node.args[0])
        return None

    def _read_bindings(self) -> None:
        """Names bound to a partial, a client or a semaphore, wherever they are bound."""
        for node in ast.walk(self.tree):
            targets: list[ast.expr] = []
            value: ast.expr | None = None
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            elif isinstance(node, ast.With | ast.AsyncWith):
                for item in node.items:
                    if item.optional_vars is not None:
                        self._bind(item.optional_vars, item.context_expr)
                continue
            if value is not None:
                for target in targets:
                    self._bind(target, value)

    def _bind(self, target: ast.expr, value: ast.expr) -> None:
        if not isinstance(value, ast.Call):
            return
        made = self.qualify(value.func)
        key = _key(target)
        if key is None or made is None:
            return
        if made == _PARTIAL and value.args and len(key) == 1:
            self.partials[key[0]] = value
        elif made in SYNC_CLIENTS or made in ASYNC_CLIENTS:
            self.clients[key] = made
        elif made in SEMAPHORES:
            self.semaphores.add(key)

    # --- calls -------------------------------------------------------------------

    def effective(self, call: ast.Call) -> ast.Call:
        """``call`` as it runs: ``fetch()`` with ``fetch = partial(rq.get, url)`` is
        ``rq.get(url)``."""
        func = call.func
        if isinstance(func, ast.Name) and func.id in self.partials:
            bound = self.partials[func.id]
            return ast.Call(
                func=bound.args[0],
                args=[*bound.args[1:], *call.args],
                keywords=[*bound.keywords, *call.keywords],
                lineno=call.lineno,
                col_offset=call.col_offset,
            )
        return call

    def client_of(self, call: ast.Call) -> tuple[list[str], str] | None:
        """The chain of a call on a client (``llm.chat.completions.create``), and its class."""
        chain = _chain(self.effective(call).func)
        if chain is None or len(chain) < 2:
            return None
        for key, made in self.clients.items():
            if _lives_at(chain, key):
                return chain, made
        return None

    def blocking(self, call: ast.Call) -> _Blocking | None:
        """What blocks the thread in ``call``, if it does."""
        on_client = self.client_of(call)
        if on_client is not None:
            chain, made = on_client
            if made not in SYNC_CLIENTS:
                return None
            kind = SYNC_CLIENTS[made]
            return _Blocking(f"{'.'.join(chain)} ({made}, sync)", kind in LLM_SDKS)
        name = self.qualify(self.effective(call).func)
        if name in BLOCKING_CALLS:
            return _Blocking(name, False)
        return None

    def is_llm_call(self, call: ast.Call) -> bool:
        on_client = self.client_of(call)
        if on_client is None:
            return False
        chain, made = on_client
        kind = SYNC_CLIENTS.get(made) or ASYNC_CLIENTS.get(made)
        return kind in LLM_SDKS and chain[-1] in ("create", "stream", "parse")

    def local_functions(self, call: ast.Call) -> list[_Function]:
        """The module's own functions ``call`` may call, by name (``f()``, ``self.f()``)."""
        func = call.func
        if isinstance(func, ast.Name) and func.id not in self.aliases:
            return self.functions.get(func.id, [])
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in ("self", "cls")
        ):
            return self.functions.get(func.attr, [])
        return []

    def under_semaphore(self, node: ast.AST) -> bool:
        """Inside ``async with`` (or ``with``) a semaphore, in the same function."""
        current = self.parents.get(node)
        while current is not None and not isinstance(
            current, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        ):
            if isinstance(current, ast.With | ast.AsyncWith) and any(
                self._is_semaphore(item.context_expr) for item in current.items
            ):
                return True
            current = self.parents.get(current)
        return False

    def _is_semaphore(self, expr: ast.expr) -> bool:
        if isinstance(expr, ast.Call):
            return self.qualify(expr.func) in SEMAPHORES
        chain = _chain(expr)
        return chain is not None and any(_lives_at(chain, key) for key in self.semaphores)


def _calls(function: _Function) -> Iterator[ast.Call]:
    for node in _body_nodes(function):
        if isinstance(node, ast.Call):
            yield node


def _is_generator(function: _Function) -> bool:
    return any(isinstance(n, ast.Yield | ast.YieldFrom) for n in _body_nodes(function))


class _Scanner:
    def __init__(self, module: _Module, check_routes: bool) -> None:
        self.module = module
        self.check_routes = check_routes
        self.scan = SourceScan(module.path)
        self._blocks: dict[_Function, list[str] | None] = {}

    def find(self, node: ast.AST, item: str, message: str) -> None:
        line = getattr(node, "lineno", 0)
        self.scan.findings.append(Finding(self.module.path, line, item, message))

    def chain_to_block(self, function: _Function, seen: frozenset[int] = frozenset()) -> list[str]:
        """How a sync ``function`` blocks its thread: ``["_ask", "llm.… (openai.OpenAI, sync)"]``,
        or ``[]`` if it does not (as far as this module shows)."""
        if id(function) in seen or isinstance(function, ast.AsyncFunctionDef):
            return []
        for call in _calls(function):
            found = self.module.blocking(call)
            if found is not None:
                return [function.name, found.label]
            for callee in self.module.local_functions(call):
                deeper = self.chain_to_block(callee, seen | {id(function)})
                if deeper:
                    return [function.name, *deeper]
        return []

    def run(self) -> SourceScan:
        module = self.module
        for node in ast.walk(module.tree):
            if isinstance(node, ast.AsyncFunctionDef):
                self._async_function(node)
            elif isinstance(node, ast.FunctionDef) and self.check_routes:
                self._sync_route(node)
            elif isinstance(node, ast.Call):
                self._call(node)
        return self.scan

    def _async_function(self, function: ast.AsyncFunctionDef) -> None:
        for call in _calls(function):
            found = self.module.blocking(call)
            if found is not None:
                self.find(
                    call,
                    LOOP_BLOCKED,
                    f"`async def {function.name}` calls {found.label} on the event loop",
                )
                continue
            for callee in self.module.local_functions(call):
                chain = self.chain_to_block(callee)
                if chain:
                    self.find(
                        call,
                        LOOP_BLOCKED,
                        f"`async def {function.name}` calls {' → '.join(chain)} on the event loop",
                    )
                    break

    def _sync_route(self, function: ast.FunctionDef) -> None:
        """Without the app object: a ``def`` decorated as a route (``@app.get(...)``)."""
        for decorator in function.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if isinstance(target, ast.Attribute) and target.attr in ROUTE_DECORATORS:
                self.find(
                    function,
                    SYNC_ROUTES,
                    f"`def {function.name}` is a route: it runs in one of anyio's worker "
                    "threads per request",
                )
                return

    def _call(self, call: ast.Call) -> None:
        module = self.module
        call = module.effective(call)
        name = module.qualify(call.func)
        if module.is_llm_call(call):
            self.scan.llm_calls += 1
            if not module.under_semaphore(call):
                chain = _chain(call.func) or []
                self.find(
                    call,
                    LLM_LIMIT,
                    f"{'.'.join(chain)} is not inside `async with` a semaphore: nothing caps "
                    "how many run at once",
                )
        if name in SHARED_POOLS and not any(k.arg == "limiter" for k in call.keywords):
            self.find(call, DEFAULT_EXECUTOR, f"{name}(...) hands work to {SHARED_POOLS[name]}")
        elif (
            isinstance(call.func, ast.Attribute)
            and call.func.attr == "run_in_executor"
            and call.args
            and isinstance(call.args[0], ast.Constant)
            and call.args[0].value is None
        ):
            self.find(
                call,
                DEFAULT_EXECUTOR,
                "run_in_executor(None, ...) hands work to the loop's default executor",
            )
        elif name in EXECUTOR_CLASSES:
            self._executor(call, name)
        elif name in STREAMING_RESPONSES:
            self._streaming(call)
        elif name in FILE_RESPONSES:
            self.find(
                call,
                THREADED_RESPONSES,
                "FileResponse reads the file in anyio's worker threads, a seat per chunk",
            )
        elif name in BACKGROUND_TASKS or (
            isinstance(call.func, ast.Attribute) and call.func.attr == "add_task"
        ):
            self._background(call)

    def _executor(self, call: ast.Call, name: str) -> None:
        sized = bool(call.args) or any(k.arg == "max_workers" for k in call.keywords)
        named = any(k.arg == "thread_name_prefix" for k in call.keywords) or self._named(call)
        missing = [what for what, ok in (("size", sized), ("name", named)) if not ok]
        if missing:
            kind = name.rpartition(".")[2]
            self.find(call, EXECUTORS, f"{kind}(...) has no {' and no '.join(missing)}")

    def _named(self, call: ast.Call) -> bool:
        """Passed, as made or through the name it is bound to, to instrument_executor(name=...)."""
        module = self.module
        parent = module.parents.get(call)
        bound: _Key | None = None
        if isinstance(parent, ast.Assign | ast.AnnAssign):
            targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
            bound = _key(targets[0])
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.Call) and module.qualify(node.func) == _NAMED_BY):
                continue
            if not node.args or not any(k.arg == "name" for k in node.keywords):
                continue
            given = node.args[0]
            if given is call or (bound is not None and _key(given) == bound):
                return True
        return False

    def _streaming(self, call: ast.Call) -> None:
        if not call.args or not isinstance(call.args[0], ast.Call):
            return
        for function in self.module.local_functions(call.args[0]):
            if isinstance(function, ast.FunctionDef) and _is_generator(function):
                self.find(
                    call,
                    THREADED_RESPONSES,
                    f"StreamingResponse({function.name}()): `{function.name}` is a sync "
                    "generator, so every chunk takes one of anyio's worker threads",
                )
                return

    def _background(self, call: ast.Call) -> None:
        if not call.args:
            return
        task = call.args[0]
        if not isinstance(task, ast.Name):
            return
        for function in self.module.functions.get(task.id, []):
            if isinstance(function, ast.FunctionDef):
                self.find(
                    call,
                    THREADED_RESPONSES,
                    f"background task `{task.id}` is a sync function: it runs in one of "
                    "anyio's worker threads",
                )
                return


def scan(path: Path, *, check_routes: bool) -> SourceScan:
    """Every finding in the file at ``path``. ``check_routes``: also flag ``def`` routes by
    their decorators (when there is no app object to ask)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return _Scanner(_Module(path, tree), check_routes).run()
