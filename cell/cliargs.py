"""Argument types and the user-error exception shared by every ``axcell`` subcommand."""

from __future__ import annotations

import argparse
import math


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
