"""Safe YAML loading that remembers where every value came from.

The loader composes the node graph with PyYAML's SafeLoader and builds plain
Python objects itself, refusing every non-standard tag (``!!python/object``,
custom ``!tags``) and duplicate keys.  It returns the data plus a map from
key path (tuple of keys/indices) to 1-based line number, so validation errors
can say ``cell.yaml:42: devices.3.options.speed: ...``.

Hostile input is bounded: files larger than :data:`MAX_BYTES`, nesting deeper
than :data:`MAX_DEPTH`, aliases that expand to more than
:data:`MAX_ALIAS_VALUES` values ("billion laughs") and recursive aliases are
refused with a located :class:`YamlError` instead of hanging or overflowing
the stack.  :func:`read` decodes UTF-8 (with or without a BOM) and UTF-16/32
with a BOM, and names the line of the first byte that is not valid text.
"""

from __future__ import annotations

import codecs
import math
import stat
from pathlib import Path as _FsPath
from typing import Any

import yaml

_ALLOWED = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq",
}

MAX_BYTES = 512 * 1024       # a cell file is a few kB; this is far beyond any hand-written one (and parses in seconds)
MAX_DEPTH = 64               # levels of nested maps/lists
MAX_ALIAS_VALUES = 100_000   # values produced by expanding aliases, in total

Path = tuple[Any, ...]


class YamlError(Exception):
    """A YAML problem at a line: ``line`` is 1-based (0 when unknown)."""

    def __init__(self, line: int, path: "str | _Where", message: str) -> None:
        self.line, self.path, self.message = line, str(path), message
        super().__init__(f"{line}: {path}: {message}")


# --------------------------------------------------------------------------- reading files
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode(data: bytes) -> str:
    """Bytes of a YAML file → text; :class:`YamlError` naming the line of the first undecodable byte."""
    enc = "utf-8"
    for bom, name in _BOMS:
        if data.startswith(bom):
            enc = name
            break
    try:
        text = data.decode(enc)
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        what = f"byte 0x{data[e.start]:02x}" if e.start < len(data) else "end of file"
        raise YamlError(line, "(file)", f"not {enc.replace('-sig', '').upper()} text: {what} at column {col} "
                                        f"cannot be decoded (save the file as UTF-8)") from None
    return text[1:] if text.startswith("\ufeff") else text


def read(path: str | _FsPath, max_bytes: int = MAX_BYTES) -> str:
    """Read a YAML file as text: size-limited, decoded by :func:`decode`; :class:`YamlError` on any problem."""
    if not str(path):
        raise YamlError(0, "(file)", "no file name given")
    p = _FsPath(path)
    try:
        if p.is_dir():
            raise YamlError(0, "(file)", "cannot read: is a directory")
        if p.exists() and not stat.S_ISREG(p.stat().st_mode):
            # a named pipe would block the read forever; a device is not a configuration
            raise YamlError(0, "(file)", "cannot read: not a regular file (a pipe, socket or device)")
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as e:
        raise YamlError(0, "(file)", f"cannot read: {e.strerror or e.__class__.__name__}") from None
    if len(data) > max_bytes:
        raise YamlError(0, "(file)", f"file is larger than {max_bytes // 1024} KiB; that is not a hand-written "
                                     f"configuration (refused)")
    return decode(data)


# --------------------------------------------------------------------------- parsing
def load(text: str) -> tuple[Any, dict[Path, int]]:
    """Parse ``text``; raise :class:`YamlError` on syntax errors, forbidden tags and unbounded structures."""
    if text.startswith("\ufeff"):
        text = text[1:]
    loader = None
    try:
        loader = yaml.SafeLoader(text)      # the reader refuses control characters here already
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        raise YamlError(line, "(syntax)", _one_line(f"{e.problem or e}")) from None
    except yaml.reader.ReaderError as e:
        line = text[:max(0, e.position)].count("\n") + 1
        ch = e.character if isinstance(e.character, str) else chr(e.character)
        raise YamlError(line, "(syntax)", f"character {ch!r} (#x{ord(ch):04x}) is not allowed in YAML "
                                          f"({_one_line(e.reason)})") from None
    except yaml.YAMLError as e:
        raise YamlError(0, "(syntax)", _one_line(str(e))) from None
    except RecursionError:
        raise YamlError(loader.line + 1 if loader else 0, "(syntax)",
                        f"nested more than {MAX_DEPTH} levels deep") from None
    lines: dict[Path, int] = {}
    if node is None:
        return None, lines
    b = _Builder(yaml.SafeLoader(""), lines)
    return b.build(node, (), 0), lines


def _one_line(s: str) -> str:
    return " ".join(str(s).split())


