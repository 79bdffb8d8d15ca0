"""The cell's HTTP API and web HMI (FastAPI), running in the cell's own asyncio loop.

Reads (``GET``) are open when ``api.open_reads`` is true, else they need the
token (header, or ``?token=`` for ``<img>``/WebSocket URLs that can't carry
headers).  Commands and acknowledgements always need
``Authorization: Bearer <token>`` (a header only: a cross-site form can't set
it); a failed attempt gets 401 and is logged and audited.  ``stop`` is never
refused to a valid token: it is idempotent (200 even when the cell is already
stopping or stopped).  Bodies over 1 MiB get 413 before they are parsed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path as PathParam, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from starlette.websockets import WebSocketDisconnect

from ..packml import STOPPABLE, TransitionError
from .events import CameraFeed, EventHub, Trend

if TYPE_CHECKING:
    from ..runtime import Cell

log = logging.getLogger("axcell.api")
STATIC = Path(__file__).parent / "static"
MAX_BODY = 1 << 20
PART_ID = r"^[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,127}$"
CAMERA = r"^[A-Za-z0-9_-]{1,64}$"

CommandName = Literal["reset", "start", "stop", "hold", "unhold", "suspend", "unsuspend", "abort", "clear"]


class CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: CommandName


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str | None = None


# -- body size limit (pure ASGI: 413 before the body is parsed) -------------------------------------
class BodyLimit:
    def __init__(self, app: Any, max_bytes: int = MAX_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                # RFC 9110: 1*DIGIT.  uvicorn's own parser already answers a malformed one with a plain-text 400
                # before the app runs; this covers servers and transports that pass it through.
                if not (v.isdigit() and v.isascii()):
                    await self._reject(send, 400, b'{"detail":"Content-Length header is not a number of bytes"}')
                    return
                if int(v) > self.max_bytes:
                    await self._reject(send)
                    return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        # buffer the body (at most the limit) before the app parses any of it
        chunks: list[bytes] = []
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            seen += len(body)
            if seen > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(send: Any, status: int = 413,
                      body: bytes = b'{"detail":"request body too large (limit 1 MiB)"}') -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                ]})
        await send({"type": "http.response.body", "body": body})


def _json_safe(v: Any, depth: int = 0) -> Any:
    """``v`` with NaN/infinities and non-JSON objects turned into strings (bounded depth)."""
    if depth > 20:
        return "..."
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if v is None or isinstance(v, (str, int, bool)):
        return v
    if isinstance(v, dict):
        return {str(k): _json_safe(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x, depth + 1) for x in v]
    return str(v)


# -- the app -------------------------------------------------------------------------------------------
def create_app(cell: "Cell", *, token: str | None, open_reads: bool = True) -> FastAPI:
    """The API for ``cell`` (its ``operations`` attribute, set by the session, gives store and OEE)."""
    ops = getattr(cell, "operations", None)
    store = getattr(ops, "store", None)
    hub = EventHub(cell)
    feed = CameraFeed(cell, hub)
    trend = Trend(cell)
    app = FastAPI(title=f"axcell – {cell.name}", version="1", docs_url="/api/docs", redoc_url=None,
                  openapi_url="/openapi.json")
    app.state.cell, app.state.hub, app.state.feed, app.state.trend = cell, hub, feed, trend
    app.state.closing = asyncio.Event()
    app.state.auth_failures = 0

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with the problems; values echoed back are made JSON-safe (a body ``{"command": NaN}`` is
        valid to Python's parser but cannot be rendered as JSON: FastAPI's own handler answered 500)."""
        return JSONResponse(status_code=422, content={"detail": _json_safe(exc.errors())})

    def audit(action: str, ok: bool, actor: str, detail: str) -> None:
        if ops is not None:
            ops.audit(action, ok, actor=actor, detail=detail)

    def who(request: Request | WebSocket) -> str:
        c = request.client
        return f"{c.host}:{c.port}" if c else "?"

    def token_ok(presented: str | None) -> bool:
        return bool(token) and presented is not None and hmac.compare_digest(presented.encode(), token.encode())

    def bearer(request: Request) -> str | None:
        scheme, _, cred = request.headers.get("authorization", "").partition(" ")
        return cred.strip() if scheme.lower() == "bearer" and cred.strip() else None

    def fail(request: Request, why: str) -> HTTPException:
        app.state.auth_failures += 1
        log.warning("API auth failed: %s %s from %s: %s", request.method, request.url.path, who(request), why)
        audit("auth_failed", False, who(request), f"{request.method} {request.url.path}: {why}")
        return HTTPException(401, detail=f"unauthorized: {why}", headers={"WWW-Authenticate": "Bearer"})

    def require_token(request: Request) -> str:
        presented = bearer(request)
        if presented is None:
            raise fail(request, "missing bearer token")
        if not token_ok(presented):
            raise fail(request, "invalid token")
        return who(request)

    def require_read(request: Request) -> None:
        if open_reads:
            return
        presented = bearer(request) or request.query_params.get("token")
        if presented is None:
            raise fail(request, "missing bearer token (reads are closed)")
        if not token_ok(presented):
            raise fail(request, "invalid token")

    def need_store() -> Any:
        if store is None:
            raise HTTPException(503, detail="this run keeps no traceability store")
        return store

    # -- reads --------------------------------------------------------------------------------------
    def cell_status() -> dict[str, Any]:
        snap = cell.snapshot()
        if ops is not None:
            snap["oee"] = ops.oee()
            snap["run_id"] = store.run_id if store is not None else None
        snap["process"] = cell.runner.snapshot() if cell.runner is not None else None
        snap["cameras"] = feed.cameras()
        snap["alarms_unacked"] = sum(1 for a in cell.alarms.history if a.active and a.acked_at is None)
        snap["auth_required"] = {"commands": True, "reads": not open_reads}
        return snap

    @app.get("/api/cell", dependencies=[Depends(require_read)], tags=["cell"])
    async def get_cell() -> dict[str, Any]:
        """Name, PackML state, mode, counts, OEE, running skills, legal commands, process tree."""
        snap = cell_status()
        if store is not None:
            snap["store_counts"] = await asyncio.to_thread(store.counts)
        return snap

    @app.get("/api/oee", dependencies=[Depends(require_read)], tags=["cell"])
    async def get_oee() -> dict[str, Any]:
        """OEE (A × P × Q), losses by state and stop reason, AccCount totals, and the trend."""
        o = await asyncio.to_thread(ops.oee) if ops is not None else cell.snapshot()["oee"]
        return {**o, "trend": list(trend.samples)[-300:]}

    @app.get("/api/trend", dependencies=[Depends(require_read)], tags=["cell"])
    async def get_trend() -> list[dict[str, Any]]:
        return list(trend.samples)

    @app.get("/api/parts", dependencies=[Depends(require_read)], tags=["parts"])
    async def get_parts(limit: int = Query(50, ge=1, le=1000),
                        outcome: Literal["packed", "rejected", "missed"] | None = None) -> list[dict[str, Any]]:
        """Committed traceability records of this run, newest first."""
        st = need_store()
        rows = await asyncio.to_thread(st.parts, limit=limit, outcome=outcome)
        for r in rows:
            r["image_url"] = f"/api/parts/{r['part_id']}/image" if r.get("image_path") else None
        return rows

    @app.get("/api/parts/{part_id}", dependencies=[Depends(require_read)], tags=["parts"])
    async def get_part(part_id: str = PathParam(pattern=PART_ID)) -> dict[str, Any]:
        st = need_store()
        rec = await asyncio.to_thread(st.part, part_id)
        if rec is None:
            raise HTTPException(404, detail=f"no part {part_id}")
        return rec

    @app.get("/api/parts/{part_id}/image", dependencies=[Depends(require_read)], tags=["parts"],
             response_class=FileResponse)
    async def get_part_image(part_id: str = PathParam(pattern=PART_ID)) -> Response:
        """The stored inspection image (PNG); its SHA-256 is in the record."""
        st = need_store()
        path = await asyncio.to_thread(st.image_file, part_id)
        if path is None:
            raise HTTPException(404, detail=f"no stored image for part {part_id}")
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/alarms", dependencies=[Depends(require_read)], tags=["alarms"])
    async def get_alarms(active: bool = False, limit: int = Query(200, ge=1, le=10000)) -> list[dict[str, Any]]:
        """Alarm history, newest first (``active=true``: only active ones)."""
        items = [a for a in reversed(cell.alarms.history) if a.active or not active]
        return [a.to_record() for a in items[:limit]]

    # -- commands -----------------------------------------------------------------------------------
    @app.post("/api/cell/command", tags=["cell"])
    async def post_command(body: CommandBody, actor: str = Depends(require_token)) -> dict[str, Any]:
        """Send a PackML command through the cell's one state machine; 409 with the reason when illegal."""
        cmd = body.command
        before = cell.fsm.state
        if cmd == "stop" and before not in STOPPABLE:
            # stop is always accepted from a valid token: the cell is already stopping or not running
            audit("command:stop", True, actor, f"already {before.label}")
            return {"accepted": True, "command": cmd, "state": before.label, "note": f"already {before.label}",
                    "legal_commands": cell.legal_commands()}
        try:
            state = cell.command(cmd, source=f"api:{actor}")
        except TransitionError as e:
            audit(f"command:{cmd}", False, actor, str(e))
            return JSONResponse(status_code=409, content={"detail": str(e), "state": before.label,
                                                          "legal_commands": cell.legal_commands()})
        audit(f"command:{cmd}", True, actor, f"{before.label} -> {state.label}")
        return {"accepted": True, "command": cmd, "state": state.label, "legal_commands": cell.legal_commands()}

    @app.post("/api/alarms/{alarm_id}/ack", tags=["alarms"])
    async def ack_alarm(alarm_id: int = PathParam(ge=1, le=10**9), body: AckBody | None = None,
                        actor: str = Depends(require_token)) -> dict[str, Any]:
        try:
            a = cell.alarms.ack(alarm_id, by=(body.by if body and body.by else f"api:{actor}")[:64])
        except KeyError:
            raise HTTPException(404, detail=f"no alarm {alarm_id}") from None
        audit("alarm_ack", True, actor, f"alarm {alarm_id}")
        return a.to_record()

    # -- streams ------------------------------------------------------------------------------------
    @app.websocket("/api/events")
    async def events(ws: WebSocket) -> None:
        """State changes, part events, alarms and skill results as JSON messages."""
        if not open_reads:
            presented = ws.query_params.get("token")
            scheme, _, cred = ws.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer":
                presented = cred.strip()
            if not token_ok(presented):
                app.state.auth_failures += 1
                log.warning("API auth failed: websocket /api/events from %s", who(ws))
                audit("auth_failed", False, who(ws), "websocket /api/events")
                await ws.close(code=1008)
                return
        await ws.accept()
        q = hub.subscribe()
        try:
            await ws.send_json({"type": "hello", "cell": cell.name, "state": cell.fsm.state.label,
                                "legal_commands": cell.legal_commands(), "t": cell.clock.now()})
            recv = asyncio.ensure_future(ws.receive())
            while True:
                get = asyncio.ensure_future(q.get())
                done, _ = await asyncio.wait({get, recv}, return_when=asyncio.FIRST_COMPLETED)
                if recv in done:
                    get.cancel()
                    msg = recv.result()
                    if msg.get("type") == "websocket.disconnect":
                        break
                    recv = asyncio.ensure_future(ws.receive())
                    continue
                ev = get.result()
                if ev is None:
                    recv.cancel()
                    await ws.close(code=1001)
                    break
                await ws.send_json(ev)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            hub.unsubscribe(q)

    @app.get("/api/camera/{name}.jpg", dependencies=[Depends(require_read)], tags=["camera"])
    async def camera_jpeg(name: str = PathParam(pattern=CAMERA)) -> Response:
        if name not in feed.cameras():
            raise HTTPException(404, detail=f"no camera {name}")
        _, data = await feed.jpeg(name)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/api/camera/{name}.mjpg", dependencies=[Depends(require_read)], tags=["camera"])
    async def camera_mjpeg(name: str = PathParam(pattern=CAMERA), fps: float = Query(10.0, gt=0, le=30)) -> Response:
        """Live frames of the camera with the inspection overlay (multipart MJPEG)."""
        if name not in feed.cameras():
            raise HTTPException(404, detail=f"no camera {name}")

        async def gen():  # type: ignore[no-untyped-def]
            last_key, last_sent = None, 0.0
            while not app.state.closing.is_set():
                key, data = await feed.jpeg(name)
                now = time.monotonic()
                if key != last_key or now - last_sent > 2.0:
                    last_key, last_sent = key, now
                    yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(data)).encode()
                           + b"\r\n\r\n" + data + b"\r\n")
                try:
                    await asyncio.wait_for(app.state.closing.wait(), timeout=1.0 / fps)
                except asyncio.TimeoutError:
                    pass

        return StreamingResponse(gen(), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={"Cache-Control": "no-store"})

    # -- the HMI ------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        resp = await call_next(request)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.url.path == "/" or request.url.path.startswith("/static"):
            resp.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                                    "connect-src 'self' ws: wss:; frame-ancestors 'none'")
        return resp

    return app


def wrap(app: FastAPI) -> Any:
    """The ASGI app with the body limit in front of everything."""
    return BodyLimit(app)
