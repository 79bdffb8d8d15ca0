"""Finding device implementations by ``kind``.

A kind is ``<provider>.<name>``.  Providers are modules registered in the
``axcell.devices`` entry-point group (``sim = "sim.devices"``,
``ros2 = "drivers.ros2"`` …); importing a provider registers its kinds.  A
third-party package adds a driver by declaring its own entry point, with no
change to axcell.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from importlib.metadata import entry_points

from drivers.base import Device, device_class, registered_kinds

GROUP = "axcell.devices"

#: The providers shipped in this tree (also declared as entry points in pyproject.toml).  They are found
#: even when the installed package metadata predates one of them (an editable install not re-run).
BUILTIN_PROVIDERS = {"sim": "sim.devices", "opcua": "drivers.opcua_machine", "ros2": "drivers.ros2",
                     "opencv": "drivers.opencv_camera"}


@lru_cache(maxsize=1)
def providers() -> dict[str, str]:
    """Provider prefix → module name (entry points override the built-in table)."""
    return {**BUILTIN_PROVIDERS, **{ep.name: ep.value for ep in entry_points(group=GROUP)}}


class KindError(LookupError):
    """Unknown kind, or its provider failed to import."""


def _unknown(kind: str) -> KindError:
    import difflib

    known = known_kinds()
    close = difflib.get_close_matches(kind, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return KindError(f"unknown device kind {kind!r} ({hint}known: {', '.join(known)})")


def load_kind(kind: str) -> type[Device]:
    cls = device_class(kind)
    if cls is not None:
        return cls
    prefix = kind.split(".", 1)[0]
    module = providers().get(prefix)
    if module is None:
        raise _unknown(kind)
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise KindError(f"device kind {kind!r} needs provider {module!r}, which failed to import: {e}") from None
    cls = device_class(kind)
    if cls is None:
        raise _unknown(kind)
    return cls


def known_kinds() -> list[str]:
    """Every kind whose provider imports here (providers that fail to import are skipped)."""
    for module in providers().values():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
    return sorted(registered_kinds())