class _Builder:
    """Builds plain data from a node graph, bounding depth and alias expansion."""

    def __init__(self, constructor: yaml.SafeLoader, lines: dict[Path, int]) -> None:
        self.c = constructor
        self.lines = lines
        self.seen: set[int] = set()        # nodes built at least once
        self.active: set[int] = set()      # nodes on the current path (a repeat = a recursive alias)
        self.expanded = 0                  # values built again because an alias repeats them
        self.merged: dict[int, int] = {}   # mapping node → how many of its pairs came from merge keys

    def build(self, node: yaml.Node, path: Path, depth: int, used_at: int = 0, in_alias: bool = False) -> Any:
        """``used_at``: line that refers to this value (for an alias, where it is used, not defined)."""
        nid = id(node)
        alias = in_alias or nid in self.seen
        line = used_at if (alias and used_at) else node.start_mark.line + 1
        self.lines[path] = line
        where = _Where(path)
        if nid in self.active:
            raise YamlError(line, where, "recursive alias (an anchor that contains itself)")
        if nid in self.seen:
            self.expanded += 1
            if self.expanded > MAX_ALIAS_VALUES:
                raise YamlError(line, where, f"aliases expand to more than {MAX_ALIAS_VALUES} values "
                                             f"(a 'billion laughs' document?); refused")
        self.seen.add(nid)
        if depth > MAX_DEPTH:
            raise YamlError(line, where, f"nested more than {MAX_DEPTH} levels deep")
        if node.tag not in _ALLOWED:
            raise YamlError(line, where, f"YAML tag {node.tag!r} is not allowed "
                                         f"(only plain data: maps, lists, strings, numbers, booleans)")
        if isinstance(node, yaml.MappingNode):
            self.active.add(nid)
            try:
                n_merged = self.merged.get(nid)
                if n_merged is None:       # flatten once: merge keys (<<) put the merged pairs first
                    own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
                    try:
                        self.c.flatten_mapping(node)
                    except yaml.MarkedYAMLError as e:
                        mark = e.problem_mark or e.context_mark
                        raise YamlError(mark.line + 1 if mark else line, where,
                                        _one_line(f"{e.problem or e}")) from None
                    n_merged = self.merged[nid] = len(node.value) - own
                out: dict[Any, Any] = {}
                own_keys: set[Any] = set()
                for i, (knode, vnode) in enumerate(node.value):
                    kline = line if alias else knode.start_mark.line + 1
                    key = self.build(knode, path + ("<key>",), depth + 1, kline, alias)
                    if isinstance(key, (dict, list)):
                        raise YamlError(kline, where, "mapping keys must be scalars")
                    if i >= n_merged:      # a key written here; merged keys may be overridden, not repeated
                        if key in own_keys:
                            raise YamlError(kline, _Where(path + (key,)), f"duplicate key {key!r}")
                        own_keys.add(key)
                    out[key] = self.build(vnode, path + (key,), depth + 1, kline, alias)
                    self.lines[path + (key,)] = kline
                self.lines.pop(path + ("<key>",), None)
                return out
            finally:
                self.active.discard(nid)
        if isinstance(node, yaml.SequenceNode):
            self.active.add(nid)
            try:
                return [self.build(v, path + (i,), depth + 1, line, alias) for i, v in enumerate(node.value)]
            finally:
                self.active.discard(nid)
        if node.tag in (_INT, _FLOAT) and isinstance(node.value, str):
            why = _yaml11_number_trap(node.value)
            if why:
                raise YamlError(line, where, why)
        try:
            return self.c.construct_object(node, deep=True)
        except (ValueError, OverflowError, yaml.YAMLError) as e:
            value = node.value if isinstance(node.value, str) else ""
            shown = value if len(value) <= 40 else value[:20] + "..." + value[-10:]
            why = "too many digits" if "digits" in str(e) else _one_line(str(e))[:120]
            raise YamlError(line, where, f"cannot read {shown!r} as {node.tag.rsplit(':', 1)[-1]} ({why})") from None


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"


def _yaml11_number_trap(text: str) -> str | None:
    """Why a plain scalar PyYAML reads as a number by YAML 1.1's rules only is refused, or None.

    YAML 1.1 reads ``1:30`` as 90 (base 60) and ``017`` as 15 (octal); YAML 1.2 and every other reader
    take them as text or 17.  A cell file that means a time or a zero-padded number would silently get
    another value, so these spellings are refused and the message says what to write instead.
    """
    t = text.strip().lstrip("+-")
    if ":" in t:
        return (f"{text!r} is read as a base-60 number by YAML 1.1 (1:30 means 90); write the number itself, "
                f"or quote it if it is text")
    digits = t.replace("_", "")
    if len(digits) > 1 and digits[0] == "0" and digits.isdigit():
        return (f"{text!r} is read as an octal number by YAML 1.1 (017 means 15); write it without the leading "
                f"zero, or quote it if it is text")
    return None


class _Where:
    """``path`` as dotted text, computed only when an error needs it."""

    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return _dotted(tuple(p for p in self.path if p != "<key>")) or "(top)"


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


def line_for(lines: dict[Path, int], path: Path) -> int:
    """Line of the deepest known prefix of ``path`` (0 when nothing matches)."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return lines.get((), 0)


def non_finite(data: Any, path: Path = ()) -> list[tuple[Path, float]]:
    """Every NaN / infinite number in ``data`` (``.nan``, ``.inf``, ``1e400``), as (path, value)."""
    out: list[tuple[Path, float]] = []
    stack: list[tuple[Path, Any]] = [(path, data)]
    while stack:
        p, v = stack.pop()
        if isinstance(v, float):
            if not math.isfinite(v):
                out.append((p, v))
        elif isinstance(v, dict):
            stack.extend((p + (k,), x) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((p + (i,), x) for i, x in enumerate(v))
    out.sort(key=lambda t: [str(x) for x in t[0]])
    return out
