"""Device contracts (async abstract classes), shared types and errors.

Importing this package pulls no transport library: real implementations live
in their own modules (``drivers.ros2``, ``drivers.opcua_machine``, ``drivers.opencv_camera``)
and import rclpy/asyncua/OpenCV themselves.
"""

from .arm import Arm
from .base import Device, DeviceConfig, DeviceContext, device_class, registered_kinds
from .camera import Camera
from .clock import Clock, WallClock
from .conveyor import Conveyor
from .errors import *  # noqa: F401,F403
from .gripper import Gripper
from .io import DigitalIO
from .machine import Machine
from .types import Box, CameraCalibration, CycleResult, Frame, JointLimits, MachineStatus, Pose

CONTRACTS: dict[str, type[Device]] = {
    c.contract: c for c in (Arm, Gripper, Camera, Conveyor, DigitalIO, Machine)
}

__all__ = [
    "Arm", "Box", "Camera", "CameraCalibration", "Clock", "CONTRACTS", "Conveyor", "CycleResult",
    "Device", "DeviceConfig", "DeviceContext", "DigitalIO", "Frame", "Gripper", "JointLimits",
    "Machine", "MachineStatus", "Pose", "WallClock", "device_class", "registered_kinds",
]
