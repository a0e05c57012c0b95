"""Fork with poolscope set up in the parent; report what each side sees, as JSON.

    python tests/apps/fork_probe.py

The parent sets up with configure() (metrics read through its Prometheus
reader, nothing exported), uses the loop's default executor, and holds a task
running in a named pool while it forks. The child reports its pools and the
task counts its metrics hold, before and after using its own event loop, and
the process identity configure() gives each side.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import poolscope
from poolscope._analysis import _promql
from poolscope._core import _pools, _recorder


def pools() -> dict[str, dict[str, float]]:
    return {
        p.name: {"busy": p.busy, "pending": p.pending, "limit": p.limit}
        for p in _pools.snapshot_all()
    }


def waits() -> dict[str, float]:
    """Tasks counted in this process's wait histogram, per pool, as a scrape would see."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    _recorder.drain()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(generate_latest().decode()):
        for sample in family.samples:
            if sample.name == f"{_promql.WAIT}_count":
                pool = sample.labels[_promql.POOL]
                counts[pool] = counts.get(pool, 0) + sample.value
    return counts


def identity() -> dict[str, Any]:
    from opentelemetry import metrics, trace

    tracer_resource = trace.get_tracer_provider().resource.attributes  # type: ignore[attr-defined]
    meter_resource = metrics.get_meter_provider()._sdk_config.resource.attributes  # type: ignore[attr-defined]
    return {
        "tracer": [tracer_resource.get("service.instance.id"), tracer_resource.get("process.pid")],
        "meter": [meter_resource.get("service.instance.id"), meter_resource.get("process.pid")],
        "pid": os.getpid(),
    }


def main() -> None:
    os.environ.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
    poolscope.configure(service_name="fork-probe", prometheus_port=0)
    parent_loop = asyncio.new_event_loop()  # left open: its default executor stays
    parent_loop.run_until_complete(asyncio.to_thread(time.sleep, 0.01))
    pdf = poolscope.instrument_executor(ThreadPoolExecutor(2), name="pdf")
    release = threading.Event()
    pdf.submit(release.wait, 10)  # busy in the parent while it forks
    while pools().get("pdf", {}).get("busy") != 1:
        time.sleep(0.01)
    before_fork = waits()  # in the SDK's storage now, as after any collection
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        report: dict[str, Any] = {
            "at_fork": pools(),
            "identity": identity(),
            "waits_at_fork": waits(),
        }

        async def own_loop() -> dict[str, dict[str, float]]:
            await asyncio.to_thread(time.sleep, 0.01)
            return pools()  # while this loop and its default executor live

        report["in_own_loop"] = asyncio.run(own_loop())
        report["waits_after_own_loop"] = waits()
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
    release.set()
    pdf.shutdown()
    parent = {"pools": pools(), "identity": identity(), "waits_before_fork": before_fork}
    parent_loop.close()
    json.dump({"parent": parent, "child": child}, sys.stdout)


if __name__ == "__main__":
    main()
