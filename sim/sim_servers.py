"""Simulated machine *servers* for drivers that talk a real protocol (the sim profile).

The composition root puts ``server_factory(world)`` in ``ctx.resources["sim_servers"]``.
A driver configured with ``simulate: true`` calls it from its ``connect()``::

    server = await resources["sim_servers"]("opcua.sealer", device_name, options)
    server.endpoint   # where to connect
    await server.close()

so drivers never import :mod:`sim`, and the server's time, randomness and
effects (sealing and indexing the case) are the simulated world's.  The
protocol stacks are imported only when a server is asked for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field

from .devices import SimMachine

SimServerFactory = Callable[[str, str, dict[str, Any]], Awaitable[Any]]

PROFILES = ("opcua.sealer",)


class SealerParams(SimMachine.Config):
    """The sealer twin's behaviour: the in-process twin's options, plus PackML acting and telemetry timing."""

    acting_time_s: float = Field(0.0, ge=0, le=60, description="duration of each acting state but Execute")
    telemetry_period_s: float = Field(0.0, ge=0, le=60, description="resample live telemetry (0: on events only)")


def options_model(profile: str) -> type[BaseModel]:
    """The options model of a simulated server profile (validated by ``axcell check``, before any server starts)."""
    if profile == "opcua.sealer":
        return SealerParams
    raise ValueError(f"no simulated server profile {profile!r} (known: {', '.join(PROFILES)})")


def server_factory(world: Any, *, host: str = "127.0.0.1") -> SimServerFactory:
    """A factory of simulated servers bound to ``world`` (ephemeral ports on ``host``)."""

    async def start(profile: str, name: str, options: dict[str, Any]) -> Any:
        if profile == "opcua.sealer":
            from .opcua_sealer import start_for_world

            return await start_for_world(world, name, options, host=host, port=0)
        raise ValueError(f"no simulated server profile {profile!r} (known: {', '.join(PROFILES)})")

    return start
