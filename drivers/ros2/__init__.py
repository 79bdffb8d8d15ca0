"""ROS 2 proxy drivers (``ros2.*`` kinds): the driver contracts implemented over ROS 2.

Registered through the ``axcell.devices`` entry point ``ros2 = "drivers.ros2"``. The proxies
need a transport (bridge + node) from the composition root: ``ctx.resources["ros"]`` or
``drivers.ros2.transport.set_default_transport`` (see ``drivers/ros2/transport.py``).
"""

from .proxies import PROXY_KINDS, Ros2Arm, Ros2Camera, Ros2Conveyor, Ros2Gripper, Ros2IO, Ros2Machine
from .transport import Handoff, RosTransport, get_transport, set_default_transport

__all__ = ["Handoff", "PROXY_KINDS", "Ros2Arm", "Ros2Camera", "Ros2Conveyor", "Ros2Gripper", "Ros2IO",
           "Ros2Machine", "RosTransport", "get_transport", "set_default_transport"]
