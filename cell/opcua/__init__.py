"""The cell as an OPC UA PackML unit (OPC 30050), for the line PLC or MES.

``serve_northbound(cell, spec, port)`` starts the server; importing this
package does not import asyncua (the server module is loaded on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import NorthboundServer


async def serve_northbound(cell: Any, spec: Any, port: int | None = None, **kw: Any) -> "NorthboundServer":
    """Serve ``cell`` at ``opc.tcp://<spec.host>:<port>/axcell/``; ``await handle.stop()`` to end."""
    from .server import serve_northbound as _serve

    return await _serve(cell, spec, port, **kw)


__all__ = ["serve_northbound"]
