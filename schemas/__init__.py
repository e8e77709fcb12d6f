"""The JSON Schemas the service checks its documents and requests with, shipped as package data.

The one place schema files are read: from a checkout and from an installed wheel alike.
"""
from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

SUFFIX = ".schema.json"


def names() -> list[str]:
    """The file name of every schema, sorted (e.g. `ruleset.schema.json`)."""
    return sorted(entry.name for entry in files(__name__).iterdir() if entry.name.endswith(SUFFIX))


def load(name: str) -> dict[str, Any]:
    """The schema in the file `name` (e.g. `ruleset.schema.json`), parsed afresh: callers may keep or change it."""
    schema: dict[str, Any] = json.loads(files(__name__).joinpath(name).read_text(encoding="utf-8"))
    return schema
