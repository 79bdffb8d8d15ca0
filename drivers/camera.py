"""Camera contract: triggered capture of one frame."""

from __future__ import annotations

import abc

from .base import Device
from .types import CameraCalibration, Frame


class Camera(Device, contract="camera"):
    """An area-scan camera.

    ``capture()`` triggers an exposure *now* and returns that frame (never an
    older buffered one).  ``Frame.stamp`` is the exposure time on the cell
    clock.  Raises DeviceTimeoutError when no frame arrives within ``timeout``
    and DeviceOfflineError when the stream is gone.
    """

    @property
    def calibration(self) -> CameraCalibration | None:
        """Intrinsics and pose in the cell frame, when calibrated."""
        return None

    @abc.abstractmethod
    async def capture(self, *, timeout: float | None = None) -> Frame:
        """Trigger and return one frame."""
