"""JSON Schemas of every record fraudstream reads or writes.

Each schema lives beside this module as ``<name>.schema.json`` and ships as package
data, so the worker, the replay tool and the tests validate against the same files.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["load", "names"]

_SUFFIX = ".schema.json"


def names() -> list[str]:
    """Return the names of all bundled schemas, sorted."""
    files = resources.files(__name__).iterdir()
    return sorted(f.name[: -len(_SUFFIX)] for f in files if f.name.endswith(_SUFFIX))


@cache
def load(name: str) -> dict[str, Any]:
    """Return the parsed schema ``<name>.schema.json``.

    Raises:
        KeyError: no schema of that name is bundled; the message lists the known ones.
    """
    resource = resources.files(__name__) / f"{name}{_SUFFIX}"
    if not resource.is_file():
        raise KeyError(f"no schema named {name!r}; known schemas: {', '.join(names())}")
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema
