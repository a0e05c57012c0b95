"""The checklist ``poolscope audit`` runs, and what a finding is.

Each item is a practice from the article's checklist of thread pool
starvation; a finding is one place in the code (file and line) that breaks
it. An item with no finding passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "DEFAULT_EXECUTOR",
    "EXECUTORS",
    "ITEMS",
    "LLM_LIMIT",
    "LOOP_BLOCKED",
    "SYNC_ROUTES",
    "THREADED_RESPONSES",
    "Finding",
    "Item",
    "relative",
]


@dataclass(frozen=True)
class Item:
    key: str
    title: str
    """What holds when the item passes."""
    advice: str
    """What to change when it fails."""


SYNC_ROUTES: Final = "sync_routes"
LOOP_BLOCKED: Final = "loop_blocked"
DEFAULT_EXECUTOR: Final = "default_executor"
EXECUTORS: Final = "executors"
THREADED_RESPONSES: Final = "threaded_responses"
LLM_LIMIT: Final = "llm_limit"

ITEMS: Final = (
    Item(
        SYNC_ROUTES,
        "no sync endpoint or dependency takes a seat of anyio's 40 worker threads",
        "make them `async def` with async clients; each `def` endpoint and sync dependency "
        "takes one of the 40 tokens every sync path of the process shares, per request (a "
        "FastAPI `def` endpoint with a response model a second one, to validate it)",
    ),
    Item(
        LOOP_BLOCKED,
        "no blocking call runs on the event loop",
        "use the async client (AsyncOpenAI, AsyncAnthropic, httpx.AsyncClient, "
        "asyncio.sleep), or hand the call to a named executor of its own; a blocking call in "
        "`async def` stops every request of the process for its whole length",
    ),
    Item(
        DEFAULT_EXECUTOR,
        "no blocking work goes to a shared pool (the loop's default executor, anyio's limiter)",
        "give that work an executor of its own, named and sized for it "
        "(poolscope.instrument_executor(ThreadPoolExecutor(N), name=...)); the default "
        "executor has min(32, cpu + 4) threads shared by everything that calls "
        "run_in_executor(None, ...) or asyncio.to_thread",
    ),
    Item(
        EXECUTORS,
        "every executor is named and sized on purpose",
        "pass max_workers (sized for the work, not the default min(32, cpu + 4)) and a name "
        "(thread_name_prefix=, or poolscope.instrument_executor(..., name=...)) so its waits "
        "show under that name",
    ),
    Item(
        THREADED_RESPONSES,
        "no sync streaming response, file response or sync background task holds a worker thread",
        "stream from an async generator, and make background tasks `async def`; Starlette "
        "runs each chunk of a sync iterator, each read of a file and each sync background "
        "task in anyio's worker threads",
    ),
    Item(
        LLM_LIMIT,
        "every LLM call waits for a semaphore sized to the provider's quota",
        "wrap the calls in `async with llm_quota:` with llm_quota = "
        "poolscope.instrument_semaphore(asyncio.Semaphore(QUOTA), name='llm-quota'), so a "
        "burst queues in your process, visibly, instead of at the provider",
    ),
)


@dataclass(frozen=True, order=True)
class Finding:
    path: Path
    line: int
    item: str
    message: str


def relative(path: Path) -> str:
    """``path`` relative to the working directory when under it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
