"""``poolscope audit TARGET``: load the app, read its routes and source, print the checklist.

TARGET is ``module:attribute``, a module, a ``.py`` file (imported the way
``python file.py`` would find its neighbours) or a directory (read, not
imported). Importing is the only code of the app that runs; its own
telemetry exporters are switched off for it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from ..._errors import ConfigurationError
from ._findings import ITEMS, LLM_LIMIT, Finding, relative
from ._routes import find_app, scan_routes
from ._source import scan

__all__ = ["AuditResult", "audit", "run_audit"]

_QUIET: Final = {
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
}
"""The app's own telemetry, off while it is imported to be read."""
_SKIPPED_DIRS: Final = frozenset({".venv", "venv", ".git", "node_modules", "__pycache__", ".tox"})


@dataclass
class AuditResult:
    target: str
    app: str | None = None
    routes: int = 0
    files: list[Path] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    llm_calls: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """The keys of the items with a finding."""
        return [item.key for item in ITEMS if any(f.item == item.key for f in self.findings)]

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "app": self.app,
            "routes": self.routes,
            "files": [relative(path) for path in self.files],
            "llm_calls": self.llm_calls,
            "notes": self.notes,
            "items": [
                {
                    "key": item.key,
                    "title": item.title,
                    "ok": item.key not in self.failed,
                    "advice": item.advice,
                    "findings": [
                        {"file": relative(f.path), "line": f.line, "message": f.message}
                        for f in sorted(self.findings)
                        if f.item == item.key
                    ],
                }
                for item in ITEMS
            ],
        }


def _outside_the_project(path: Path) -> bool:
    """A library's file: site-packages, or the standard library."""
    if {"site-packages", "dist-packages"} & set(path.parts):
        return True
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    return path.resolve().is_relative_to(stdlib)


def _import(target: str) -> tuple[dict[str, Any], Path | None, str | None]:
    """The target's namespace, its file, and the attribute it names (``module:attr``)."""
    module_name, _, attribute = target.partition(":")
    path = Path(module_name)
    for name, value in _QUIET.items():
        os.environ[name] = value
    try:
        if path.suffix == ".py":
            if not path.is_file():
                raise ConfigurationError(f"{target}: no such file")
            sys.path.insert(0, str(path.resolve().parent))
            spec = importlib.util.spec_from_file_location(path.stem, path)
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ConfigurationError:
        raise
    except (Exception, SystemExit) as error:  # the app's own import failed: say how
        raise ConfigurationError(
            f"cannot import {module_name}: {type(error).__name__}: {error}"
        ) from None
    file = getattr(module, "__file__", None)
    return vars(module), Path(file) if file else None, attribute or None


def audit(target: str) -> AuditResult:
    """Every finding for ``target``."""
    result = AuditResult(target)
    files: list[Path] = []
    check_routes = True
    path = Path(target.partition(":")[0])
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*.py") if not _SKIPPED_DIRS & set(p.relative_to(path).parts[:-1])
        )
        result.notes.append("a directory is read, not imported: routes found by their decorators")
    else:
        namespace, file, attribute = _import(target)
        if file is not None:
            files.append(file)
        found = find_app(namespace, attribute)
        if found is None:
            if attribute is not None:
                raise ConfigurationError(
                    f"{target}: {attribute!r} is not a Starlette or FastAPI app"
                )
            result.notes.append(
                "no Starlette or FastAPI app found: routes found by their decorators"
            )
        else:
            name, app = found
            check_routes = False
            routes = scan_routes(app)
            result.app = f"{type(app).__name__} app `{name}`"
            result.routes = routes.routes
            result.findings += routes.findings
            files += sorted(routes.files - set(files))
    for file in files:
        if _outside_the_project(file):
            continue
        try:
            found_in = scan(file, check_routes=check_routes)
        except (OSError, SyntaxError, ValueError) as error:
            result.notes.append(f"{relative(file)} could not be read: {error}")
            continue
        result.files.append(file)
        result.findings += found_in.findings
        result.llm_calls += found_in.llm_calls
    result.findings = sorted(set(result.findings))
    return result


def _print(result: AuditResult, out: TextIO) -> None:
    what = result.app or "no app object"
    routes = f" ({result.routes} routes)" if result.app else ""
    out.write(
        f"poolscope audit: {result.target}, {what}{routes}, "
        f"{len(result.files)} file{'s' if len(result.files) != 1 else ''} read\n\n"
    )
    for note in result.notes:
        out.write(f"  note: {note}\n")
    failed = result.failed
    for item in ITEMS:
        findings = [f for f in result.findings if f.item == item.key]
        if not findings:
            extra = " (no LLM call found)" if item.key == LLM_LIMIT and not result.llm_calls else ""
            out.write(f"✓ {item.title}{extra}\n")
            continue
        out.write(f"✗ {item.title}\n")
        for finding in findings:
            out.write(f"    {relative(finding.path)}:{finding.line}  {finding.message}\n")
        out.write(f"    → {item.advice}\n\n")
    count = len(failed)
    out.write(
        f"{count} of {len(ITEMS)} items fail.\n" if count else f"All {len(ITEMS)} items pass.\n"
    )


def run_audit(target: str, *, json_output: Path | None = None, out: TextIO = sys.stdout) -> int:
    """Print the checklist; exit status 1 when an item fails, else 0."""
    if json_output is not None and not json_output.resolve().parent.is_dir():
        raise ConfigurationError(f"--json: directory {json_output.parent} does not exist")
    result = audit(target)
    _print(result, out)
    if json_output is not None:
        json_output.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return 1 if result.failed else 0
