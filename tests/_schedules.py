"""The model the schedule tests (``test_schedules.py``) check poolscope against.

Steps a schedule is made of (submit, release, cancel, shutdown, resize), a
:class:`Model` of which tasks hold a seat and which wait for one, and a
:class:`Run` per path that plays the steps and compares the live counts and
the finished spans with the model after every step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import anyio
import anyio.from_thread
import anyio.to_thread
from hypothesis import event
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import Span, StatusCode

import poolscope
from conftest import Telemetry, make_telemetry
from poolscope import semconv
from poolscope._core._pools import Pool, pool_for
from poolscope._core._task import Task, current_task

TIMEOUT = 5.0
"""How long a step may take to settle; only a broken schedule ever waits this long."""

OFFSET_TOLERANCE_NS = 1_000_000
"""How far apart two separate readings of ``time_ns() - monotonic_ns()`` may be: clock
slewing (<= 0.5 ms/s) and the gap between two clock reads (measured: p99 150 ns, max
40 µs when nothing is switched out). A task's spans share one reading, so within a
task wait + run is exact."""

# Examples per test; their sum is the number of schedules one run of this file tries.
THREAD_POOL_EXAMPLES = 600
ASYNCIO_EXAMPLES = 400
ANYIO_EXAMPLES = 600


RETIRED = "schedule-retired"


class JobError(Exception):
    """What a task told to raise raises (not a RuntimeError: that means a refused submit)."""


# --- schedules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Submit:
    """Hand a new task to the pool; it blocks until released unless ``blocks`` is false."""

    blocks: bool = True
    raises: bool = False
    abandon: bool = False  # anyio: abandon_on_cancel
    cancel_at_once: bool = False  # cancel right after the submit, racing the worker


@dataclass(frozen=True)
class Release:
    """Let the ``pick``-th unreleased task end (at once if running, else as soon as it starts)."""

    pick: int


@dataclass(frozen=True)
class Cancel:
    """Cancel the ``pick``-th task whose caller still waits (a queued one if ``queued``)."""

    pick: int
    queued: bool


@dataclass(frozen=True)
class Shutdown:
    """``shutdown(wait=False, cancel_futures=True)``: queued tasks are cancelled."""


@dataclass(frozen=True)
class Resize:
    """Set the anyio limiter's ``total_tokens``."""

    tokens: float


Step = Submit | Release | Cancel | Shutdown | Resize

WAITING, RUNNING, ORPHAN, DONE, CANCELLED, REJECTED = (
    "waiting",
    "running",
    "orphan",
    "done",
    "cancelled",
    "rejected",
)


LIVE = (WAITING, RUNNING, ORPHAN)


def schedules(*, abandon: bool, shutdown: bool, resize: bool) -> st.SearchStrategy[list[Step]]:
    """Lists of steps, weighted towards submits so that queues form.

    (``st.one_of`` does not weight repeated branches, so the kind is drawn first.)
    """
    kinds = ["submit"] * 6 + ["release"] * 4 + ["cancel"] * 3
    kinds += ["shutdown"] * shutdown + ["resize"] * (2 * resize)
    pick = st.integers(min_value=0, max_value=7)
    submit = st.builds(
        Submit,
        blocks=st.sampled_from([True, True, True, False]),
        raises=st.booleans(),
        abandon=st.booleans() if abandon else st.just(False),
        cancel_at_once=st.sampled_from([False] * 5 + [True]),
    )
    tokens = st.one_of(st.integers(min_value=0, max_value=5), st.just(math.inf))
    by_kind: dict[str, st.SearchStrategy[Step]] = {
        "submit": submit,
        "release": st.builds(Release, pick),
        "cancel": st.builds(Cancel, pick, st.booleans()),
        "shutdown": st.just(Shutdown()),
        "resize": st.builds(Resize, tokens),
    }
    step = st.sampled_from(kinds).flatmap(by_kind.__getitem__)
    return st.lists(step, min_size=8, max_size=40)


# --- tasks -------------------------------------------------------------------------------

Figures = tuple[int, int, float, int]  # busy, pending, limit, tasks running without a seat


class Job:
    """One task of a schedule: the function the pool runs, and what the test saw of it."""

    def __init__(self, k: int, step: Submit, probe: Callable[[], Figures]) -> None:
        self.k = k
        self.blocks, self.raises, self.abandon = step.blocks, step.raises, step.abandon
        self.cancel_at_once = step.cancel_at_once
        self.probe = probe
        self.gate = threading.Event()  # set: may end
        self.started = threading.Event()  # the function is running
        self.ended = threading.Event()  # its run span ended: poolscope's counts are final
        self.submitted = threading.Event()  # the executor's submit returned (asyncio path)
        self.finished = threading.Event()  # the caller has its outcome
        self.detached = False  # the caller stopped waiting while the function ran on
        self.expected = "raised" if step.raises else "returned"
        self.outcome = ""
        self.span_id = 0
        self.at_submit = (0, 0)  # the model's (busy, pending) when it was submitted
        self.seen: Figures | None = None  # the live figures when it started
        self.task: Task | None = None  # poolscope's record of it, from inside the worker
        self.t_before = self.t_after = self.t_start = self.t_end = self.t_seen = 0
        self.future: Future[int] | None = None
        self.cancel: Callable[[], object] | None = None
        self.handle: Future[Any] | None = None
        if not step.blocks:
            self.gate.set()

    def __call__(self) -> int:
        self.t_start = time.monotonic_ns()
        self.task = current_task.get()
        self.seen = self.probe()
        self.started.set()
        if not self.gate.wait(TIMEOUT):
            raise TimeoutError(f"task {self.k} was never released")
        self.t_end = time.monotonic_ns()
        if self.raises:
            raise JobError(self.k)
        return self.k

    def __repr__(self) -> str:
        return f"<Job {self.k}>"


def _wait(flag: threading.Event, what: str) -> None:
    assert flag.wait(TIMEOUT), f"timed out waiting for {what}"


class RunEnds(SpanProcessor):
    """Tells a job that its run span ended, which is when poolscope is done with it.

    ``Task.finish`` lowers busy before it ends the run span, so once this fires the
    counts are final: the test waits for it instead of polling the counts it checks.
    """

    def __init__(self, jobs: dict[int, Job]) -> None:
        self.jobs = jobs

    def on_end(self, span: ReadableSpan) -> None:
        if span.name != semconv.SPAN_RUN or span.parent is None:
            return
        job = self.jobs.get(span.parent.span_id)
        if job is not None:
            job.t_seen = time.monotonic_ns()
            job.ended.set()


# --- the model ---------------------------------------------------------------------------


