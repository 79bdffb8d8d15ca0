"""ros2 launch for the packaging cell (needs a full ROS 2 Jazzy install with `launch`).

    ros2 launch launch/packaging_cell.launch.py [speed:=1.0] [seed:=1] [record:=run.mcap]

Starts the same nodes with the same parameters as `axcell run launch/packaging_cell.yaml
--transport ros`: the cell node (lifecycle, /packaging_cell/cell) with the device nodes of the
simulated twins and /clock in one process (the twins share one simulated world and clock).
Hardware devices of a cell file are started one process each with device.launch.py.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration

CELL_FILE = str(Path(__file__).resolve().with_name("packaging_cell.yaml"))
CELL_NODE = "axcell-cell-node"  # console entry point (pyproject [project.scripts])


def generate_launch_description():
    cmd = [CELL_NODE, CELL_FILE, "--speed", LaunchConfiguration("speed"), "--seed", LaunchConfiguration("seed")]
    return LaunchDescription([
        DeclareLaunchArgument("speed", default_value="1.0", description="simulated time / real time"),
        DeclareLaunchArgument("seed", default_value="1"),
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
        ExecuteProcess(cmd=cmd, name="packaging_cell", output="screen"),
    ])
