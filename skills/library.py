"""The skill library: every built-in skill, registered by name, and lookup by name."""

from __future__ import annotations

from . import calibrate, handling, inspect, machine, motion, sensing  # noqa: F401  (registers them)
from .base import _REGISTRY, Skill


def registry() -> dict[str, type[Skill]]:
    """Skill name → class: the built-in skills plus any defined since (plugins, tests)."""
    return dict(_REGISTRY)


def get(name: str) -> type[Skill]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown skill {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None
