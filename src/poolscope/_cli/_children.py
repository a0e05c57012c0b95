"""Child processes the tooling starts (the demo's apps; the tests' and benchmarks'
stack): each in a process group of its own, logging to a file, stopped whole.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["Child", "ChildFailed", "listening"]

_TAIL_CHARS = 4000


class ChildFailed(RuntimeError):
    """A child process exited at start-up, or did not become ready in time."""


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class Child:
    """``argv`` running with ``env`` (the whole environment), its output in ``log``."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        log: Path,
        *,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log = log
        self._file = log.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 (our own programs, an argv list)
            argv,
            env=dict(env),
            stdout=self._file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,  # its own process group: stopped as a whole
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        """The end of what it printed."""
        return self.log.read_text(errors="replace")[-_TAIL_CHARS:]

    def wait_listening(self, port: int, timeout: float = 60.0) -> None:
        """Until it accepts connections on loopback ``port``; :class:`ChildFailed` if it
        exits first or takes longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ChildFailed(f"{self.name} exited at start-up:\n{self.output()}")
            if listening(port):
                return
            time.sleep(0.1)
        raise ChildFailed(f"{self.name} did not listen on 127.0.0.1:{port} within {timeout:g} s")

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after 10 s; then close its log."""
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass
        self._file.close()
