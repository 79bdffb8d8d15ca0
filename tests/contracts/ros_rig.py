"""The ``ros`` contract rig: the sim twins served as ROS 2 device nodes, tested through the proxies.

Same simulated cell as the ``sim`` rig; every device under test is a ``ros2.*`` proxy whose
calls cross real DDS (one RosBridge, SingleThreadedExecutor) to a device node serving the twin.
"""

from __future__ import annotations

import os


def ros_rig():
    from cell.ros.env import claim_domain_id, ensure_ros_isolation
    from cell.ros.bridge import RosBridge
    from cell.ros.runtime import serve_devices
    from tests.contracts.conftest import sim_rig

    global _CLAIM
    if not os.environ.get("ROS_DOMAIN_ID"):
        _CLAIM = claim_domain_id()  # held for the test session
        os.environ["ROS_DOMAIN_ID"] = str(_CLAIM.domain_id)
    ensure_ros_isolation()
    base = sim_rig()
    cell = base.cell
    bridge = RosBridge(name="contract-rig")
    try:
        twins = {dev.name: dev for dev in base.twins.values()}
        _transport, proxies, _nodes = serve_devices(bridge, twins, cell.clock, cell.name)
    except BaseException:
        bridge.close()
        raise
    by_contract = {c: proxies[t.name] for c, t in base.twins.items()}
    base.devices = by_contract
    base.teardown = bridge.close
    return base


_CLAIM = None
