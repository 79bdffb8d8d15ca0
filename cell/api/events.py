"""Fan-out of cell events to WebSocket clients, and the camera frames with their inspection overlay.

No transport imports here: the hub is plain asyncio.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..runtime import Cell

log = logging.getLogger("axcell.api.events")


def part_brief(part: Any) -> dict[str, Any]:
    return {"id": part.id, "verdict": getattr(part, "verdict", None), "defects": list(getattr(part, "defects", []) or []),
            "score": round(float(getattr(part, "score", 0.0) or 0.0), 4), "variant": getattr(part, "variant", None)}


def event_json(kind: str, data: dict[str, Any], t: float) -> dict[str, Any] | None:
    """A JSON-able form of a cell event (None: not forwarded)."""
    out: dict[str, Any] = {"type": kind, "t": round(t, 3)}
    if kind == "state":
        tr = data["transition"]
        out.update({"from": tr.source.label, "to": tr.target.label, "cause": tr.cause})
    elif kind == "alarm":
        a = data["alarm"]
        out.update({"what": data["what"], "alarm": a.to_record() if hasattr(a, "to_record") else a.to_dict()})
    elif kind == "skill_result":
        res = data.get("result")
        st = getattr(res, "status", None)
        out.update({"skill": data.get("skill"), "node": data.get("node"),
                    "status": getattr(st, "name", str(st)).lower(), "message": getattr(res, "message", "")})
    elif "part" in data and data["part"] is not None:
        out["part"] = part_brief(data["part"])
        for k in ("route",):
            if k in data:
                out[k] = data[k]
    elif kind == "case_completed":
        out["case"] = {k: v for k, v in data.items() if isinstance(v, (int, float, str))}
    else:
        return None
    return out


class EventHub:
    """Subscribes to a cell; every connected client gets its own bounded queue (oldest dropped)."""

    def __init__(self, cell: "Cell", maxsize: int = 2000) -> None:
        self.cell = cell
        self.maxsize = maxsize
        self.clients: set[asyncio.Queue] = set()
        self.latest_inspection: dict[str, tuple[Any, Any, tuple[float, float] | None]] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=200)
        self.closed = False
        self.dropped = 0
        cell.listeners.append(self._on_event)

    def _on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "part_inspected":
            part = data.get("part")
            frame = (part.meta or {}).get("frame") if part is not None else None
            if frame is not None:
                xy = (float(part.x), float(part.y)) if getattr(part, "x", None) is not None else None
                self.latest_inspection[getattr(frame, "camera", "")] = (frame, part.meta.get("result"), xy)
        ev = event_json(kind, data, self.cell.clock.now())
        if ev is not None:
            self.publish(ev)

    def publish(self, ev: dict[str, Any]) -> None:
        self.recent.append(ev)
        for q in list(self.clients):
            if q.full():
                try:
                    q.get_nowait()
                    self.dropped += 1
                except asyncio.QueueEmpty:
                    pass
            q.put_nowait(ev)

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(self.maxsize)
        self.clients.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self.clients.discard(q)

    def close(self) -> None:
        self.closed = True
        for q in list(self.clients):
            if q.full():
                q.get_nowait()
            q.put_nowait(None)


# -- camera ---------------------------------------------------------------------------------------
def inspect_plane_z(cfg: Any) -> float:
    """The ``plane_z`` the inspect skill uses (to map its ROI-relative pose back to the full frame)."""
    found: list[float] = []

    def walk(node: Any) -> None:
        if getattr(node, "skill", None) == "inspect":
            z = (getattr(node, "with_", None) or {}).get("plane_z")
            if z is None:  # the skill's default: the line conveyor's surface plus the tallest product
                from cell.runtime import line_geometry

                try:
                    z = float(line_geometry(cfg).get("z", 0.0)) + max(
                        (p.size_mm[2] / 1000.0 for p in cfg.products.values()), default=0.0)
                except (AttributeError, TypeError):
                    z = 0.0
            found.append(float(z))
        for key in ("sequence", "fallback", "parallel"):
            for kid in getattr(node, key, None) or []:
                walk(kid)
        for key in ("repeat", "retry", "timeout"):
            kid = getattr(node, key, None)
            if kid is not None and not isinstance(kid, (int, float)):
                walk(kid)

    walk(cfg.process)
    return found[0] if found else 0.0


def _shift(result: Any, dx: float, dy: float) -> Any:
    upd: dict[str, Any] = {}
    if result.pose_px is not None:
        cx, cy, a = result.pose_px
        upd["pose_px"] = (cx + dx, cy + dy, a)
    if getattr(result, "canonical_to_image", None) is not None:
        M = np.array(result.canonical_to_image, dtype=float).copy()
        M[0, 2] += dx
        M[1, 2] += dy
        upd["canonical_to_image"] = M
    regs = []
    for r in getattr(result, "regions", []) or []:
        x0, y0, x1, y1 = r["box"]
        regs.append({**r, "box": [int(round(x0 + dx)), int(round(y0 + dy)), int(round(x1 + dx)), int(round(y1 + dy))]})
    upd["regions"] = regs
    return dataclasses.replace(result, **upd)


def annotate(frame: Any, result: Any, part_xy: tuple[float, float] | None, plane_z: float) -> np.ndarray:
    """The frame (BGR) with the inspection overlay, in full-frame pixel coordinates."""
    import cv2

    from skills.vision import draw_overlay

    img = frame.image
    if result is None or not dataclasses.is_dataclass(result):
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img
    cal = getattr(frame, "calibration", None)
    if result.pose_px is not None and part_xy is not None and cal is not None:
        u, v = cal.plane_to_pixel(part_xy[0], part_xy[1], plane_z)
        dx, dy = u - result.pose_px[0], v - result.pose_px[1]
        if abs(dx) > 0.5 or abs(dy) > 0.5:
            result = _shift(result, dx, dy)
    return draw_overlay(img, result)


def placeholder(text: str, w: int = 512, h: int = 410) -> np.ndarray:
    import cv2

    img = np.full((h, w, 3), 40, np.uint8)
    cv2.putText(img, text, (20, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (200, 200, 200), 2, cv2.LINE_AA)
    return img


class CameraFeed:
    """JPEG frames of a camera with the overlay of the inspection that used the frame; encoded off the loop."""

    def __init__(self, cell: "Cell", hub: EventHub, quality: int = 80) -> None:
        self.cell = cell
        self.hub = hub
        self.quality = quality
        self.plane_z = inspect_plane_z(cell.cfg)
        self._cache: dict[str, tuple[Any, bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def cameras(self) -> list[str]:
        from drivers.camera import Camera

        return [n for n, d in self.cell.devices.items() if isinstance(d, Camera) or hasattr(d, "last_frame")]

    def _source(self, name: str) -> tuple[Any, Any, Any]:
        dev = self.cell.devices.get(name)
        frame = getattr(dev, "last_frame", None)
        ins = self.hub.latest_inspection.get(name)
        if ins is not None and (frame is None or ins[0] is frame):
            return ins
        return frame, None, None

    async def jpeg(self, name: str) -> tuple[Any, bytes]:
        """(key, JPEG bytes); the key changes when the picture does."""
        import cv2

        frame, result, xy = self._source(name)
        key = (id(frame), getattr(frame, "stamp", None), id(result))
        cached = self._cache.get(name)
        if cached is not None and cached[0] == key:
            return cached
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] == key:
                return cached

            def work() -> bytes:
                if frame is None:
                    img = placeholder(f"{name}: no frame yet")
                else:
                    img = annotate(frame, result, xy, self.plane_z)
                    stamp = getattr(frame, "stamp", 0.0)
                    cv2.putText(img, f"{name}  t={stamp:.1f}s", (8, img.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX,
                                0.5, (255, 255, 255), 1, cv2.LINE_AA)
                ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), self.quality])
                return buf.tobytes() if ok else b""

            data = await asyncio.to_thread(work)
            self._cache[name] = (key, data)
            return key, data


class Trend:
    """Wall-clock samples of counts and OEE for the HMI trend charts."""

    def __init__(self, cell: "Cell", maxlen: int = 900) -> None:
        self.cell = cell
        self.samples: deque[dict[str, Any]] = deque(maxlen=maxlen)

    def sample(self) -> dict[str, Any]:
        c = self.cell.ledger.counts()
        ops = getattr(self.cell, "operations", None)
        o = ops.oee() if ops is not None else self.cell.snapshot()["oee"]
        pt = {"wall": round(time.time(), 3), "t": round(self.cell.clock.now(), 3), "state": self.cell.fsm.state.label,
              "packed": c["packed"], "rejected": c["rejected"], "missed": c["missed"], "arrived": c["arrived"],
              "oee": round(o["oee"], 4), "availability": round(o["availability"], 4),
              "performance": round(o["performance"], 4), "quality": round(o["quality"], 4)}
        self.samples.append(pt)
        return pt
