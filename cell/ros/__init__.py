"""ROS 2 transport for the axcell cell.

ROS 2 is a transport at the edge: importing ``cell.ros`` does not import rclpy. Import the
submodules that need it explicitly:

- ``cell.ros.env``: pure-Python isolation helpers (``ros_env``, ``ensure_ros_isolation``,
  domain picking, /dev/shm cleanup); safe to import without ROS 2 installed.
- ``cell.ros.bridge``: ``RosBridge``, the one asyncio <-> rclpy bridge (imports rclpy).
- ``cell.ros.setup_ros``: installs ROS 2 Jazzy wheels into a venv and builds the
  ``axcell_interfaces`` (and, if missing, ``control_msgs``) packages; run by ``make``.
- ``cell.ros.lockstep`` and ``cell.ros.replica``: ``--processes``, one process per device node
  with a replica of the simulated world in each and their clocks in lock-step.
- ``cell/ros/interfaces/``: the interface package sources (.msg/.srv/.action).
"""
