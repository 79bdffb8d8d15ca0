"""ROS 2 test isolation: LOCALHOST discovery and a ROS_DOMAIN_ID of this test session's own.

The domain starts from the pytest-xdist worker (distinct per worker of one run) or, without
xdist, from the pid, in 1..101, and is claimed with a lock file so that concurrent sessions on
this host never share one (``cell.ros.env.claim_domain_id``). It is set before any test creates an rclpy context and
restored afterwards. Fast DDS /dev/shm files that appeared during the session and that no live
process uses any more are removed at the end (a killed rclpy process cannot remove its own).

If rclpy (or the project's interfaces) cannot be imported, every test here is skipped with the
reason; ``make`` (``python -m cell.ros.setup_ros``) installs and builds them.
"""

from __future__ import annotations

import os

import pytest

from cell.ros.env import (
    DISCOVERY_RANGE_VAR,
    DOMAIN_VAR,
    PROFILE_VAR,
    claim_domain_id,
    fastdds_shm_files,
    remove_shm_files,
    xdist_domain_id,
)


def _import_error() -> str | None:
    try:
        import rclpy  # noqa: F401
        from axcell_interfaces.action import ExecuteSkill  # noqa: F401
    except Exception as e:  # ImportError, or a missing shared library (OSError)
        return f"{type(e).__name__}: {e}"
    return None


ROS_IMPORT_ERROR = _import_error()
SKIP_REASON = (
    f"ROS 2 not available in this interpreter ({ROS_IMPORT_ERROR}); "
    "run `make` or `python -m cell.ros.setup_ros` to install ROS 2 Jazzy and build the interfaces"
)


@pytest.fixture(scope="session", autouse=True)
def ros_isolation():
    """Set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and this session's ROS_DOMAIN_ID."""
    if ROS_IMPORT_ERROR is not None:
        pytest.skip(SKIP_REASON)
    # Start from the worker/pid-derived id and take the first one no other session holds.
    claim = claim_domain_id(xdist_domain_id())
    domain = claim.domain_id
    saved = {k: os.environ.get(k) for k in (DISCOVERY_RANGE_VAR, DOMAIN_VAR, PROFILE_VAR)}
    os.environ[DISCOVERY_RANGE_VAR] = "LOCALHOST"
    os.environ[DOMAIN_VAR] = str(domain)
    os.environ.pop(PROFILE_VAR, None)  # default Fast DDS transports unless a test opts in
    shm_before = fastdds_shm_files()
    try:
        yield {"domain_id": domain}
    finally:
        remove_shm_files(fastdds_shm_files() - shm_before)  # keeps files still in use
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        claim.release()


@pytest.fixture
def domain_id(ros_isolation) -> int:
    return ros_isolation["domain_id"]
