"""Pages variantctl writes or serves, and what they ship with them (no network at run time)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def asset(folder: str, name: str) -> str:
    """A file shipped in the package: `vendor/` (uPlot) or `static/` (ours)."""
    return resources.files(__name__).joinpath(folder, name).read_text(encoding="utf-8")
