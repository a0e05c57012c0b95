"""Soak: a million offloads through every covered path into our real collector, each one counted.

poolscope's promise is that every task handed to a pool shows up, once, in the
wait and run histograms and as a span, and that the busy and pending gauges
come back to 0; a leak would only show after hours in production. This runs
that for ``--tasks`` offloads in one process and checks it end to end:

* our collector (``collector/config.yaml``, free loopback ports) receives OTLP
  from ``poolscope.configure(run_spans=True, root_spans=True,
  wait_span_threshold=0)``: every task makes an ``executor.run`` and an
  ``executor.wait`` span, so both span counts are exact figures to check
  (with the default 1 ms threshold the number of wait spans depends on timing
  and could not be checked; it also doubles the span load the soak puts on
  the export path). Its trace store is a discarding OTLP sink, so the
  collector's exporter never queues spans it cannot send.
* the offloads are split over ThreadPoolExecutor.submit on a user pool,
  ``loop.run_in_executor(None, ...)``, ``asyncio.to_thread``,
  ``anyio.to_thread.run_sync`` on anyio's default limiter and on a
  ``CapacityLimiter`` of our own (19% each), and a ``ProcessPoolExecutor``
  (5%: a task costs a pickle round trip to another process);
* they run in batches of ``--batch``, all paths at once, so the pools fill and
  tasks queue. After each batch the tracer provider is flushed: a batch makes
  at most ``2 x batch`` spans, less than the span queue holds, so the batch span
  processor cannot drop one (drops are counted by the SDK anyway, and
  reported). Metrics are exported by the periodic reader as in an app, and
  flushed at the end; cumulative counts cannot be lost to a queue.

At the end, per pool: the collector's ``executor.task.wait.duration`` and
``executor.task.run.duration`` counts and its span-metric calls of
``executor.run`` and ``executor.wait`` must equal the tasks sent, and busy and
pending must be 0 in the process (``snapshot_all()``) and at the collector.
The SDK's own counters (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``) must show
no span dropped and none left unended. Only this process's series count (its
``service.instance.id``): forked process-pool workers export under their own,
and what they export is listed, not counted. The process's resident memory is
sampled after every batch; its growth from the sample after ``--warmup`` of
the tasks to the end is reported.

    python benchmarks/soak.py --tasks 1000000 --json soak.json
    python benchmarks/soak.py --tasks 20000      # what tests/test_soak.py runs

The collector comes from ``--collector-bin`` or ``POOLSCOPE_COLLECTOR_BIN``
(``collector/build.sh``). Only 127.0.0.1 is used. Exits 1 when a check fails,
2 on ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from array import array
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from tools import stack as _stack  # noqa: E402  (the stack runner the tests use too)

SERVICE = "poolscope-soak"
POOL_THREADS = "soak.threads"
POOL_LIMITER = "soak.limiter"
POOL_PROCESSES = "soak.processes"
THREADS = 4
LIMITER_TOKENS = 4
PROCESSES = 2
SPANS_PER_TASK = 2  # executor.wait and executor.run, with wait_span_threshold=0
SETTLE_TIMEOUT_S = 120.0
"""Longest wait for the collector to show the final figures (it batches spans for
1 s and flushes span metrics every 1 s: a few seconds, when nothing is lost)."""


@dataclass(frozen=True)
class Offload:
    """One way of handing a task to a pool, and its share of the tasks (percent)."""

    path: str
    pool: str
    share: int


OFFLOADS = (
    Offload("ThreadPoolExecutor.submit", POOL_THREADS, 19),
    Offload("loop.run_in_executor(None)", "asyncio.default", 19),
    Offload("asyncio.to_thread", "asyncio.default", 19),
    Offload("anyio.to_thread.run_sync", "anyio.default", 19),
    Offload("anyio.to_thread.run_sync(limiter=)", POOL_LIMITER, 19),
    Offload("ProcessPoolExecutor.submit", POOL_PROCESSES, 5),
)
assert sum(o.share for o in OFFLOADS) == 100


def work(value: int) -> int:
    """The task: trivial, so that the soak measures the instrumentation, not the work."""
    return value


def split(tasks: int) -> dict[str, int]:
    """Tasks per path: the shares, rounded down, the remainder to the first paths."""
    counts = {o.path: tasks * o.share // 100 for o in OFFLOADS}
    for offload in OFFLOADS[: tasks - sum(counts.values())]:
        counts[offload.path] += 1
    return counts


def per_pool(counts: dict[str, int]) -> dict[str, int]:
    pools: dict[str, int] = {}
    for offload in OFFLOADS:
        pools[offload.pool] = pools.get(offload.pool, 0) + counts[offload.path]
    return pools


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


# --- What the collector shows -------------------------------------------------------


@dataclass
class CollectorView:
    """Figures of our process (its ``instance``) read from the collector's endpoints."""

    waits: dict[str, float] = field(default_factory=dict)
    runs: dict[str, float] = field(default_factory=dict)
    run_spans: dict[str, float] = field(default_factory=dict)
    wait_spans: dict[str, float] = field(default_factory=dict)
    busy: dict[str, float] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)
    sdk: dict[str, float] = field(default_factory=dict)
    """The SDK's own span counters (started, live, processed, dropped)."""
    pipeline: dict[str, float] = field(default_factory=dict)
    """The collector's own counters: spans and points accepted, refused, sent, failed."""
    other_instances: dict[str, dict[str, float]] = field(default_factory=dict)
    """Other processes (instances) that sent executor metrics: per instance, the pools
    they name and the tasks (wait counts) they report for each. Forked process-pool
    workers do, with what they inherited from this process."""


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body.decode()


def _samples(text: str) -> Iterator[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        yield from family.samples


def _add(figures: dict[str, float], key: str, value: float) -> None:
    figures[key] = figures.get(key, 0.0) + value


def read_collector(ports: dict[str, int], instance: str) -> CollectorView:
    from poolscope import semconv
    from poolscope._analysis import _promql as p

    view = CollectorView()
    histogram_counts = {f"{p.WAIT}_count": view.waits, f"{p.RUN}_count": view.runs}
    span_calls = {semconv.SPAN_RUN: view.run_spans, semconv.SPAN_WAIT: view.wait_spans}
    for sample in _samples(_get(f"http://127.0.0.1:{ports['prometheus']}/metrics")):
        labels = sample.labels
        pool = labels.get(p.POOL)
        if labels.get(p.INSTANCE) != instance:
            if pool is not None:
                other = view.other_instances.setdefault(labels.get(p.INSTANCE, "?"), {})
                counted = sample.value if sample.name == f"{p.WAIT}_count" else 0.0
                _add(other, pool, counted)
            continue
        if sample.name in histogram_counts and pool is not None:
            _add(histogram_counts[sample.name], pool, sample.value)
        elif sample.name == p.SPAN_CALLS and labels.get(p.SPAN_NAME) in span_calls:
            _add(span_calls[labels[p.SPAN_NAME]], pool or "", sample.value)
        elif sample.name == p.WORKERS and labels.get(p.WORKER_STATE) == semconv.WORKER_STATE_BUSY:
            _add(view.busy, pool or "", sample.value)
        elif sample.name == p.PENDING:
            _add(view.pending, pool or "", sample.value)
        elif sample.name == "otel_sdk_span_started_total":
            _add(view.sdk, "spans started", sample.value)
        elif sample.name == "otel_sdk_span_live":
            _add(view.sdk, "spans live", sample.value)
        elif sample.name == "otel_sdk_processor_span_processed_total":
            error = labels.get("error_type")
            _add(view.sdk, f"spans dropped ({error})" if error else "spans exported", sample.value)
    telemetry = _get(f"http://127.0.0.1:{ports['telemetry']}/metrics")
    for sample in _samples(telemetry):
        name = sample.name.removeprefix("otelcol_").removesuffix("_total")
        if name.startswith(("receiver_", "exporter_")) and sample.name.endswith("_total"):
            where = sample.labels.get("receiver") or sample.labels.get("exporter", "")
            _add(view.pipeline, f"{name} {where}", sample.value)
    return view


# --- The run ------------------------------------------------------------------------


@dataclass
class PoolResult:
    pool: str
    tasks: int
    waits: float | None
    runs: float | None
    run_spans: float | None
    wait_spans: float | None
    busy_in_process: int | None
    pending_in_process: int | None
    busy_collector: float | None
    pending_collector: float | None

    def failures(self) -> list[str]:
        found = []
        for what in ("waits", "runs", "run_spans", "wait_spans"):
            value = getattr(self, what)
            if value != self.tasks:
                found.append(f"{self.pool}: collector {what} {value} != {self.tasks} tasks")
        for what in (
            "busy_in_process",
            "pending_in_process",
            "busy_collector",
            "pending_collector",
        ):
            value = getattr(self, what)
            if value != 0:
                found.append(f"{self.pool}: {what} is {value}, not 0")
        return found


@dataclass
class Result:
    command: str
    tasks: int
    batch: int
    warmup: float
    python: str
    cpus: int | None
    paths: dict[str, int]
    seconds_offloading: float = 0.0
    seconds_total: float = 0.0
    rss_warmup_mb: float | None = None
    rss_end_mb: float | None = None
    rss_growth_mb: float | None = None
    rss_max_after_warmup_mb: float | None = None
    rss_slope_kb_per_100k_tasks: float | None = None
    collector_rss_end_mb: float | None = None
    pools: list[PoolResult] = field(default_factory=list)
    sdk: dict[str, float] = field(default_factory=dict)
    pipeline: dict[str, float] = field(default_factory=dict)
    other_instances: dict[str, dict[str, float]] = field(default_factory=dict)
    """Not checked (see ``CollectorView``): reported."""
    recorder_dropped: int = 0
    rss_samples: list[tuple[int, float]] = field(default_factory=list)
    """(tasks done, MB), at most about 200 of them."""
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class Samples:
    """(tasks done, RSS kB) after each batch, in arrays allocated up front: the
    soak's own bookkeeping must not show up as growth."""

    def __init__(self, capacity: int) -> None:
        self.done = array("q", [0]) * capacity
        self.kb = array("q", [0]) * capacity
        self.size = 0

    def add(self, done: int, kb: int) -> None:
        self.done[self.size], self.kb[self.size] = done, kb
        self.size += 1

    def points(self) -> list[tuple[int, int]]:
        return list(zip(self.done[: self.size], self.kb[: self.size], strict=True))


class TimedOut(Exception):
    """The run passed ``--timeout``."""


class Soak:
    """One run: the pools, the batches, the samples."""

    def __init__(self, args: argparse.Namespace, ports: dict[str, int], result: Result) -> None:
        self.args = args
        self.ports = ports
        self.result = result
        self.deadline: float = time.monotonic() + args.timeout
        self.counts = split(args.tasks)
        self.rss = Samples(-(-args.tasks // args.batch))

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimedOut(f"timed out after {self.args.timeout:g} s")
        return left

    async def run(self, tracer_provider: Any, meter_provider: Any, instance: str) -> None:
        import anyio
        import anyio.to_thread

        import poolscope
        from poolscope._core._pools import snapshot_all

        loop = asyncio.get_running_loop()
        threads = poolscope.instrument_executor(ThreadPoolExecutor(THREADS), name=POOL_THREADS)
        processes = poolscope.instrument_executor(
            ProcessPoolExecutor(PROCESSES), name=POOL_PROCESSES
        )
        limiter = poolscope.instrument_limiter(
            anyio.CapacityLimiter(LIMITER_TOKENS), name=POOL_LIMITER
        )
        launch: dict[str, Callable[[int], Awaitable[int]]] = {
            OFFLOADS[0].path: lambda i: asyncio.wrap_future(threads.submit(work, i)),
            OFFLOADS[1].path: lambda i: loop.run_in_executor(None, work, i),
            OFFLOADS[2].path: lambda i: asyncio.to_thread(work, i),
            OFFLOADS[3].path: lambda i: anyio.to_thread.run_sync(work, i),
            # poolscope's limiter wrapper is not typed as a CapacityLimiter, though
            # run_sync takes it (and measures through it): hence the ignore.
            OFFLOADS[4].path: lambda i: anyio.to_thread.run_sync(
                work,
                i,
                limiter=limiter,  # type: ignore[arg-type]
            ),
            OFFLOADS[5].path: lambda i: asyncio.wrap_future(processes.submit(work, i)),
        }
        finished = False
        try:
            started = time.monotonic()
            await self._batches(launch, tracer_provider)
            self.result.seconds_offloading = round(time.monotonic() - started, 1)
            tracer_provider.force_flush()
            meter_provider.force_flush()
            snapshots = {s.name: s for s in snapshot_all()}
            view = self._settle(meter_provider, instance)
            self._judge(snapshots, view)
            finished = True
        finally:
            threads.shutdown(wait=finished, cancel_futures=True)
            processes.shutdown(wait=finished, cancel_futures=True)

    async def _batches(
        self, launch: dict[str, Callable[[int], Awaitable[int]]], tracer_provider: Any
    ) -> None:
        tasks, batch = self.args.tasks, self.args.batch
        report_every = max(batch, tasks // 20)
        started = time.monotonic()
        for begin in range(0, tasks, batch):
            end = min(tasks, begin + batch)
            awaitables = []
            expected = 0
            for path, count in self.counts.items():
                # This batch's part of each path: the parts add up to the path's count.
                for value in range(count * begin // tasks, count * end // tasks):
                    awaitables.append(launch[path](value))
                    expected += value
            gathered = asyncio.gather(*awaitables)
            gathered.add_done_callback(_seen)
            done, _ = await asyncio.wait({gathered}, timeout=self.remaining())
            if not done:
                gathered.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gathered
                raise TimedOut(
                    f"timed out after {self.args.timeout:g} s, in the batch of tasks {begin}-{end}"
                )
            results = gathered.result()
            if sum(results) != expected or len(results) != end - begin:
                raise AssertionError(f"batch {begin}-{end}: the tasks returned wrong results")
            tracer_provider.force_flush()
            self.rss.add(end, rss_kb())
            if end // report_every != begin // report_every or end == tasks:
                took = time.monotonic() - started
                print(
                    f"soak: {end:>9,} tasks  {took:7.1f} s  {end / took:7.0f} tasks/s  "
                    f"RSS {self.rss.kb[self.rss.size - 1] / 1024:.1f} MB",
                    flush=True,
                )

    def _settle(self, meter_provider: Any, instance: str) -> CollectorView:
        """Read the collector until it shows every task, or give up and keep the last view."""
        expected = per_pool(self.counts)
        began = time.monotonic()
        deadline = began + min(SETTLE_TIMEOUT_S, max(self.deadline - began, 1))
        while True:
            view = read_collector(self.ports, instance)
            complete = all(
                figures.get(pool) == tasks
                for figures in (view.waits, view.runs, view.run_spans, view.wait_spans)
                for pool, tasks in expected.items()
            )
            overshot = any(
                figures.get(pool, 0) > tasks
                for figures in (view.waits, view.runs, view.run_spans, view.wait_spans)
                for pool, tasks in expected.items()
            )
            if complete or overshot:
                return view
            if time.monotonic() > deadline:
                self.result.failures.append(
                    f"the collector did not show every task {time.monotonic() - began:.0f} s "
                    "after the last one ended"
                )
                return view
            time.sleep(1)
            meter_provider.force_flush()  # cumulative: a repeat cannot add a task

    def _judge(self, snapshots: dict[str, Any], view: CollectorView) -> None:
        from poolscope._core import _recorder

        result = self.result
        for pool, tasks in per_pool(self.counts).items():
            snapshot = snapshots.get(pool)
            result.pools.append(
                PoolResult(
                    pool=pool,
                    tasks=tasks,
                    waits=view.waits.get(pool),
                    runs=view.runs.get(pool),
                    run_spans=view.run_spans.get(pool),
                    wait_spans=view.wait_spans.get(pool),
                    busy_in_process=snapshot.busy if snapshot else None,
                    pending_in_process=snapshot.pending if snapshot else None,
                    busy_collector=view.busy.get(pool),
                    pending_collector=view.pending.get(pool),
                )
            )
            result.failures += result.pools[-1].failures()
        result.sdk, result.pipeline = view.sdk, view.pipeline
        result.other_instances = view.other_instances
        result.recorder_dropped = _recorder.dropped()
        dropped = sum(v for k, v in view.sdk.items() if k.startswith("spans dropped"))
        if dropped:
            result.failures.append(f"the batch span processor dropped {dropped:g} spans")
        if view.sdk.get("spans live", 0) != 0:
            result.failures.append(f"{view.sdk['spans live']:g} spans were never ended")
        self._memory()

    def _memory(self) -> None:
        result, args = self.result, self.args
        samples = self.rss.points()
        if not samples:
            return
        warm = next(i for i, (done, _) in enumerate(samples) if done >= args.warmup * args.tasks)
        after = samples[warm:]
        result.rss_warmup_mb = round(after[0][1] / 1024, 1)
        result.rss_end_mb = round(after[-1][1] / 1024, 1)
        result.rss_growth_mb = round((after[-1][1] - after[0][1]) / 1024, 1)
        result.rss_max_after_warmup_mb = round(max(kb for _, kb in after) / 1024, 1)
        if len(after) > 1:
            result.rss_slope_kb_per_100k_tasks = round(_slope(after) * 100_000, 1)
        step = max(1, len(samples) // 200)
        kept = (
            samples[::step] if (len(samples) - 1) % step == 0 else [*samples[::step], samples[-1]]
        )
        result.rss_samples = [(done, round(kb / 1024, 1)) for done, kb in kept]
        if args.max_rss_growth_mb is not None and result.rss_growth_mb > args.max_rss_growth_mb:
            result.failures.append(
                f"RSS grew {result.rss_growth_mb} MB after warm-up "
                f"(more than --max-rss-growth-mb {args.max_rss_growth_mb})"
            )


def _seen(future: asyncio.Future[Any]) -> None:
    """Mark a batch's outcome as read: when a timeout or Ctrl-C cancelled it, asyncio
    would otherwise log the cancellation as an exception nobody retrieved."""
    if not future.cancelled():
        future.exception()


def _slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of kB against tasks done."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in points)
    variance = sum((x - mean_x) ** 2 for x, _ in points)
    return covariance / variance if variance else 0.0


# --- The stack ----------------------------------------------------------------------

_SERVICES: list[_stack.Service] = []
"""Started processes, for the watchdog's last resort."""


def serve_trace_sink(port: int) -> None:
    """The collector's trace store: accepts every OTLP/gRPC export and keeps nothing.

    Without one listening, the collector's exporter would hold and retry every
    batch of spans it cannot send; with millions of spans that fills its queue
    and its memory, and the soak would measure the collector's back-pressure
    instead of poolscope.
    """
    from concurrent import futures

    import grpc  # type: ignore[import-untyped]

    def export(request: bytes, context: Any) -> bytes:
        return b""  # an empty ExportTraceServiceResponse: all accepted

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(export)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


@contextmanager
def stack(log_dir: Path) -> Iterator[tuple[dict[str, int], _stack.Service]]:
    """The trace sink and our collector on free loopback ports; both stopped on exit."""
    with _stack.services(log_dir) as start:
        sink_port = _stack.free_port()
        sink = start("trace_sink", [sys.executable, __file__, "--trace-sink", str(sink_port)])
        _SERVICES.append(sink)
        sink.wait_ready(lambda: _stack.tcp_open(sink_port))

        def keep(name: str, argv: list[str], env: dict[str, str] | None = None) -> Any:
            _SERVICES.append(start(name, argv, env))
            return _SERVICES[-1]

        ports = _stack.start_collector(keep, trace_store_port=sink_port)
        yield ports, _SERVICES[-1]


def configure(ports: dict[str, int]) -> tuple[Any, Any, str]:
    """poolscope's full setup exporting to the collector; returns the providers and our instance."""
    # The SDK then counts spans started, live, exported and dropped (queue full).
    os.environ["OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"] = "true"
    os.environ["OTEL_TRACES_EXPORTER"] = os.environ["OTEL_METRICS_EXPORTER"] = "otlp"
    from opentelemetry import metrics, trace

    import poolscope

    poolscope.configure(
        service_name=SERVICE,
        otlp_endpoint=f"http://127.0.0.1:{ports['grpc']}",
        otlp_protocol="grpc",
        run_spans=True,
        root_spans=True,
        wait_span_threshold=0,
    )
    tracer_provider = trace.get_tracer_provider()
    instance = str(tracer_provider.resource.attributes["service.instance.id"])  # type: ignore[attr-defined]
    return tracer_provider, metrics.get_meter_provider(), instance


def _span_queue_size() -> int:
    raw = os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE", "").strip()
    return int(raw) if raw.isdigit() else 2048


def soak(args: argparse.Namespace, command: str) -> Result:
    counts = split(args.tasks)
    result = Result(
        command,
        args.tasks,
        args.batch,
        args.warmup,
        platform.python_version(),
        os.cpu_count(),
        counts,
    )
    began = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="poolscope-soak-") as tmp,
        stack(Path(tmp)) as (
            ports,
            collector,
        ),
    ):
        tracer_provider, meter_provider, instance = configure(ports)
        run = Soak(args, ports, result)
        try:
            asyncio.run(run.run(tracer_provider, meter_provider, instance))
        except TimedOut as error:
            result.failures.append(str(error))
        finally:
            # While the collector is still there to take the last export.
            meter_provider.shutdown()
            tracer_provider.shutdown()
        if collector.alive():
            result.collector_rss_end_mb = round(rss_kb(collector.process.pid) / 1024, 1)
        if not result.ok and collector.output().strip():
            print(f"collector log (tail):\n{collector.output()}", file=sys.stderr)
    result.seconds_total = round(time.monotonic() - began, 1)
    return result


def report(result: Result) -> str:
    lines = [
        f"{result.command}",
        f"{result.tasks:,} tasks in batches of {result.batch}; Python {result.python}, "
        f"{result.cpus} CPUs",
        "tasks per path: " + ", ".join(f"{p} {n:,}" for p, n in result.paths.items()),
    ]
    if not result.pools:  # the run did not get to the end
        lines.append(f"after {result.seconds_total} s, FAILED:\n  " + "\n  ".join(result.failures))
        return "\n".join(lines)
    lines += [
        f"{result.seconds_offloading} s offloading "
        f"({result.tasks / result.seconds_offloading:,.0f} tasks/s), {result.seconds_total} s "
        "in all",
        "",
        f"{'pool':<16} {'tasks':>9} {'wait n':>9} {'run n':>9} {'run spans':>9} "
        f"{'wait spans':>10} {'busy/pending here':>17} {'at collector':>12}",
    ]
    for pool in result.pools:
        lines.append(
            f"{pool.pool:<16} {pool.tasks:>9,} {_n(pool.waits):>9} {_n(pool.runs):>9} "
            f"{_n(pool.run_spans):>9} {_n(pool.wait_spans):>10} "
            f"{_n(pool.busy_in_process):>8}/{_n(pool.pending_in_process):<8} "
            f"{_n(pool.busy_collector):>6}/{_n(pool.pending_collector):<5}"
        )
    lines += [
        "",
        f"RSS after {result.warmup:.0%} of the tasks: {result.rss_warmup_mb} MB, at the end "
        f"{result.rss_end_mb} MB: growth {result.rss_growth_mb} MB (max after warm-up "
        f"{result.rss_max_after_warmup_mb} MB, trend {result.rss_slope_kb_per_100k_tasks} kB "
        f"per 100k tasks); collector RSS at the end {result.collector_rss_end_mb} MB",
        "SDK: " + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(result.sdk.items())),
        f"poolscope histogram records dropped: {result.recorder_dropped}",
        "collector: " + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(result.pipeline.items())),
    ]
    for other, pools in result.other_instances.items():
        lines.append(
            f"NOTE: another process (instance {other}) exported executor metrics too, for "
            + ", ".join(f"{pool} ({tasks:,.0f} tasks)" for pool, tasks in sorted(pools.items()))
        )
    lines.append("OK" if result.ok else "FAILED:\n  " + "\n  ".join(result.failures))
    return "\n".join(lines)


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500, help="tasks in flight at once")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for the run")
    parser.add_argument("--warmup", type=float, default=0.1, help="share of tasks before RSS")
    parser.add_argument("--max-rss-growth-mb", type=float, help="fail above this growth")
    parser.add_argument("--collector-bin", help="default: $POOLSCOPE_COLLECTOR_BIN")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--trace-sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trace_sink:
        serve_trace_sink(args.trace_sink)
        return 0
    if min(split(args.tasks).values()) < 1 or args.batch < 1 or not 0 <= args.warmup < 1:
        parser.error("every path needs a task (--tasks 20 at least), --batch at least 1")
    if args.batch * SPANS_PER_TASK > _span_queue_size():
        parser.error(
            f"a batch of {args.batch} makes {args.batch * SPANS_PER_TASK} spans, more than the "
            f"span queue holds ({_span_queue_size()}, OTEL_BSP_MAX_QUEUE_SIZE): it would drop"
        )
    if args.collector_bin:
        os.environ["POOLSCOPE_COLLECTOR_BIN"] = args.collector_bin
    binary = os.environ.get("POOLSCOPE_COLLECTOR_BIN", "")
    if not os.access(binary, os.X_OK):
        parser.error("no collector: pass --collector-bin or set POOLSCOPE_COLLECTOR_BIN")
    # SIGTERM ends the run as Ctrl-C does (and SIGINT does, even where a shell that
    # started the run in the background ignores it): the collector is stopped on the way out.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    watchdog = threading.Timer(args.timeout + SETTLE_TIMEOUT_S + 60, _give_up)
    watchdog.daemon = True
    watchdog.start()
    command = "python benchmarks/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        result = soak(args, command)
    except KeyboardInterrupt:
        print("soak: interrupted; the collector was stopped", file=sys.stderr)
        return 130
    watchdog.cancel()
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(asdict(result) | {"ok": result.ok}, indent=2))
    if any(f.startswith("timed out") for f in result.failures):
        return 2
    return 0 if result.ok else 1


def _give_up() -> None:
    """Last resort when a call hangs past every timeout: interrupt the main thread,
    and if even that does not end the run, stop the stack and leave."""
    print("soak: hung past --timeout; interrupting", file=sys.stderr, flush=True)
    signal.raise_signal(signal.SIGINT)
    time.sleep(30)
    for service in _SERVICES:
        if service.alive():
            os.killpg(service.process.pid, signal.SIGKILL)
    print("soak: still hung; stack killed, exiting", file=sys.stderr, flush=True)
    os._exit(3)


if __name__ == "__main__":
    sys.exit(main())
