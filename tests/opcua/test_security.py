"""Driver security against a secure sim sealer: Basic256Sha256, certificates, passwords, no None endpoint."""

from __future__ import annotations

import pytest
import pytest_asyncio
from pydantic import ValidationError

from drivers.opcua_machine import OpcuaMachine, SecurityRefusedError

from .conftest import make_driver

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure_sealer(pki):
    from drivers.clock import WallClock
    from sim.opcua_sealer import SealerModel, SealerParams, SealerServer, ServerSecurity

    sec = ServerSecurity(policies=("Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"),
                         cert=pki / "sim-sealer.der", key=pki / "sim-sealer.key.pem",
                         trusted_clients=pki / "trusted" / "clients", users={"axcell": "s3cret"},
                         allow_anonymous=False)
    model = SealerModel(SealerParams(cycle_time_s=0.05, index_time_s=0.01), WallClock())
    server = await SealerServer(model, security=sec).start()
    yield server
    await server.close()


def secure(pki, mode="SignAndEncrypt", **kw):
    return {"security": {"policy": "Basic256Sha256", "mode": mode, "pki_dir": str(pki)}, "username": "axcell",
            "password": "s3cret", "request_timeout_s": 2.0, **kw}


@pytest.mark.parametrize("mode", ["SignAndEncrypt", "Sign"])
async def test_secure_session_runs_cycles(secure_sealer, pki, mode):
    d = make_driver(secure_sealer.endpoint, **secure(pki, mode))
    await d.connect()
    try:
        await d.command("reset")
        assert (await d.cycle(timeout=5)).ok
    finally:
        await d.close()


async def test_password_from_environment(secure_sealer, pki, monkeypatch):
    monkeypatch.setenv("SEALER_PW", "s3cret")
    opts = secure(pki)
    opts.pop("password")
    d = make_driver(secure_sealer.endpoint, password_env="SEALER_PW", **opts)
    await d.connect()
    await d.close()


async def test_wrong_password_is_refused(secure_sealer, pki):
    d = make_driver(secure_sealer.endpoint, **{**secure(pki), "password": "guess"})
    with pytest.raises(SecurityRefusedError, match="user identity"):
        await d.connect()
    assert not d.connected


async def test_untrusted_client_certificate_is_refused(secure_sealer, pki, tmp_path):
    from drivers.opcua_certs import APPS, make_cert

    uri, usage = APPS["client"]
    rogue_cert, rogue_key = make_cert(tmp_path, "rogue", uri, usage)  # valid, but not in the trust list
    opts = secure(pki)
    opts["security"] = {"policy": "Basic256Sha256", "certificate": str(rogue_cert), "private_key": str(rogue_key),
                        "trusted_servers": str(pki / "trusted" / "servers")}
    d = make_driver(secure_sealer.endpoint, **opts)
    with pytest.raises(SecurityRefusedError):
        await d.connect()


async def test_untrusted_server_certificate_is_refused(secure_sealer, pki, tmp_path):
    import shutil

    (tmp_path / "other").mkdir()
    shutil.copy(pki / "server.der", tmp_path / "other")  # trusts some server, not this one
    opts = secure(pki)
    opts["security"] = {**opts["security"], "trusted_servers": str(tmp_path / "other")}
    d = make_driver(secure_sealer.endpoint, **opts)
    with pytest.raises(SecurityRefusedError):
        await d.connect()


async def test_none_endpoint_is_refused_by_a_secure_server(secure_sealer):
    d = make_driver(secure_sealer.endpoint)  # policy none, explicitly allowed on our side
    with pytest.raises(SecurityRefusedError):
        await d.connect()


async def test_policy_none_needs_explicit_allowance():
    with pytest.raises(ValidationError, match="allow_none"):
        OpcuaMachine.Config.model_validate({"endpoint": "opc.tcp://127.0.0.1:4840/", "security": {"policy": "none"}})
    with pytest.raises(ValidationError, match="pki_dir"):
        OpcuaMachine.Config.model_validate({"endpoint": "opc.tcp://127.0.0.1:4840/"})  # secure by default