class Model:
    """Which tasks hold a seat (worker or token), which wait for one, in FIFO order.

    Both ThreadPoolExecutor (one FIFO queue, taken by the first free worker) and
    anyio's CapacityLimiter (FIFO waiters, a token handed over only while fewer are
    borrowed than ``total_tokens``) start the oldest waiting task when a seat frees.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.waiting: list[int] = []
        self.running: list[int] = []  # hold a seat
        self.orphans: list[int] = []  # still running, seat given back (anyio abandon_on_cancel)
        self.released: set[int] = set()
        self.started: set[int] = set()
        self.cancelled: set[int] = set()  # cancelled while waiting: a cancelled wait, no run
        self.rejected: set[int] = set()
        self.kept = 0  # seats held when the limit was cut below them, until the next start

    @property
    def busy(self) -> int:
        return len(self.running) + len(self.orphans)

    @property
    def pending(self) -> int:
        return len(self.waiting)

    def state(self, k: int) -> str:
        for state, tasks in (
            (WAITING, self.waiting),
            (RUNNING, self.running),
            (ORPHAN, self.orphans),
            (CANCELLED, self.cancelled),
            (REJECTED, self.rejected),
        ):
            if k in tasks:
                return state
        return DONE

    def advance(self) -> tuple[list[int], list[int]]:
        """Let released tasks end and waiting tasks take free seats; (started, ended)."""
        started: list[int] = []
        ended: list[int] = []
        while True:
            done = [k for k in (*self.running, *self.orphans) if k in self.released]
            for k in done:
                (self.running if k in self.running else self.orphans).remove(k)
                ended.append(k)
            moved = False
            while self.waiting and len(self.running) < self.limit:
                k = self.waiting.pop(0)
                self.running.append(k)
                self.started.add(k)
                started.append(k)
                self.kept = 0
                moved = True
            if not done and not moved:
                return started, ended


# --- one schedule on one pool ------------------------------------------------------------


class Run:
    """One schedule on one instrumented pool, checked against the model after every step."""

    name: ClassVar[str]

    def __init__(self, limit: float) -> None:
        self.model = Model(limit)
        self.jobs: list[Job] = []
        self.by_span: dict[int, Job] = {}
        self.flags: set[str] = set()
        self.shut = False
        self.stack = contextlib.ExitStack()
        self.telemetry: Telemetry = make_telemetry()
        self.telemetry.tracer_provider.add_span_processor(RunEnds(self.by_span))
        self._pool: Pool | None = None

    # --- per path ------------------------------------------------------------------------

    def create(self) -> None:
        """Make the pool, before poolscope is on."""
        raise NotImplementedError

    def register(self) -> Pool:
        raise NotImplementedError

    def submit(self, job: Job, *, queued: bool, rejected: bool) -> None:
        """Submit ``job``; return once the submit has happened (or been refused)."""
        raise NotImplementedError

    def request_cancel(self, job: Job, state: str) -> None:
        raise NotImplementedError

    def cancel_running(self, job: Job) -> tuple[bool, bool]:
        """What cancelling a running task does: (its caller stops waiting, its seat is freed)."""
        raise NotImplementedError

    cancels_before_queueing: ClassVar[bool] = False
    """``Submit.cancel_at_once`` cancels before the task can queue (anyio's checkpoint)."""

    def cancel_right_away(self, job: Job) -> bool:
        """Cancel ``job`` just submitted; True if that kept it from ever running."""
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    def resize(self, tokens: float) -> None:
        raise NotImplementedError

    def outcome(self, job: Job) -> str:
        return job.outcome

    def close(self) -> None:
        """Let everything end (every gate is open by now)."""

    # --- life cycle ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.create()  # before poolscope is on: its warm-up is not part of the schedule
            poolscope.instrument(
                tracer_provider=self.telemetry.tracer_provider,
                meter_provider=self.telemetry.meter_provider,
                wait_span_threshold=0,  # a wait span for every task
                run_spans=True,
            )
            self._pool = self.register()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            for job in self.jobs:
                job.gate.set()
            self.close()
        finally:
            try:
                self.stack.__exit__(*exc)
            finally:
                if self._pool is not None:
                    # Pools stay registered until garbage collected, and snapshot_all()
                    # sums pools of one name: retire this one from the next schedule's.
                    self._pool.rename(RETIRED)
                poolscope.uninstrument()
                self.telemetry.tracer_provider.shutdown()
                self.telemetry.meter_provider.shutdown()

    @property
    def pool(self) -> Pool:
        assert self._pool is not None
        return self._pool

    def figures(self) -> Figures:
        """The pool's live figures, read as a metric collection reads them."""
        pool = self.pool
        with pool.lock:
            busy, pending = pool.counts()
        return busy, pending, pool.limit(), len(self.model.orphans)

    def track(self, job: Job, span: Span) -> None:
        job.span_id = span.get_span_context().span_id
        self.by_span[job.span_id] = job

    # --- steps ---------------------------------------------------------------------------

    def play(self, steps: list[Step]) -> None:
        for step in steps:
            self.apply(step)
        self.drain()
        self.verify()

    def apply(self, step: Step) -> None:
        model = self.model
        if isinstance(step, Submit):
            self.do_submit(step)
        elif isinstance(step, Release):
            live = [
                job
                for job in self.jobs
                if job.k not in model.released and model.state(job.k) in LIVE
            ]
            if live:
                self.do_release(live[step.pick % len(live)])
        elif isinstance(step, Cancel):
            live = [
                job
                for job in self.jobs
                if model.state(job.k) in (WAITING, RUNNING) and not job.detached
            ]
            queued = [job for job in live if model.state(job.k) == WAITING]
            live = queued if step.queued and queued else live
            if live:
                self.do_cancel(live[step.pick % len(live)])
        elif isinstance(step, Shutdown):
            self.do_shutdown()
        else:
            self.do_resize(step.tokens)
        self.check(step)

    def do_submit(self, step: Submit) -> None:
        model = self.model
        job = Job(len(self.jobs), step, self.figures)
        self.jobs.append(job)
        job.at_submit = (model.busy, model.pending)
        if not step.blocks:
            model.released.add(job.k)
        if self.shut:
            model.rejected.add(job.k)
            job.expected = REJECTED
            self.flags.add("submit refused after shutdown")
            self.submit(job, queued=False, rejected=True)
            return
        if step.cancel_at_once and self.cancels_before_queueing:
            self.flags.add("cancelled before it queued")
            model.cancelled.add(job.k)
            job.expected = CANCELLED
            self.submit(job, queued=False, rejected=False)
            _wait(job.finished, f"{job} to be cancelled")
            return
        model.waiting.append(job.k)
        started, ended = model.advance()
        self.submit(job, queued=job.k not in started, rejected=False)
        if step.cancel_at_once:
            self.race_cancel(job, started, ended)
        self.settle(started, ended)

    def race_cancel(self, job: Job, started: list[int], ended: list[int]) -> None:
        """Cancel ``job`` right after its submit: with a free seat, the worker races the
        cancel, so the model follows whichever won (``Future.cancel()`` tells)."""
        model = self.model
        if self.cancel_right_away(job):  # it will never run
            if job.k in started:
                self.flags.add("cancel won the race with a free worker")
                started.remove(job.k)
                model.started.discard(job.k)
                if job.k in ended:
                    ended.remove(job.k)
                else:
                    model.running.remove(job.k)
            else:
                self.flags.add("cancelled while waiting")
                model.waiting.remove(job.k)
            model.cancelled.add(job.k)
            job.expected = CANCELLED
            _wait(job.finished, f"{job} to be cancelled")
            return
        assert job.k in started, f"{job} was queued, yet could not be cancelled"
        self.flags.add("cancel lost the race: the task ran")
        gone, _ = self.cancel_running(job)
        if gone:
            job.detached = True
            job.expected = CANCELLED
            _wait(job.finished, f"{job} to be cancelled")

    def do_release(self, job: Job) -> None:
        self.model.released.add(job.k)
        started, ended = self.model.advance()
        job.gate.set()
        self.settle(started, ended)

    def do_cancel(self, job: Job) -> None:
        model = self.model
        state = model.state(job.k)
        started: list[int] = []
        ended: list[int] = []
        if state == WAITING:
            self.flags.add("cancelled while waiting")
            model.waiting.remove(job.k)
            model.cancelled.add(job.k)
            job.expected = CANCELLED
            gone = True
        else:
            self.flags.add("cancelled while running")
            gone, freed = self.cancel_running(job)
            if gone:
                job.detached = True
                job.expected = CANCELLED
            if freed:
                # The thread runs on without a token: an orphan, and its token goes to
                # the next waiter. Counted before the cancel, as the next start reads it.
                self.flags.add("abandoned while running")
                model.running.remove(job.k)
                model.orphans.append(job.k)
                started, ended = model.advance()
            elif not gone:
                self.flags.add("cancel of a running task left it running")
        self.request_cancel(job, state)
        if gone:
            _wait(job.finished, f"{job} to be cancelled")
        self.settle(started, ended)

    def do_shutdown(self) -> None:
        model = self.model
        dropped = [self.jobs[k] for k in model.waiting]
        model.cancelled.update(model.waiting)
        model.waiting.clear()
        for job in dropped:
            job.expected = CANCELLED
        if dropped:
            self.flags.add("shutdown cancelled queued tasks")
        self.shut = True
        self.shutdown()
        for job in dropped:
            _wait(job.finished, f"{job} to be cancelled by shutdown")

    def do_resize(self, tokens: float) -> None:
        model = self.model
        if tokens < len(model.running):
            self.flags.add("limit cut below the tasks holding tokens")
            model.kept = len(model.running)
        else:
            model.kept = 0
        model.limit = tokens
        started, ended = model.advance()
        if started:
            self.flags.add("raised limit let waiting tasks start")
        self.resize(tokens)
        self.settle(started, ended)

    def settle(self, started: list[int], ended: list[int]) -> None:
        """Wait for exactly the starts and ends the model predicts for this step."""
        for k in started:
            _wait(self.jobs[k].started, f"task {k} to start")
        for k in ended:
            job = self.jobs[k]
            _wait(job.ended, f"task {k} to end")
            if not job.detached:
                _wait(job.finished, f"the caller of task {k} to get its outcome")

    def drain(self) -> None:
        """Release everything left; a limiter cut to zero tokens gets one back."""
        for job in self.jobs:
            if job.k not in self.model.released and self.model.state(job.k) in LIVE:
                self.do_release(job)
                self.check(f"drain: release {job}")
        if self.model.waiting:
            self.apply(Resize(1))
        for job in self.jobs:
            _wait(job.finished, f"the caller of {job} to finish")

    # --- invariants ----------------------------------------------------------------------

    def check(self, step: Step | str) -> None:
        """After every step: the live figures are sane and are exactly the model's."""
        model = self.model
        busy, pending, limit, orphans = self.figures()
        where = f"after {step!r}: busy={busy} pending={pending} limit={limit}"
        assert busy >= 0, where
        assert pending >= 0, where
        assert (busy, pending) == (model.busy, model.pending), (
            f"{where}; model: running={model.running} orphans={model.orphans} "
            f"waiting={model.waiting}"
        )
        assert limit == model.limit, where
        # busy ≤ limit, made exact for anyio's limiter. A token is only handed over
        # while fewer are borrowed than total_tokens, so every *start* happens at
        # busy ≤ limit (checked below, at each start). Two things let busy exceed the
        # limit afterwards, both real and both reported as they are: lowering
        # total_tokens does not take tokens back (those holders run on, and no task
        # starts until they are under the new limit), and abandon_on_cancel hands the
        # token back while the thread runs on (an orphan: a busy thread without a
        # token). So: tasks holding a token ≤ the limit, or ≤ the holders at the cut.
        assert busy - orphans <= max(limit, model.kept), where
        for job in self.jobs:
            if job.seen is not None and job.k in model.started:
                s_busy, s_pending, s_limit, s_orphans = job.seen
                at = f"when {job} started: busy={s_busy} pending={s_pending} limit={s_limit}"
                assert s_busy >= 1, at
                assert s_pending >= 0, at
                assert s_busy - s_orphans <= s_limit, at
        if pending:
            self.flags.add("tasks queued")
        if pending and limit == 0:
            self.flags.add("tasks waiting on zero tokens")
        if busy > limit:
            self.flags.add("busy above the limit")
        if orphans and busy > limit:
            self.flags.add("orphans beside a full limiter")

    def verify(self) -> None:
        """After the schedule: counts at 0, and one record per task per stage it reached."""
        model = self.model
        assert not (model.waiting or model.running or model.orphans)
        assert self.figures()[:2] == (0, 0)
        gauges = self.telemetry.gauges(self.name)
        assert (gauges["busy"], gauges["pending"]) == (0, 0), gauges
        if any(job.raises for job in self.jobs if job.k in model.started):
            self.flags.add("a task ran and raised")

        def count(metric: str, **match: Any) -> int:
            points = self.telemetry.points(metric, executor__name=self.name, **match)
            return sum(p.count for p in points)

        accepted = [job for job in self.jobs if job.k not in model.rejected]
        ran = [job for job in self.jobs if job.k in model.started]
        assert count(semconv.METRIC_TASK_WAIT_DURATION) == len(accepted)
        cancelled_waits = count(semconv.METRIC_TASK_WAIT_DURATION, executor__task__cancelled=True)
        assert cancelled_waits == len(model.cancelled)
        assert count(semconv.METRIC_TASK_RUN_DURATION) == len(ran)
        raised = count(semconv.METRIC_TASK_RUN_DURATION, error__type=f"{__name__}.JobError")
        assert raised == sum(job.raises for job in ran)
        self.verify_spans(accepted, ran)
        for job in self.jobs:
            assert self.outcome(job) == job.expected, (job, self.outcome(job), job.expected)

    def verify_spans(self, accepted: list[Job], ran: list[Job]) -> None:
        """Every wait and run span is where the task's own clock readings put it."""
        found: dict[tuple[int, str], list[ReadableSpan]] = {}
        for span in self.telemetry.exporter.get_finished_spans():
            if span.name in (semconv.SPAN_WAIT, semconv.SPAN_RUN) and span.parent is not None:
                found.setdefault((span.parent.span_id, span.name), []).append(span)
        waited_ns = 0
        for job in self.jobs:
            waits = found.get((job.span_id, semconv.SPAN_WAIT), [])
            runs = found.get((job.span_id, semconv.SPAN_RUN), [])
            if job.k in self.model.rejected:
                assert (waits, runs) == ([], []), job
                continue
            assert len(waits) == 1, (job, waits)
            [wait] = waits
            attributes = wait.attributes or {}
            assert attributes[semconv.ATTR_EXECUTOR_WORKER_BUSY] == job.at_submit[0], job
            assert attributes[semconv.ATTR_EXECUTOR_TASK_PENDING] == job.at_submit[1], job
            assert wait.start_time is not None and wait.end_time is not None
            waited_ns += wait.end_time - wait.start_time
            if job.k in self.model.cancelled:
                assert runs == [], job
                assert attributes.get(semconv.ATTR_EXECUTOR_TASK_CANCELLED) is True, job
                continue
            assert len(runs) == 1, (job, runs)
            self.verify_stay(job, wait, runs[0])
        waits_s = sum(
            p.sum
            for p in self.telemetry.points(
                semconv.METRIC_TASK_WAIT_DURATION, executor__name=self.name
            )
        )
        assert math.isclose(waits_s, waited_ns / 1e9, rel_tol=1e-9, abs_tol=1e-9 * len(accepted))
        runs_s = sum(
            p.sum
            for p in self.telemetry.points(
                semconv.METRIC_TASK_RUN_DURATION, executor__name=self.name
            )
        )
        run_ns = sum(job.task.ended - job.task.started for job in ran if job.task is not None)
        assert math.isclose(runs_s, run_ns / 1e9, rel_tol=1e-9, abs_tol=1e-9 * len(ran))

    def verify_stay(self, job: Job, wait: ReadableSpan, run: ReadableSpan) -> None:
        """wait + run = total: submit → start → end, each a reading taken where it happened.

        ``job.task`` holds poolscope's monotonic readings; the test's own readings
        bracket them (before/after the submit, at the function's first and last line,
        when the run span ended), so the spans must start at the submit and end at
        the end, with no gap and no overlap between wait and run.
        """
        task = job.task
        assert task is not None and job.seen is not None
        assert wait.start_time is not None and wait.end_time is not None
        assert run.start_time is not None and run.end_time is not None
        assert wait.end_time == run.start_time, job  # one reading ends the wait, starts the run
        after_submit = job.t_after or job.t_start
        assert job.t_before <= task.submitted <= after_submit, job
        assert task.submitted <= task.started <= job.t_start, job
        assert job.t_end <= task.ended <= job.t_seen, job
        offset = wait.start_time - task.submitted
        assert wait.end_time - task.started == offset, job  # the same offset: exact
        assert run.end_time - task.ended == offset, job  # still the same offset: exact
        wait_ns = wait.end_time - wait.start_time
        run_ns = run.end_time - run.start_time
        total_ns = task.ended - task.submitted
        assert wait_ns + run_ns == total_ns, job
        assert job.t_end - after_submit <= total_ns <= job.t_seen - job.t_before, job
        attributes = wait.attributes or {}
        assert attributes[semconv.ATTR_EXECUTOR_WORKER_LIMIT] == job.seen[2], job
        assert (run.status.status_code is StatusCode.ERROR) == job.raises, job


# --- ThreadPoolExecutor.submit -----------------------------------------------------------


def _warm(executor: ThreadPoolExecutor, workers: int) -> None:
    """Start every worker thread before poolscope is on.

    ThreadPoolExecutor starts threads lazily, guided by an idle-worker semaphore
    that can count a worker which is about to take other work, so a task may sit
    queued while fewer than ``max_workers`` threads exist. With every thread
    started, a queued task starts as soon as any worker is free, as the model says.
    """
    barrier = threading.Barrier(workers)
    list(executor.map(barrier.wait, [TIMEOUT] * workers))


class ThreadPoolRun(Run):
    name = "schedule-threads"

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.workers = workers
        self.executor: ThreadPoolExecutor | None = None

    def create(self) -> None:
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
        _warm(self.executor, self.workers)

    def register(self) -> Pool:
        assert self.executor is not None
        poolscope.instrument_executor(self.executor, name=self.name)
        pool = pool_for(self.executor)
        assert pool is not None
        return pool

    def submit(self, job: Job, *, queued: bool, rejected: bool) -> None:
        assert self.executor is not None
        with self.telemetry.tracer.start_as_current_span(f"task-{job.k}") as span:
            self.track(job, span)
            job.t_before = time.monotonic_ns()
            try:
                future = self.executor.submit(job)
            except RuntimeError:
                assert rejected, f"{job} refused by a pool that was not shut down"
                job.finished.set()
                return
            job.t_after = time.monotonic_ns()
        assert not rejected, f"{job} accepted by a shut down pool"
        job.future = future
        # After poolscope's own done callback, added inside submit.
        future.add_done_callback(lambda _: job.finished.set())

    def request_cancel(self, job: Job, state: str) -> None:
        assert job.future is not None
        assert job.future.cancel() == (state == WAITING), (job, state)

    def cancel_running(self, job: Job) -> tuple[bool, bool]:
        return False, False  # Future.cancel() of a running task does nothing

    def cancel_right_away(self, job: Job) -> bool:
        assert job.future is not None
        return job.future.cancel()

    def shutdown(self) -> None:
        assert self.executor is not None
        self.executor.shutdown(wait=False, cancel_futures=True)

    def outcome(self, job: Job) -> str:
        future = job.future
        if future is None:
            return REJECTED
        if future.cancelled():
            return CANCELLED
        return "raised" if isinstance(future.exception(0), JobError) else "returned"

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


# --- asyncio.to_thread on the loop's default executor --------------------------------------


class ObservedExecutor(ThreadPoolExecutor):
    """Tells the test when ``asyncio.to_thread`` has submitted a job, and its future.

    Its ``submit`` goes through poolscope's patched ``ThreadPoolExecutor.submit``.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        job = fn.args[0] if isinstance(fn, functools.partial) and fn.args else None
        if isinstance(job, Job):  # to_thread submits functools.partial(context.run, job)
            job.t_after = time.monotonic_ns()
            job.future = future
            job.submitted.set()
        return future


class AsyncioRun(Run):
    name = "schedule-asyncio"

    def __init__(self, workers: int, use_uvloop: bool) -> None:
        super().__init__(workers)
        self.workers = workers
        self.use_uvloop = use_uvloop
        self.executor: ObservedExecutor | None = None
        self.portal: anyio.from_thread.BlockingPortal | None = None

    def create(self) -> None:
        self.executor = ObservedExecutor(self.workers, thread_name_prefix=self.name)
        _warm(self.executor, self.workers)
        self.portal = self.stack.enter_context(
            anyio.from_thread.start_blocking_portal("asyncio", {"use_uvloop": self.use_uvloop})
        )
        executor = self.executor
        self.portal.call(lambda: asyncio.get_running_loop().set_default_executor(executor))

    def register(self) -> Pool:
        assert self.executor is not None
        poolscope.instrument_executor(self.executor, name=self.name)
        pool = pool_for(self.executor)
        assert pool is not None
        return pool

    async def call(self, job: Job) -> None:
        try:
            with self.telemetry.tracer.start_as_current_span(f"task-{job.k}") as span:
                self.track(job, span)
                job.t_before = time.monotonic_ns()
                try:
                    await asyncio.to_thread(job)
                    job.outcome = "returned"
                except JobError:
                    job.outcome = "raised"
                except RuntimeError:
                    job.outcome = REJECTED  # cannot schedule new futures after shutdown
                except asyncio.CancelledError:
                    job.outcome = CANCELLED
                    raise
        finally:
            job.finished.set()

    def submit(self, job: Job, *, queued: bool, rejected: bool) -> None:
        assert self.portal is not None

        def start() -> None:
            loop = asyncio.get_running_loop()
            task = loop.create_task(self.call(job))
            job.cancel = task.cancel
            if job.cancel_at_once:  # right after the task's first step, which submits
                loop.call_soon(task.cancel)

        self.portal.call(start)
        if rejected:
            _wait(job.finished, f"{job} to be refused")
        else:
            _wait(job.submitted, f"{job} to be submitted")

    def request_cancel(self, job: Job, state: str) -> None:
        assert self.portal is not None and job.cancel is not None
        self.portal.call(job.cancel)

    def cancel_running(self, job: Job) -> tuple[bool, bool]:
        return True, False  # the awaiting task ends; the worker runs the function to its end

    def cancel_right_away(self, job: Job) -> bool:
        _wait(job.finished, f"{job} to be cancelled")
        assert job.future is not None
        return job.future.cancelled()

    def shutdown(self) -> None:
        assert self.executor is not None
        self.executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        # Join the workers while the loop still runs: their results go back through it.
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


# --- anyio.to_thread.run_sync on a resizable CapacityLimiter ------------------------------


class AnyioRun(Run):
    name = "schedule-anyio"

    def __init__(self, tokens: int, use_uvloop: bool) -> None:
        super().__init__(tokens)
        self.tokens = tokens
        self.use_uvloop = use_uvloop
        self.portal: anyio.from_thread.BlockingPortal | None = None
        self.raw: Any = None  # anyio.CapacityLimiter, made on the portal's loop
        self.limiter: Any = None  # poolscope's InstrumentedCapacityLimiter around it

    def create(self) -> None:
        self.portal = self.stack.enter_context(
            anyio.from_thread.start_blocking_portal("asyncio", {"use_uvloop": self.use_uvloop})
        )
        self.raw = self.portal.call(lambda: anyio.CapacityLimiter(self.tokens))

    def register(self) -> Pool:
        self.limiter = poolscope.instrument_limiter(self.raw, name=self.name)
        pool = pool_for(self.raw)
        assert pool is not None
        return pool

    async def call(self, job: Job) -> None:
        try:
            with self.telemetry.tracer.start_as_current_span(f"task-{job.k}") as span:
                self.track(job, span)
                with anyio.CancelScope() as scope:
                    job.cancel = scope.cancel
                    if job.cancel_at_once:  # run_sync's first checkpoint raises
                        scope.cancel()
                    job.t_before = time.monotonic_ns()
                    try:
                        await anyio.to_thread.run_sync(
                            job, limiter=self.limiter, abandon_on_cancel=job.abandon
                        )
                        job.outcome = "returned"
                    except JobError:
                        job.outcome = "raised"
                if scope.cancelled_caught:
                    job.outcome = CANCELLED
        finally:
            job.finished.set()

    async def until_waiting(self, waiting: int) -> bool:
        """Let the loop run until ``waiting`` tasks wait for a token (a few iterations)."""
        for _ in range(1000):
            if self.limiter.statistics().tasks_waiting == waiting:
                return True
            await anyio.sleep(0)
        return False

    def submit(self, job: Job, *, queued: bool, rejected: bool) -> None:
        assert self.portal is not None
        job.handle = self.portal.start_task_soon(self.call, job)
        if queued:
            waiting = len(self.model.waiting)
            assert self.portal.call(self.until_waiting, waiting), f"{job} never queued"
            job.t_after = time.monotonic_ns()

    def request_cancel(self, job: Job, state: str) -> None:
        assert self.portal is not None and job.cancel is not None
        self.portal.call(job.cancel)

    cancels_before_queueing = True

    def cancel_running(self, job: Job) -> tuple[bool, bool]:
        # abandon_on_cancel: the caller returns and its token is released at once while
        # the thread runs on. Without it, the cancel waits for the function to return.
        return job.abandon, job.abandon

    def resize(self, tokens: float) -> None:
        assert self.portal is not None
        self.portal.call(setattr, self.limiter, "total_tokens", tokens)

    def close(self) -> None:
        if self.portal is None:
            return
        with contextlib.suppress(Exception):  # let any task still waiting run, and end
            self.portal.call(setattr, self.limiter, "total_tokens", math.inf)
        for job in self.jobs:
            if job.handle is not None:
                job.handle.result(TIMEOUT)


# --- the tests -----------------------------------------------------------------------------

TRIED: Counter[str] = Counter()


def report(test: str, reached: Counter[str], least: dict[str, int]) -> None:
    """Print what the schedules did, and fail if they missed the states that matter."""
    tried = reached["schedules"]
    TRIED[test] = tried
    print(f"\n{test}: {tried} schedules tried ({sum(TRIED.values())} in this file so far)")
    for flag, times in sorted(reached.items()):
        print(f"  {times:4d}  {flag}")
    missing = {flag: reached[flag] for flag, times in least.items() if reached[flag] < times}
    assert not missing, f"too few of {tried} schedules reached {missing} (wanted {least})"


def played(run: Run, steps: list[Step], reached: Counter[str]) -> None:
    with run:
        run.play(steps)
    for flag in sorted(run.flags):
        event(flag)
    reached.update(run.flags)
    reached["schedules"] += 1
