"""What the demo is: its two apps, their scenarios, and its settings.

The figures of a run are a probe's (``_probe._model``); ``_run`` starts the
apps and probes them, ``_report`` adds the demo's comparison to the probe's
report.
"""

from __future__ import annotations

import importlib.util
import socket
from dataclasses import dataclass
from typing import Final

from ..._errors import ConfigurationError
from .._probe._model import ProbeSettings, Scenario

__all__ = [
    "APPS",
    "FIXED",
    "NAIVE",
    "SCENARIOS",
    "DemoSettings",
    "port_free",
]

NAIVE: Final = "naive"
FIXED: Final = "fixed"
APPS: Final = {NAIVE: "naive_app.py", FIXED: "fixed_app.py"}
_NEEDS: Final = ("fastapi", "uvicorn", "openai", "httpx", "prometheus_client")

SCENARIOS: Final = (
    Scenario(
        "async routes",
        "async def routes that hand a sync SDK call or a sync HTTP fetch to the loop's "
        "default executor",
        ("/chat", "/search"),
    ),
    Scenario(
        "sync routes",
        "def routes, and a sync streaming route, that Starlette runs in anyio's worker threads",
        ("/summary", "/stream"),
    ),
)


@dataclass(frozen=True)
class DemoSettings(ProbeSettings):
    otlp: str | None = None
    llm_port: int = 0
    naive_port: int = 0
    fixed_port: int = 0
    first_token_ms: float = 1000.0
    per_token_ms: float = 25.0
    tokens: int = 16

    def check(self) -> None:
        super().check()
        ports = [p for p in (self.llm_port, self.naive_port, self.fixed_port) if p]
        if len(ports) != len(set(ports)):
            raise ConfigurationError(
                "--llm-port, --naive-port and --fixed-port must be different ports"
            )
        for flag, port in (
            ("--llm-port", self.llm_port),
            ("--naive-port", self.naive_port),
            ("--fixed-port", self.fixed_port),
        ):
            if port and not port_free(port):
                raise ConfigurationError(
                    f"{flag} {port}: the port is in use on 127.0.0.1; choose another, or "
                    "leave the flag out to use a free one"
                )
        if self.otlp is not None:
            from ..._sdk._configure import check_url

            check_url("--otlp", self.otlp)
        missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigurationError(
                f"poolscope demo needs {', '.join(missing)}: pip install 'poolscope[demo]'"
            )


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
