"""Typed error hierarchy shared by every device contract.

Every error a driver raises derives from :class:`DeviceError`, so callers can
catch one base class and still tell a timeout from a fault.  Skills translate
these errors into :class:`skills.base.SkillResult` statuses; they never let a
driver exception escape a tree tick.
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base class of every error raised by a device implementation."""

    def __init__(self, message: str, *, device: str | None = None) -> None:
        self.device = device
        super().__init__(f"{device}: {message}" if device else message)


class NotConnectedError(DeviceError):
    """An operation was called before ``connect()`` or after ``close()``."""


class DeviceTimeoutError(DeviceError, TimeoutError):
    """The device did not answer within the caller's ``timeout``."""


class DeviceOfflineError(DeviceError, ConnectionError):
    """The device (or its transport) is unreachable."""


class DeviceFaultError(DeviceError):
    """The device reports a fault (jam, e-stop, drive error, Bad status)."""


class ConfigurationError(DeviceError, ValueError):
    """The device's configuration is inconsistent with the device itself."""


class MotionTargetError(DeviceError, ValueError):
    """A motion target was refused before any motion started."""


class InvalidTargetError(MotionTargetError):
    """The target holds NaN, inf, or has the wrong number of values."""


class JointLimitError(MotionTargetError):
    """A joint target lies outside the joint's position limits."""


class WorkspaceError(MotionTargetError):
    """A Cartesian target lies outside the configured workspace box."""


class UnreachableError(MotionTargetError):
    """Inverse kinematics found no solution for a Cartesian target."""


class GraspError(DeviceError):
    """The gripper failed to acquire or lost the object."""
