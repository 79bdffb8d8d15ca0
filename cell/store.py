"""The durable traceability store: SQLite (WAL, ``synchronous=FULL``) written by one thread.

What it keeps, per run (``run_id``):

* ``parts``: one row per part, ``PRIMARY KEY (run_id, part_id)``.  Every part
  event is an upsert; the closing fields (outcome, closed_at, reason) are set
  once and a closed row is never changed again, so a replayed event can't be
  counted twice.  Counts are SQL over these rows.
* ``alarms`` (upsert on raise/ack/clear), ``states`` (every PackML transition
  with the stop reason), ``audit`` (commands and failed authentications).
* ``cases``: one row per completed case, ``PRIMARY KEY (run_id, station, case_id)``
  (case ids count from 1 per case station); a packed part's row names its
  ``case_id`` and ``station``, so per-station cases and packed parts are SQL too.
* ``counters``: the PackML ``AccCount`` totals (processed / good / defective),
  bumped in the same transaction that closes a part, so they equal the records
  and never go backwards, across restarts of the store too.
* The inspection image of each rejected part and a sample of good ones
  (``store.sample_good_images``), written atomically (temp file, fsync,
  rename, fsync of the directory) *before* the row that names it and its
  SHA-256 is committed.

Writes never block the cell: listeners snapshot the event on the event loop
thread and put it on a queue; the writer thread drains the queue and commits
each batch in one transaction.  A record is *acknowledged* once its
transaction committed (fsynced); only then do ``on_commit`` callbacks (the
HMI, the optional ack log) hear of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import Cell

log = logging.getLogger("axcell.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, cell TEXT NOT NULL, started_wall TEXT NOT NULL, ended_wall TEXT,
  seed INTEGER, meta TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS parts (
  run_id TEXT NOT NULL, part_id TEXT NOT NULL, seq INTEGER NOT NULL,
  arrival REAL, variant TEXT, verdict TEXT, defects TEXT, score REAL, inspect_ms REAL, inspected_at REAL,
  pick_time REAL, place_time REAL, case_id INTEGER, slot INTEGER,
  outcome TEXT CHECK (outcome IS NULL OR outcome IN ('packed', 'rejected', 'missed')),
  closed_at REAL, closed_wall TEXT, reason TEXT, telemetry TEXT,
  image_path TEXT, image_sha256 TEXT, station TEXT,
  PRIMARY KEY (run_id, part_id)
);
CREATE INDEX IF NOT EXISTS parts_run_outcome ON parts (run_id, outcome);
CREATE INDEX IF NOT EXISTS parts_run_seq ON parts (run_id, seq);
CREATE TABLE IF NOT EXISTS alarms (
  run_id TEXT NOT NULL, alarm_id INTEGER NOT NULL, code TEXT, severity TEXT, message TEXT, source TEXT,
  time REAL, wall_time TEXT, first_out INTEGER, category TEXT, acked_at REAL, acked_by TEXT, acked_wall TEXT,
  cleared_at REAL,
  PRIMARY KEY (run_id, alarm_id)
);
CREATE TABLE IF NOT EXISTS states (
  run_id TEXT NOT NULL, seq INTEGER NOT NULL, t REAL NOT NULL, wall TEXT NOT NULL,
  source TEXT, target TEXT NOT NULL, cause TEXT, stop_reason TEXT, stop_category TEXT,
  PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, wall TEXT NOT NULL, t REAL, action TEXT NOT NULL,
  ok INTEGER NOT NULL, actor TEXT, detail TEXT
);
CREATE TABLE IF NOT EXISTS cases (
  run_id TEXT NOT NULL, station TEXT NOT NULL, case_id INTEGER NOT NULL, slots INTEGER, completed_at REAL,
  completed_wall TEXT,
  PRIMARY KEY (run_id, station, case_id)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('processed', 0), ('good', 0), ('defective', 0);
"""

SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of a store this code writes.  0 or 1: a store from before the case stations
(``parts`` has no ``station`` column, there is no ``cases`` table); :func:`migrate` brings it to 2."""

MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 1 -> 2: the case station of each packed part (``cases`` itself is created by SCHEMA)
    2: ("ALTER TABLE parts ADD COLUMN station TEXT",),
}


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the store's schema to :data:`SCHEMA_VERSION` (in the caller's transaction); return the old version.

    A store written before versioning has ``user_version`` 0; its tables are what version 1 had."""
    old = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if old > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"store schema version {old} is newer than this axcell ({SCHEMA_VERSION})")
    has_parts = bool(conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'parts'").fetchone())
    if has_parts:
        for version in range(max(old, 1) + 1, SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS.get(version, ()):
                m = re.match(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", stmt)
                if m and m.group(2) in _columns(conn, m.group(1)):
                    continue  # already there (a half-migrated store)
                conn.execute(stmt)
    return old


PART_FIELDS = ("arrival", "variant", "verdict", "defects", "score", "inspect_ms", "inspected_at", "pick_time",
               "place_time", "case_id", "slot", "telemetry", "station")

UPSERT_PART = f"""
INSERT INTO parts (run_id, part_id, seq, {", ".join(PART_FIELDS)}, outcome, closed_at, closed_wall, reason)
VALUES (?, ?, ?, {", ".join("?" for _ in PART_FIELDS)}, ?, ?, ?, ?)
ON CONFLICT (run_id, part_id) DO UPDATE SET
  {", ".join(f"{f} = excluded.{f}" for f in PART_FIELDS)},
  outcome = excluded.outcome, closed_at = excluded.closed_at, closed_wall = excluded.closed_wall,
  reason = excluded.reason
WHERE parts.outcome IS NULL
"""
"""One statement for every part event: inserts, updates an open row, never touches a closed one."""

UPSERT_ALARM = """
INSERT INTO alarms (run_id, alarm_id, code, severity, message, source, time, wall_time, first_out, category,
                    acked_at, acked_by, acked_wall, cleared_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, alarm_id) DO UPDATE SET
  acked_at = COALESCE(alarms.acked_at, excluded.acked_at), acked_by = COALESCE(alarms.acked_by, excluded.acked_by),
  acked_wall = COALESCE(alarms.acked_wall, excluded.acked_wall),
  cleared_at = COALESCE(alarms.cleared_at, excluded.cleared_at)
"""

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def safe_id(text: str) -> bool:
    """An id that can name a file: no separators, no traversal."""
    return bool(_SAFE_ID.match(text)) and text not in (".", "..") and ".." not in text


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` durably (temp file, fsync, rename, fsync dir); return its SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return hashlib.sha256(data).hexdigest()


def sample_hit(part_id: str, fraction: float) -> bool:
    """Deterministic sample: the same part is always in (or out of) a ``fraction`` sample."""
    if fraction <= 0:
        return False
    if fraction >= 1:
        return True
    h = int.from_bytes(hashlib.sha256(part_id.encode()).digest()[:8], "big")
    return h / 2**64 < fraction


@dataclass
class _Flush:
    done: threading.Event


_CLOSE = object()


class Store:
    """Open (or create) the store at ``path``; ``images_dir`` defaults to ``<path dir>/images``."""

    def __init__(self, path: str | Path, *, cell: str, run_id: str | None = None, seed: int | None = None,
                 images_dir: str | Path | None = None, sample_good_images: float = 0.02,
                 meta: dict[str, Any] | None = None, ack_log: str | Path | None = None,
                 backlog_warn: int = 20000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.images_dir = Path(images_dir) if images_dir is not None else self.path.parent / "images"
        self.cell = cell
        self.run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        self.sample_good_images = sample_good_images
        self.ack_log = Path(ack_log) if ack_log is not None else None
        self.backlog_warn = backlog_warn
        self.on_commit: list[Callable[[list[tuple[str, Any]]], None]] = []
        """Called on the writer thread after each commit with the acknowledged items."""
        self.on_error: list[Callable[[BaseException], None]] = []
        self.committed_batches = 0
        self.committed_items = 0
        self.committed_cases = 0
        self.migrated_from: int | None = None
        """The schema version the store had when opened (0: new or from before versioning)."""
        self.error: BaseException | None = None
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._seq = 0
        self._state_seq = 0
        self._closed = False
        self._backlog_warned = False
        self.reconcile_report: dict[str, Any] = {}
        conn = self._connect()
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self.migrated_from = migrate(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("INSERT OR IGNORE INTO runs (run_id, cell, started_wall, seed, meta) VALUES (?, ?, ?, ?, ?)",
                         (self.run_id, cell, utc_now(), seed, json.dumps(meta or {}, default=str)))
        conn.close()
        self.reconcile_report = self.reconcile()
        self._read = self._connect(check_same_thread=False)
        self._read_lock = threading.Lock()
        self._thread = threading.Thread(target=self._writer, name=f"axcell-store-{cell}", daemon=True)
        self._thread.start()

    # -- connections -------------------------------------------------------------------------------
    def _connect(self, check_same_thread: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=check_same_thread)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.row_factory = sqlite3.Row
        return conn

    # -- wiring ------------------------------------------------------------------------------------
    def attach(self, cell: "Cell") -> None:
        """Subscribe to the cell's ledger, alarms, state machine and part events."""
        from .packml import Transition

        cell.ledger.listeners.append(self.on_part)
        cell.alarms.listeners.append(self.on_alarm)

        def on_transition(tr: Transition) -> None:
            sr = cell.alarms.stop_reason_info() if hasattr(cell.alarms, "stop_reason_info") else None
            self.on_state(tr.time, tr.source.label, tr.target.label, tr.cause,
                          sr[0] if sr else None, sr[1] if sr else None)

        cell.fsm.subscribe(on_transition)
        cur = cell.fsm.history[-1]
        self.on_state(cur.time, cur.source.label, cur.target.label, cur.cause, None, None)

        def on_event(kind: str, data: dict[str, Any]) -> None:
            if kind == "part_inspected":
                part = data.get("part")
                if part is not None:
                    self.on_inspected(part.id, part.verdict, (part.meta or {}).get("frame"))
            elif kind == "case_completed":
                self.on_case(data.get("station"), data.get("case_id"), data.get("slots"), cell.clock.now())

        cell.listeners.append(on_event)

    # -- producers (event-loop thread) ---------------------------------------------------------------
    def _put(self, item: Any) -> None:
        if self._closed:
            return
        self._q.put(item)
        if not self._backlog_warned and self._q.qsize() > self.backlog_warn:
            self._backlog_warned = True
            log.error("store writer is %d records behind", self._q.qsize())

    def on_part(self, what: str, rec: Any) -> None:
        d = rec.to_dict() if hasattr(rec, "to_dict") else dict(rec)
        self._seq += 1
        self._put(("part", d, self._seq if what == "arrived" else None, what))

    def on_inspected(self, part_id: str, verdict: str, frame: Any) -> None:
        if frame is None or getattr(frame, "image", None) is None:
            return
        if verdict != "good" or sample_hit(part_id, self.sample_good_images):
            self._put(("image", part_id, frame.image))

    def on_case(self, station: str | None, case_id: Any, slots: Any, t: float | None) -> None:
        if case_id is None:
            return
        self._put(("case", {"station": station or "", "case_id": int(case_id),
                            "slots": int(slots) if slots is not None else None, "t": t, "wall": utc_now()}))

    def on_alarm(self, what: str, alarm: Any) -> None:
        self._put(("alarm", alarm.to_record() if hasattr(alarm, "to_record") else dict(alarm)))

    def on_state(self, t: float, source: str, target: str, cause: str, reason: str | None,
                 category: str | None) -> None:
        self._state_seq += 1
        self._put(("state", {"seq": self._state_seq, "t": t, "wall": utc_now(), "source": source,
                             "target": target, "cause": cause, "stop_reason": reason, "stop_category": category}))

    def audit(self, action: str, ok: bool, *, actor: str = "", detail: str = "", t: float | None = None) -> None:
        self._put(("audit", {"wall": utc_now(), "t": t, "action": action, "ok": ok, "actor": actor,
                             "detail": detail}))

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until everything queued so far is committed."""
        if self._closed or not self._thread.is_alive():
            return False
        ev = threading.Event()
        self._q.put(_Flush(ev))
        return ev.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(_CLOSE)
        self._thread.join(timeout)
        try:
            with self._read_lock:
                self._read.execute("UPDATE runs SET ended_wall = ? WHERE run_id = ?", (utc_now(), self.run_id))
                self._read.close()
        except sqlite3.Error as e:  # pragma: no cover
            log.warning("closing store: %s", e)

    @property
    def backlog(self) -> int:
        return self._q.qsize()

    # -- the writer thread ---------------------------------------------------------------------------
    def _writer(self) -> None:
        conn = self._connect()
        ack = open(self.ack_log, "a", buffering=1) if self.ack_log is not None else None
        try:
            while True:
                first = self._q.get()
                batch = [first]
                while len(batch) < 2000:
                    try:
                        batch.append(self._q.get_nowait())
                    except queue.Empty:
                        break
                stop = any(it is _CLOSE for it in batch)
                flushes = [it for it in batch if isinstance(it, _Flush)]
                items = [it for it in batch if isinstance(it, tuple)]
                if items:
                    try:
                        acked = self._commit(conn, items)
                    except BaseException as e:  # noqa: BLE001 - reported, the cell decides
                        self.error = e
                        log.exception("store commit failed")
                        for cb in list(self.on_error):
                            try:
                                cb(e)
                            except Exception:  # noqa: BLE001
                                log.exception("store on_error callback failed")
                        acked = []
                    if acked:
                        self.committed_batches += 1
                        # completed cases are counted apart, so committed_items means what it meant before them
                        cases = sum(1 for kind, _ in acked if kind == "case")
                        self.committed_cases += cases
                        self.committed_items += len(acked) - cases
                        if ack is not None:
                            for kind, data in acked:
                                if kind == "part":
                                    ack.write(f"part\t{data['id']}\t{data.get('outcome') or '-'}\n")
                                elif kind == "counters":
                                    ack.write(f"counters\t{data['processed']}\t{data['good']}\t{data['defective']}\n")
                        for cb in list(self.on_commit):
                            try:
                                cb(acked)
                            except Exception:  # noqa: BLE001
                                log.exception("store on_commit callback failed")
                for f in flushes:
                    f.done.set()
                if stop:
                    break
        finally:
            if ack is not None:
                ack.close()
            conn.close()

    def _image(self, part_id: str, image: Any) -> tuple[str, str] | None:
        import cv2  # local: only when images are kept

        if not safe_id(part_id):
            log.warning("not storing the image of part %r: unsafe id", part_id)
            return None
        ok, buf = cv2.imencode(".png", image)
        if not ok:
            return None
        rel = Path(self.run_id) / f"{part_id}.png"
        sha = atomic_write(self.images_dir / rel, buf.tobytes())
        return rel.as_posix(), sha

    def _commit(self, conn: sqlite3.Connection, items: list[tuple]) -> list[tuple[str, Any]]:
        # images first: the file is durable before the row that names it is committed
        images: dict[str, tuple[str, str]] = {}
        for it in items:
            if it[0] == "image":
                try:
                    res = self._image(it[1], it[2])
                except OSError as e:
                    log.error("could not write the image of part %s: %s", it[1], e)
                    res = None
                if res is not None:
                    images[it[1]] = res
        acked: list[tuple[str, Any]] = []
        closed = good = 0
        rid = self.run_id
        conn.execute("BEGIN IMMEDIATE")
        try:
            for it in items:
                kind = it[0]
                if kind == "part":
                    d, seq, what = it[1], it[2], it[3]
                    row = (rid, d["id"], seq if seq is not None else 0,
                           d.get("arrival"), d.get("variant"), d.get("verdict"), json.dumps(d.get("defects") or []),
                           d.get("score"), d.get("inspect_ms"), d.get("inspected_at"), d.get("pick_time"),
                           d.get("place_time"), d.get("case_id"), d.get("slot"),
                           json.dumps(d.get("telemetry") or {}), d.get("station"),
                           d.get("outcome"), d.get("closed_at"), utc_now() if d.get("outcome") else None,
                           d.get("reason") or "")
                    if seq is None:
                        row = row[:2] + (-1,) + row[3:]  # only used if the arrival was never seen
                    cur = conn.execute(UPSERT_PART, row)
                    if cur.rowcount == 1:
                        acked.append(("part", d))
                        if d.get("outcome"):
                            closed += 1
                            good += d["outcome"] == "packed"
                elif kind == "image":
                    res = images.get(it[1])
                    if res is not None:
                        conn.execute("UPDATE parts SET image_path = ?, image_sha256 = ? "
                                     "WHERE run_id = ? AND part_id = ? AND image_path IS NULL",
                                     (res[0], res[1], rid, it[1]))
                        acked.append(("image", {"id": it[1], "path": res[0], "sha256": res[1]}))
                elif kind == "case":
                    c = it[1]
                    cur = conn.execute("INSERT OR IGNORE INTO cases (run_id, station, case_id, slots, completed_at, "
                                       "completed_wall) VALUES (?, ?, ?, ?, ?, ?)",
                                       (rid, c["station"], c["case_id"], c["slots"], c["t"], c["wall"]))
                    if cur.rowcount == 1:
                        acked.append(("case", c))
                elif kind == "alarm":
                    a = it[1]
                    conn.execute(UPSERT_ALARM, (rid, a["id"], a["code"], a["severity"], a["message"], a["source"],
                                                a["time"], a.get("wall_time"), int(bool(a.get("first_out"))),
                                                a.get("category"), a.get("acked_at"), a.get("acked_by"),
                                                a.get("acked_wall"), a.get("cleared_at")))
                    acked.append(("alarm", a))
                elif kind == "state":
                    s = it[1]
                    conn.execute("INSERT OR IGNORE INTO states (run_id, seq, t, wall, source, target, cause, "
                                 "stop_reason, stop_category) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 (rid, s["seq"], s["t"], s["wall"], s["source"], s["target"], s["cause"],
                                  s["stop_reason"], s["stop_category"]))
                    acked.append(("state", s))
                elif kind == "audit":
                    a = it[1]
                    conn.execute("INSERT INTO audit (run_id, wall, t, action, ok, actor, detail) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (rid, a["wall"], a["t"], a["action"], int(a["ok"]), a["actor"], a["detail"]))
                    acked.append(("audit", a))
            if closed:
                conn.execute("UPDATE counters SET value = value + ? WHERE name = 'processed'", (closed,))
                conn.execute("UPDATE counters SET value = value + ? WHERE name = 'good'", (good,))
                conn.execute("UPDATE counters SET value = value + ? WHERE name = 'defective'", (closed - good,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if closed:
            c = {r[0]: r[1] for r in conn.execute("SELECT name, value FROM counters")}
            acked.append(("counters", c))
        return acked

    # -- readers (any thread) ---------------------------------------------------------------------------
    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._read_lock:
            return self._read.execute(sql, tuple(args)).fetchall()

    def counts(self, run_id: str | None = None) -> dict[str, int]:
        """Counts of one run (default: this one), derived from the part records."""
        r = self._query(COUNTS_SQL + " WHERE run_id = ?", (run_id or self.run_id,))[0]
        return {k: int(r[k] or 0) for k in r.keys()}

    def station_counts(self, run_id: str | None = None) -> dict[str, dict[str, int]]:
        """Completed cases and packed parts per case station of one run (default: this one)."""
        with self._read_lock:
            return station_counts(self._read, run_id or self.run_id)

    def acc_counts(self) -> dict[str, int]:
        """PackML AccCount: totals over every run in this store (never decrease)."""
        return acc_counts(self._read, self._read_lock)

    def parts(self, *, limit: int = 50, outcome: str | None = None, run_id: str | None = None) -> list[dict]:
        sql = "SELECT * FROM parts WHERE run_id = ?"
        args: list[Any] = [run_id or self.run_id]
        if outcome:
            sql += " AND outcome = ?"
            args.append(outcome)
        sql += " ORDER BY COALESCE(closed_at, inspected_at, arrival) DESC, part_id DESC LIMIT ?"
        args.append(int(limit))
        return [part_row(r) for r in self._query(sql, args)]

    def part(self, part_id: str, run_id: str | None = None) -> dict | None:
        rows = self._query("SELECT * FROM parts WHERE run_id = ? AND part_id = ?", (run_id or self.run_id, part_id))
        return part_row(rows[0]) if rows else None

    def image_file(self, part_id: str, run_id: str | None = None) -> Path | None:
        """The stored image of a part, resolved and contained in the images directory (else None)."""
        if not safe_id(part_id):
            return None
        rec = self.part(part_id, run_id)
        if rec is None or not rec.get("image_path"):
            return None
        root = self.images_dir.resolve()
        p = (root / rec["image_path"]).resolve()
        if os.path.commonpath([root, p]) != str(root) or not p.is_file():
            return None
        return p

    def alarms(self, run_id: str | None = None, limit: int = 500) -> list[dict]:
        rows = self._query("SELECT * FROM alarms WHERE run_id = ? ORDER BY alarm_id DESC LIMIT ?",
                           (run_id or self.run_id, limit))
        return [dict(r) for r in rows]

    def states(self, run_id: str | None = None) -> list[dict]:
        return [dict(r) for r in self._query("SELECT * FROM states WHERE run_id = ? ORDER BY seq",
                                             (run_id or self.run_id,))]

    def reconcile(self) -> dict[str, Any]:
        """On open: drop orphan temp files; list image files without rows and rows without files."""
        out: dict[str, Any] = {"removed_tmp": 0, "orphan_files": [], "missing_files": []}
        if self.images_dir.is_dir():
            for p in self.images_dir.rglob(".*.tmp"):
                try:
                    p.unlink()
                    out["removed_tmp"] += 1
                except OSError:
                    pass
        conn = self._connect()
        try:
            rows = conn.execute("SELECT image_path FROM parts WHERE image_path IS NOT NULL").fetchall()
        finally:
            conn.close()
        known = {r[0] for r in rows}
        for rel in known:
            if not (self.images_dir / rel).is_file():
                out["missing_files"].append(rel)
        if self.images_dir.is_dir():
            for p in self.images_dir.rglob("*.png"):
                rel = p.relative_to(self.images_dir).as_posix()
                if rel not in known:
                    out["orphan_files"].append(rel)
        if out["missing_files"]:
            log.error("store: %d image files are missing", len(out["missing_files"]))
        return out


COUNTS_SQL = """
SELECT COUNT(*) AS arrived,
       SUM(inspected_at IS NOT NULL) AS inspected,
       SUM(verdict = 'good') AS good,
       SUM(verdict = 'defective') AS defective,
       SUM(outcome = 'rejected') AS rejected,
       SUM(outcome = 'packed') AS packed,
       SUM(outcome = 'missed') AS missed,
       SUM(outcome IS NULL) AS open
FROM parts"""


def station_counts(conn: sqlite3.Connection, run_id: str) -> dict[str, dict[str, int]]:
    """``{"cases": {station: completed cases}, "packed": {station: packed parts}}`` from the records.

    Reads a store of any schema version: one from before the case stations has neither ``cases`` nor
    ``parts.station`` and gives empty mappings."""
    out: dict[str, dict[str, int]] = {"cases": {}, "packed": {}}
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cases'").fetchone():
        for r in conn.execute("SELECT station, COUNT(*) FROM cases WHERE run_id = ? GROUP BY station ORDER BY station",
                              (run_id,)):
            out["cases"][r[0]] = int(r[1])
    if "station" in _columns(conn, "parts"):
        for r in conn.execute("SELECT station, COUNT(*) FROM parts WHERE run_id = ? AND outcome = 'packed' "
                              "AND station IS NOT NULL GROUP BY station ORDER BY station", (run_id,)):
            out["packed"][r[0]] = int(r[1])
    return out


def acc_counts(conn: sqlite3.Connection, lock: threading.Lock | None = None) -> dict[str, int]:
    def q() -> dict[str, int]:
        r = conn.execute("SELECT SUM(outcome IS NOT NULL), SUM(outcome = 'packed') FROM parts").fetchone()
        processed, good = int(r[0] or 0), int(r[1] or 0)
        ctr = {row[0]: int(row[1]) for row in conn.execute("SELECT name, value FROM counters")}
        return {"processed": processed, "good": good, "defective": processed - good,
                "counter_processed": ctr.get("processed", 0), "counter_good": ctr.get("good", 0),
                "counter_defective": ctr.get("defective", 0)}

    if lock is None:
        return q()
    with lock:
        return q()


def part_row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    for k in ("defects", "telemetry"):
        try:
            d[k] = json.loads(d[k]) if d.get(k) else ([] if k == "defects" else {})
        except (TypeError, ValueError):
            pass
    d["id"] = d.get("part_id")
    return d


def verify(path: str | Path, images_dir: str | Path | None = None) -> dict[str, Any]:
    """Offline check of a store: integrity, duplicates, image hashes, counters vs records."""
    p = Path(path)
    images = Path(images_dir) if images_dir is not None else p.parent / "images"
    conn = sqlite3.connect(p)
    conn.row_factory = sqlite3.Row
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        dup = conn.execute("SELECT COUNT(*) FROM (SELECT run_id, part_id, COUNT(*) c FROM parts "
                           "GROUP BY run_id, part_id HAVING c > 1)").fetchone()[0]
        bad_hash, missing = [], []
        for r in conn.execute("SELECT part_id, image_path, image_sha256 FROM parts WHERE image_path IS NOT NULL"):
            f = images / r["image_path"]
            if not f.is_file():
                missing.append(r["part_id"])
            elif hashlib.sha256(f.read_bytes()).hexdigest() != r["image_sha256"]:
                bad_hash.append(r["part_id"])
        acc = acc_counts(conn)
        return {"integrity": integrity, "duplicates": dup, "bad_hash": bad_hash, "missing_images": missing,
                "acc": acc,
                "counters_match": acc["processed"] == acc["counter_processed"] and acc["good"] == acc["counter_good"]}
    finally:
        conn.close()


def resolve_store_path(cfg: Any, run_dir: Path) -> Path:
    """``store.path`` from the cell file (relative to the cell file), else ``<run dir>/cell.sqlite``."""
    p = getattr(getattr(cfg, "store", None), "path", None)
    if not p:
        return run_dir / "cell.sqlite"
    path = Path(os.path.expanduser(p))
    if not path.is_absolute():
        base = Path(cfg.source).parent if getattr(cfg, "source", None) else Path.cwd()
        path = base / path
    return path
