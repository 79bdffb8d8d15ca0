"""Safe YAML loading that remembers where every value came from.

The loader composes the node graph with PyYAML's SafeLoader and builds plain
Python objects itself, refusing every non-standard tag (``!!python/object``,
custom ``!tags``) and duplicate keys.  It returns the data plus a map from
key path (tuple of keys/indices) to 1-based line number, so validation errors
can say ``cell.yaml:42: devices.3.options.speed: ...``.
"""

from __future__ import annotations

from typing import Any

import yaml

_ALLOWED = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq",
}

Path = tuple[Any, ...]


class YamlError(Exception):
    """A YAML problem at a line: ``line`` is 1-based (0 when unknown)."""

    def __init__(self, line: int, path: str, message: str) -> None:
        self.line, self.path, self.message = line, path, message
        super().__init__(f"{line}: {path}: {message}")


def load(text: str) -> tuple[Any, dict[Path, int]]:
    """Parse ``text``; raise :class:`YamlError` on syntax errors or forbidden tags."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 0
        raise YamlError(line, "(syntax)", f"{e.problem or e}".strip()) from None
    except yaml.YAMLError as e:
        raise YamlError(0, "(syntax)", str(e)) from None
    lines: dict[Path, int] = {}
    if node is None:
        return None, lines
    constructor = yaml.SafeLoader("")
    return _build(node, (), lines, constructor), lines


def _build(node: yaml.Node, path: Path, lines: dict[Path, int], c: yaml.SafeLoader) -> Any:
    lines[path] = node.start_mark.line + 1
    if node.tag not in _ALLOWED:
        raise YamlError(node.start_mark.line + 1, _dotted(path) or "(top)",
                        f"YAML tag {node.tag!r} is not allowed (only plain data: maps, lists, strings, numbers, booleans)")
    if isinstance(node, yaml.MappingNode):
        c.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            key = _build(knode, path + ("<key>",), lines, c)
            if isinstance(key, (dict, list)):
                raise YamlError(knode.start_mark.line + 1, _dotted(path), "mapping keys must be scalars")
            if key in out:
                raise YamlError(knode.start_mark.line + 1, _dotted(path + (key,)), f"duplicate key {key!r}")
            out[key] = _build(vnode, path + (key,), lines, c)
            lines[path + (key,)] = knode.start_mark.line + 1
        lines.pop(path + ("<key>",), None)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, path + (i,), lines, c) for i, v in enumerate(node.value)]
    return c.construct_object(node, deep=True)


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
