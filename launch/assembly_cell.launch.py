"""ros2 launch for the assembly (kitting) cell (needs a full ROS 2 Jazzy install with `launch`).

    ros2 launch launch/assembly_cell.launch.py [speed:=1.0] [seed:=1]

Runs what `axcell run launch/assembly_cell.yaml --transport ros` runs: the lifecycle cell node
/assembly_cell/cell together with the device nodes of the cell file's simulated twins and /clock,
all in one process, since the twins share one simulated world and clock. The press is reached
over OPC UA by the cell node's machine device. Real hardware devices of a cell file get a
process each through device.launch.py.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration

CELL_FILE = str(Path(__file__).resolve().with_name("assembly_cell.yaml"))
CELL_NODE = "axcell-cell-node"  # console entry point (pyproject [project.scripts])


def generate_launch_description():
    args = ["--speed", LaunchConfiguration("speed"), "--seed", LaunchConfiguration("seed")]
    return LaunchDescription([
        DeclareLaunchArgument("speed", default_value="1.0", description="simulated time / real time"),
        DeclareLaunchArgument("seed", default_value="1", description="simulation seed"),
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
        ExecuteProcess(cmd=[CELL_NODE, CELL_FILE, *args], name="assembly_cell", output="screen"),
    ])
