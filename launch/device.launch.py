"""ros2 launch for one hardware device of a cell file as its own ROS 2 node process.

    ros2 launch launch/device.launch.py file:=launch/packaging_cell.yaml device:=sealer

Runs `axcell-device-node FILE --device NAME` (the same DeviceNode that `axcell run --transport
ros` serves): /<cell>/<device>/call, plus follow_joint_trajectory/joint_states for arms and
image_raw for cameras. Simulated twins are served by packaging_cell.launch.py instead.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration

DEVICE_NODE = "axcell-device-node"  # console entry point (pyproject [project.scripts])


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("file", description="cell file"),
        DeclareLaunchArgument("device", description="device name in the cell file"),
        ExecuteProcess(cmd=[DEVICE_NODE, LaunchConfiguration("file"), "--device", LaunchConfiguration("device")],
                       name=["device_", LaunchConfiguration("device")], output="screen"),
    ])
