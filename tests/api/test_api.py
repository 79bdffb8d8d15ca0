"""The HTTP/WebSocket API against a real interactive run (uvicorn on 127.0.0.1, ephemeral port)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from cell.config import load_cell
from cell.session import RunOptions, run_session

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "api-test-token-abcdef"
H = {"Authorization": f"Bearer {TOKEN}"}
pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


class Live:
    def __init__(self, ops: Any, task: asyncio.Task) -> None:
        self.ops = ops
        self.cell = ops.cell
        self.url = ops.api.url
        self.task = task
        self.client = httpx.AsyncClient(base_url=self.url, timeout=10)

    async def wait(self, pred: Any, timeout: float = 20.0, what: str = "") -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not pred():
            if loop.time() > end:
                raise AssertionError(f"timed out waiting for {what}; state {self.cell.fsm.state.label}")
            await asyncio.sleep(0.02)

    async def to_execute(self) -> None:
        assert (await self.client.post("/api/cell/command", json={"command": "reset"}, headers=H)).status_code == 200
        await self.wait(lambda: self.cell.fsm.state.label == "Idle", what="Idle")
        assert (await self.client.post("/api/cell/command", json={"command": "start"}, headers=H)).status_code == 200
        await self.wait(lambda: self.cell.fsm.state.label == "Execute", what="Execute")


async def _live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, open_reads: bool = True):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AXCELL_API_TOKEN", TOKEN)
    cfg = load_cell(ROOT / "launch/packaging_cell.yaml")
    cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update={"open_reads": open_reads})})
    got: dict[str, Any] = {}
    task = asyncio.create_task(run_session(cfg, RunOptions(speed=60, hmi_port=0, quiet=True, run_dir=tmp_path / "run",
                                                           on_ready=lambda ops: got.setdefault("ops", ops))))
    for _ in range(3000):
        if "ops" in got or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    live = Live(got["ops"], task)
    try:
        yield live
    finally:
        await live.client.aclose()
        live.cell.request_shutdown()
        report = await asyncio.wait_for(task, 30)
        assert report is not None and (tmp_path / "run" / "report.json").exists()


@pytest_asyncio.fixture
async def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    async for x in _live(tmp_path, monkeypatch):
        yield x


@pytest_asyncio.fixture
async def closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    async for x in _live(tmp_path, monkeypatch, open_reads=False):
        yield x


def _audit(live: Live) -> list[tuple]:
    live.ops.store.flush()
    conn = sqlite3.connect(live.ops.store.path)
    try:
        return conn.execute("SELECT action, ok, detail FROM audit").fetchall()
    finally:
        conn.close()


# -- auth -------------------------------------------------------------------------------------------
async def test_commands_need_a_valid_token_and_failures_are_logged(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    c = live.client
    caplog.set_level(logging.WARNING, logger="axcell.api")
    r = await c.post("/api/cell/command", json={"command": "reset"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = await c.post("/api/cell/command", json={"command": "reset"}, headers={"Authorization": "Bearer wrong-token"})
    assert r.status_code == 401
    r = await c.post("/api/cell/command", json={"command": "reset"}, headers={"Authorization": TOKEN})  # no scheme
    assert r.status_code == 401
    assert live.cell.fsm.state.label == "Stopped"  # nothing happened
    assert sum("API auth failed" in m for m in caplog.messages) == 3
    r = await c.post("/api/alarms/1/ack")
    assert r.status_code == 401
    r = await c.post("/api/cell/command", json={"command": "reset"}, headers=H)
    assert r.status_code == 200 and r.json()["state"] == "Resetting"
    audit = _audit(live)
    assert sum(1 for a in audit if a[0] == "auth_failed" and a[1] == 0) == 4
    assert ("command:reset", 1) in [(a[0], a[1]) for a in audit]


async def test_illegal_command_is_409_with_the_reason(live: Live) -> None:
    r = await live.client.post("/api/cell/command", json={"command": "start"}, headers=H)
    assert r.status_code == 409
    j = r.json()
    assert "start is not allowed in Stopped" in j["detail"] and j["state"] == "Stopped"
    assert set(j["legal_commands"]) == {"reset", "abort"}
    r = await live.client.post("/api/cell/command", json={"command": "explode"}, headers=H)
    assert r.status_code == 422
    r = await live.client.post("/api/cell/command", json={"command": "reset", "extra": 1}, headers=H)
    assert r.status_code == 422


async def test_stop_is_always_accepted_with_a_valid_token(live: Live) -> None:
    c = live.client
    r = await c.post("/api/cell/command", json={"command": "stop"}, headers=H)  # already Stopped: still 200
    assert r.status_code == 200 and r.json()["accepted"]
    await live.to_execute()
    r = await c.post("/api/cell/command", json={"command": "hold"}, headers=H)
    assert r.status_code == 200
    r = await c.post("/api/cell/command", json={"command": "stop"}, headers=H)
    assert r.status_code == 200 and r.json()["state"] == "Stopping"
    r = await c.post("/api/cell/command", json={"command": "stop"}, headers=H)  # while stopping
    assert r.status_code == 200
    await live.wait(lambda: live.cell.fsm.state.label == "Stopped", what="Stopped")


async def test_reads_closed_by_config(closed: Live) -> None:
    c = closed.client
    assert (await c.get("/api/cell")).status_code == 401
    assert (await c.get("/api/parts")).status_code == 401
    assert (await c.get("/api/cell", headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await c.get("/api/cell", headers=H)).status_code == 200
    assert (await c.get(f"/api/oee?token={TOKEN}")).status_code == 200
    assert (await c.get("/")).status_code == 200  # the page itself is static; its data needs the token
    import websockets

    ws_url = closed.url.replace("http", "ws") + "/api/events"
    with pytest.raises(websockets.exceptions.WebSocketException):
        async with websockets.connect(ws_url) as ws:
            await asyncio.wait_for(ws.recv(), 5)
    async with websockets.connect(ws_url + f"?token={TOKEN}") as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "hello"


async def test_reads_open_by_default(live: Live) -> None:
    r = await live.client.get("/api/cell")
    assert r.status_code == 200
    j = r.json()
    for k in ("name", "state", "mode", "counts", "oee", "current_skill", "legal_commands"):
        assert k in j
    assert j["state"] == "Stopped" and j["mode"] == "Production"


# -- input limits -----------------------------------------------------------------------------------
async def test_big_bodies_get_413(live: Live) -> None:
    c = live.client
    big = b'{"command": "' + b"x" * (1 << 20) + b'"}'
    r = await c.post("/api/cell/command", content=big, headers=H | {"content-type": "application/json"})
    assert r.status_code == 413

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 65536

    r = await c.post("/api/cell/command", content=chunks(), headers=H | {"content-type": "application/json"})
    assert r.status_code == 413
    # an unauthenticated big body is refused as well (before anything parses it)
    r = await c.post("/api/alarms/1/ack", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert live.cell.fsm.state.label == "Stopped"


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1_0", b" 12", b"+5", b"\xd9\xa1"])
async def test_malformed_content_length_is_a_json_400_not_a_413(value: bytes) -> None:
    # uvicorn's own parser answers these with a plain-text 400 before the app runs (nothing in-app can
    # change that); for a server or transport that passes them through, the app says what is wrong
    # (a non-number used to be taken as "too large": 413)
    from cell.api.app import BodyLimit

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]  # noqa: ANN001
        raise AssertionError("the request reached the app")

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict] = []

    async def send(msg: dict) -> None:
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/api/cell/command",
             "headers": [(b"host", b"x"), (b"content-length", value)]}
    await BodyLimit(app)(scope, receive, send)
    assert sent[0]["status"] == 400
    assert b"Content-Length header is not a number" in sent[1]["body"]


@pytest.mark.parametrize("body", [b'{"command": NaN}', b'{"command": Infinity}', b'{"command": -Infinity}',
                                  b'{"command": [NaN, {"x": Infinity}]}', b'{"command": "reset", "x": NaN}'])
async def test_non_finite_json_numbers_get_422_not_500(live: Live, body: bytes) -> None:
    # Python's JSON parser accepts NaN/Infinity; echoing them back in the 422 made the error handler fail (500)
    for path in ("/api/cell/command", "/api/alarms/1/ack"):
        r = await live.client.post(path, content=body.replace(b"command", b"by") if "ack" in path else body,
                                   headers=H | {"content-type": "application/json"})
        assert r.status_code == 422, (path, body, r.status_code, r.text)
        detail = r.json()["detail"]
        assert detail and all("loc" in d and "msg" in d for d in detail)
    assert live.cell.fsm.state.label == "Stopped"


@pytest.mark.parametrize("path", [
    "/api/parts/..%2F..%2F..%2Fetc%2Fpasswd/image",
    "/api/parts/%2e%2e/image",
    "/api/parts/..%5c..%5cwindows/image",
    "/api/parts/%2Fetc%2Fpasswd/image",
    "/api/parts/a..b/image",
    "/api/camera/..%2F..%2Fetc%2Fpasswd.mjpg",
    "/api/camera/%2e%2e.jpg",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
])
async def test_path_traversal_is_refused(live: Live, path: str) -> None:
    r = await live.client.get(path)
    assert r.status_code in (400, 404, 422), (path, r.status_code)
    assert b"root:" not in r.content


# -- data endpoints ---------------------------------------------------------------------------------
async def test_parts_images_alarms_oee_openapi(live: Live) -> None:
    c = live.client
    await live.to_execute()
    await live.wait(lambda: live.cell.ledger.counts()["rejected"] >= 1 and live.cell.ledger.counts()["packed"] >= 3,
                    timeout=40, what="packed and rejected parts")
    live.ops.store.flush()
    r = await c.get("/api/parts", params={"limit": 5})
    assert r.status_code == 200
    parts = r.json()
    assert 1 <= len(parts) <= 5
    rej = (await c.get("/api/parts", params={"outcome": "rejected", "limit": 100})).json()
    assert rej and all(p["outcome"] == "rejected" for p in rej)
    assert (await c.get("/api/parts", params={"outcome": "nonsense"})).status_code == 422
    assert (await c.get("/api/parts", params={"limit": 0})).status_code == 422
    p = rej[0]
    img = await c.get(p["image_url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert img.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert hashlib.sha256(img.content).hexdigest() == p["image_sha256"]
    assert (await c.get("/api/parts/P999999/image")).status_code == 404
    one = (await c.get(f"/api/parts/{p['part_id']}")).json()
    assert one["outcome"] == "rejected" and one["defects"]

    # alarms: raise one (the supervisor holds the cell), list it, acknowledge it
    live.cell.raise_alarm(code="test", message="test alarm from the API test", source="test")
    alarms = (await c.get("/api/alarms")).json()
    a = next(x for x in alarms if x["code"] == "test")
    assert a["active"] and not a["acked"] and a["severity"] == "error"
    assert a["first_out"]
    r = await c.post(f"/api/alarms/{a['id']}/ack", headers=H)
    assert r.status_code == 200 and r.json()["acked"]
    assert (await c.post("/api/alarms/99999/ack", headers=H)).status_code == 404
    assert (await c.post("/api/alarms/abc/ack", headers=H)).status_code == 422
    assert any(x["acked"] for x in (await c.get("/api/alarms")).json() if x["code"] == "test")

    o = (await c.get("/api/oee")).json()
    for k in ("availability", "performance", "quality", "oee", "losses_s", "downtime", "acc"):
        assert k in o
    assert 0 < o["oee"] <= 1.0 + 1e-9
    assert abs(o["oee"] - o["availability"] * o["performance"] * o["quality"]) < 1e-9
    assert o["acc"]["processed"] == o["acc"]["counter_processed"]

    spec = (await c.get("/openapi.json")).json()
    for path in ("/api/cell", "/api/cell/command", "/api/parts", "/api/parts/{part_id}/image", "/api/alarms",
                 "/api/alarms/{alarm_id}/ack", "/api/oee"):
        assert path in spec["paths"], path

    cam = await c.get("/api/camera/top_camera.jpg")
    assert cam.status_code == 200 and cam.content[:2] == b"\xff\xd8"
    assert (await c.get("/api/camera/nosuch.jpg")).status_code == 404
    async with c.stream("GET", "/api/camera/top_camera.mjpg") as s:
        assert s.headers["content-type"].startswith("multipart/x-mixed-replace")
        got = b""
        async for chunk in s.aiter_bytes():
            got += chunk
            if b"\xff\xd9" in got:
                break
        assert b"--frame" in got and b"Content-Type: image/jpeg" in got


async def test_websocket_streams_state_part_and_alarm_events(live: Live) -> None:
    import websockets

    async with websockets.connect(live.url.replace("http", "ws") + "/api/events") as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["type"] == "hello" and hello["state"] == "Stopped"
        await live.to_execute()
        seen: dict[str, dict] = {}
        states: list[str] = []
        raised = False
        end = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < end:
            ev = json.loads(await asyncio.wait_for(ws.recv(), 10))
            seen.setdefault(ev["type"], ev)
            if ev["type"] == "state":
                states.append(ev["to"])
            if "part_inspected" in seen and not raised:
                raised = True
                live.cell.raise_alarm(code="ws", message="websocket test alarm", source="test", severity="warning")
            if {"part_arrived", "part_inspected", "alarm"} <= set(seen):
                break
    assert states[:4] == ["Resetting", "Idle", "Starting", "Execute"]
    assert seen["part_inspected"]["part"]["verdict"] in ("good", "defective", "none")
    assert seen["alarm"]["alarm"]["message"] == "websocket test alarm"
