"""What the two example apps share: where the fake LLM is, and how to serve them."""

from __future__ import annotations

import argparse
import os
from typing import Any

LLM_URL_VARIABLE = "POOLSCOPE_EXAMPLE_LLM_URL"
DEFAULT_LLM_URL = "http://127.0.0.1:8001"
KEEP_ALIVE_S = 75


def llm_url() -> str:
    """Base URL of the OpenAI-compatible server (``examples/fake_llm.py``)."""
    return os.environ.get(LLM_URL_VARIABLE, DEFAULT_LLM_URL).rstrip("/")


def search_payload(query: str) -> dict[str, Any]:
    """The embeddings request a "document search" sends."""
    return {"model": "fake-embedding", "input": query}


def run(app: Any, description: str) -> None:
    """Serve ``app`` with uvicorn on loopback: ``--host``, ``--port``."""
    parser = argparse.ArgumentParser(description=f"Serve {description} with uvicorn.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        # A load test keeps its connections between steps: uvicorn's 5 s default
        # closes them while idle, and a request racing that close fails.
        timeout_keep_alive=KEEP_ALIVE_S,
    )
