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

SimServerFactory = Callable[[str, str, dict[str, Any]], Awaitable[Any]]

PROFILES = ("opcua.sealer",)


def server_factory(world: Any, *, host: str = "127.0.0.1") -> SimServerFactory:
    """A factory of simulated servers bound to ``world`` (ephemeral ports on ``host``)."""

    async def start(profile: str, name: str, options: dict[str, Any]) -> Any:
        if profile == "opcua.sealer":
            from .opcua_sealer import start_for_world

            return await start_for_world(world, name, options, host=host, port=0)
        raise ValueError(f"no simulated server profile {profile!r} (known: {', '.join(PROFILES)})")

    return start
