"""Record topics to a rosbag2-compatible MCAP file, and read it back (``axcell replay``).

The recorder subscribes with ``raw=True`` (the CDR bytes exactly as they were on the wire) to
the topics it is given plus every non-hidden topic it discovers, and writes them with the
``mcap`` writer: profile ``ros2``, schemas ``ros2msg`` (the ``.msg`` text with its dependencies,
as rosbag2 writes it), message encoding ``cdr``, log time = the cell clock (simulated ns).
``ros2 bag info``/``play``, Foxglove and the ``mcap``/``rosbags`` Python packages read it.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("axcell.ros.record")

_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
               "int64", "uint64", "string", "wstring"}
_SEP = "=" * 80


def _share_dirs() -> list[Path]:
    dirs = [Path(sys.prefix) / "share"]
    for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if p:
            dirs.append(Path(p) / "share")
    return dirs


def _msg_text(pkg: str, name: str) -> str:
    for d in _share_dirs():
        f = d / pkg / "msg" / f"{name}.msg"
        if f.is_file():
            return f.read_text()
    raise LookupError(f"no definition of {pkg}/msg/{name} under {[str(d) for d in _share_dirs()]}")


def msgdef(type_name: str) -> str:
    """The ros2msg schema text of ``pkg/msg/Name``: its .msg plus every dependency (rosbag2 style)."""
    pkg, _, name = type_name.split("/")
    text = _msg_text(pkg, name)
    seen: list[str] = []

    def deps(pkg: str, text: str) -> None:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            typ = line.split()[0]
            if "=" in line.split()[1] if len(line.split()) > 1 else False:
                continue  # constant
            typ = re.sub(r"\[.*\]$", "", typ)
            typ = re.sub(r"<=\d+$", "", typ)
            if typ in _PRIMITIVES:
                continue
            full = typ if "/" in typ else f"{pkg}/{typ}"
            p, n = full.split("/")[0], full.split("/")[-1]
            key = f"{p}/{n}"
            if key in seen:
                continue
            seen.append(key)
            sub = _msg_text(p, n)
            deps(p, sub)
            seen.remove(key)
            seen.append(key)

    deps(pkg, text)
    parts = [text.rstrip("\n")]
    for key in seen:
        p, n = key.split("/")
        parts.append(f"{_SEP}\nMSG: {p}/{n}\n{_msg_text(p, n).rstrip(chr(10))}")
    return "\n".join(parts) + "\n"


def message_class(type_name: str) -> Any:
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class Recorder:
    """Raw subscriptions on the bridge, written to ``path`` (thread-safe; closes cleanly)."""

    def __init__(self, bridge: Any, path: Path, *, clock: Any, namespace: str = "") -> None:
        self.bridge, self.path, self.clock = bridge, Path(path), clock
        self.node = bridge.create_node("recorder", namespace=f"/{namespace}" if namespace else None)
        self._lock = threading.Lock()
        self._channels: dict[str, int] = {}
        self._subs: list[Any] = []
        self._writer = None
        self._file = None
        self._active = False
        self.counts: dict[str, int] = {}

    async def start(self, expected: list[tuple[str, str]] = ()) -> None:
        from mcap.writer import Writer

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")
        self._writer = Writer(self._file)
        self._writer.start(profile="ros2", library="axcell")
        topics = dict(expected)
        for name, types in self.node.get_topic_names_and_types():
            if not any(part.startswith("_") for part in name.split("/")) and types and name not in topics:
                topics[name] = types[0]
        self._active = True
        for topic, typ in sorted(topics.items()):
            self.add(topic, typ)

    def add(self, topic: str, type_name: str) -> None:
        from rclpy.qos import QoSProfile

        if topic in self._channels:
            return
        try:
            cls = message_class(type_name)
            schema = msgdef(type_name)
        except Exception as e:  # noqa: BLE001
            log.warning("recorder: skipping %s (%s): %s", topic, type_name, e)
            return
        with self._lock:
            sid = self._writer.register_schema(name=type_name, encoding="ros2msg", data=schema.encode())
            cid = self._writer.register_channel(topic=topic, message_encoding="cdr", schema_id=sid)
            self._channels[topic] = cid
        self.counts[topic] = 0
        self._subs.append(self.node.create_subscription(
            cls, topic, lambda data, c=cid, t=topic: self._write(c, t, data), QoSProfile(depth=1000), raw=True))

    def _write(self, cid: int, topic: str, data: bytes) -> None:  # spin thread
        ns = int(round(self.clock.now() * 1e9))
        with self._lock:
            if not self._active:
                return
            self._writer.add_message(cid, log_time=ns, data=data, publish_time=ns, sequence=self.counts[topic])
            self.counts[topic] += 1

    def stop(self) -> None:
        with self._lock:
            self._active = False

    def close(self) -> None:
        with self._lock:
            self._active = False
            if self._writer is not None:
                self._writer.finish()
                self._writer = None
            if self._file is not None:
                self._file.close()
                self._file = None


# --------------------------------------------------------------------------- reading back

class BagError(Exception):
    """An MCAP file that cannot be read (to its end); ``messages`` were yielded before the problem."""

    def __init__(self, message: str, messages: int = 0) -> None:
        super().__init__(message)
        self.messages = messages


def read_bag(path: str | Path, topics: list[str] | None = None):
    """Yield (topic, log_time_s, decoded message) from an MCAP written by :class:`Recorder`.

    A recording cut short (the run was killed before the MCAP summary was written) is read record by
    record up to the damage, so nothing recorded is lost; then :class:`BagError` says where it stopped.
    A file that is not MCAP at all raises :class:`BagError` before yielding anything.
    """
    from mcap.reader import NonSeekingReader, make_reader
    from mcap_ros2.decoder import DecoderFactory

    n = 0
    try:
        with open(path, "rb") as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            for _schema, channel, message, decoded in reader.iter_decoded_messages(topics=topics):
                n += 1
                yield channel.topic, message.log_time / 1e9, decoded
        return
    except OSError as e:
        raise BagError(f"cannot read: {e.strerror or e}", n) from None
    except Exception as e:  # noqa: BLE001 - the mcap readers raise McapError, struct.error, EOFError, ...
        first = e
    if n:
        raise BagError(f"damaged after {n} messages ({first.__class__.__name__}: {first})", n)
    # no summary (a run that was killed): stream the records that are there, in file order
    try:
        with open(path, "rb") as f:
            reader = NonSeekingReader(f, decoder_factories=[DecoderFactory()])
            for _schema, channel, message, decoded in reader.iter_decoded_messages(topics=topics,
                                                                                   log_time_order=False):
                n += 1
                yield channel.topic, message.log_time / 1e9, decoded
    except Exception as e:  # noqa: BLE001
        if not n:
            raise BagError(f"not a readable MCAP recording ({first.__class__.__name__}: {first})") from None
        raise BagError(f"the recording ends early after {n} messages (the run was cut short or the file is "
                       f"damaged: {e.__class__.__name__})", n) from None


def summary(path: str | Path) -> dict[str, Any]:
    from mcap.reader import make_reader

    with open(path, "rb") as f:
        s = make_reader(f).get_summary()
    out = {}
    for cid, ch in s.channels.items():
        out[ch.topic] = {"type": s.schemas[ch.schema_id].name,
                         "count": s.statistics.channel_message_counts.get(cid, 0) if s.statistics else None}
    return out
