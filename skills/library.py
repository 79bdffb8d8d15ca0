"""Imports every built-in skill so that they register by name."""

from . import calibrate, handling, inspect, machine, motion, sensing  # noqa: F401
