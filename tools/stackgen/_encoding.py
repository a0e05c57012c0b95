"""Turning the SDK's models into plain data, and plain data into stable files."""

from __future__ import annotations

import json
from typing import Any

import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder


def plain(model: Any) -> Any:
    """A foundation-SDK model (or builder output) as JSON-compatible data."""
    return json.loads(json.dumps(model, cls=JSONEncoder))


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so PromQL stays readable in the file."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def to_yaml(data: Any, header: str) -> str:
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return header + body
