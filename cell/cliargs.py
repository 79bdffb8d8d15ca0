"""Argument types and the user-error exception shared by every ``axcell`` subcommand."""

from __future__ import annotations

import argparse
import math
import os


class UserError(Exception):
    """A problem the user can fix; printed without a traceback, exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def speed_arg(text: str) -> float | None:
    """``--speed``: ``max`` (None) or a positive real-time factor."""
    if text == "max":
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed must be 'max' or a positive number, got {text!r}") from None
    if not (0 < v < 1e6):
        raise argparse.ArgumentTypeError(f"--speed must be 'max' or a positive number, got {text!r}")
    return v


def _finite(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def positive_arg(text: str) -> float:
    """A positive, finite number."""
    v = _finite(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return v


def nonnegative_arg(text: str) -> float:
    """A finite number >= 0."""
    v = _finite(text)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative finite number, got {text!r}")
    return v


MAX_SEED = 2**63 - 1   # stored as an SQLite INTEGER; numpy seeds must be >= 0


def seed_arg(text: str) -> int:
    """``--seed``: an integer in [0, 2**63 - 1]."""
    try:
        v = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_SEED}, got {text!r}")
    return v


def port_arg(text: str) -> int:
    """A TCP port: 1..65535, or 0 for any free port."""
    try:
        v = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535 (0: any free port), got {text!r}")
    return v


def _mkdir(p, failure: str) -> None:
    """Create folder ``p`` (and its parents); UserError (exit 2) with ``failure`` and the reason if it cannot be."""
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{failure} ({e.strerror or e.__class__.__name__})", 2) from None


def writable_dir(path, what: str) -> None:
    """Create ``path`` (a folder) or raise :class:`UserError` (exit 2) saying why it cannot be one."""
    from pathlib import Path

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{p}: {what} must be a folder, and this is a file", 2)
    _mkdir(p, f"{p}: cannot create {what}")
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"{p}: {what} is not writable", 2)


def writable_file(path, what: str) -> None:
    """Check, before any work, that ``path`` can be written as a file (its folder is created); UserError if not."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: {what} is a folder; give a file name", 2)
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{p}: cannot write {what}: {parent} is a file", 2)
    _mkdir(parent, f"{p}: cannot write {what}")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UserError(f"{p}: cannot write {what} (permission denied)", 2)
