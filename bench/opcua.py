"""OPC UA benchmarks (asyncua, everything on 127.0.0.1, one process and event loop).

    python bench/opcua.py [--n 200] [--json FILE]

1. Southbound: the sealer round trip through the driver (``cycle()``: Reset, Start, wait for
   Complete by subscription at 10 ms publishing, read the cycle telemetry; the sim sealer's own
   cycle is 1 ms) against a raw asyncua ``read_value`` and ``write_value`` on the same server,
   measured in the same run.
2. Northbound: a PackML command (Abort / Clear alternately, called by an operator) until a client
   subscribed to ``BaseStateMachine/CurrentState`` at a 10 ms publishing interval sees the new
   state; against a raw method call (SetUnitMode) round trip on the same server.  The northbound
   session is Basic256Sha256 SignAndEncrypt with a username (the server has no None endpoint).  Goal: <= 20 ms
   median.
3. Simulated: what one sealer cycle of the demo cell costs the cell's thread: ``status()`` and
   ``cycle()`` through the driver against the sim sealer on the discrete-event clock (the
   notification gate on, the demo's sealer options), as CPU ms per cycle, with the requests the
   driver sent, the publish responses and the data-change notifications it received per cycle.

Prints median and p99 (ms) and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asyncua import Client, ua  # noqa: E402


def stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]
    return {"median_ms": round(statistics.median(xs) * 1000, 3), "p99_ms": round(p99 * 1000, 3), "n": len(xs)}


async def southbound(n: int) -> dict[str, dict]:
    from drivers.base import DeviceContext
    from drivers.clock import WallClock
    from drivers.opcua_machine import OpcuaMachine
    from sim.opcua_sealer import NS_URI, SealerModel, SealerParams, SealerServer

    model = SealerModel(SealerParams(cycle_time_s=0.001, index_time_s=0.0), WallClock())
    server = await SealerServer(model).start()
    drv = OpcuaMachine("sealer", OpcuaMachine.Config.model_validate({
        "endpoint": server.endpoint, "security": {"policy": "none", "allow_none": True},
        "publishing_interval_ms": 10, "poll_interval_s": 0.05}), DeviceContext(clock=WallClock()))
    await drv.connect()
    raw = Client(server.endpoint)
    await raw.connect()
    try:
        ns = await raw.get_namespace_index(NS_URI)
        var = raw.get_node(ua.NodeId("Sealer.Machine.SealTemperature", ns))
        wvar = raw.get_node(ua.NodeId("Sealer.Command.CycleTime", ns))
        await drv.command("reset")
        for _ in range(10):  # warm-up
            await drv.cycle()
            await var.read_value()
        cyc, rd, wr = [], [], []
        for _ in range(n):
            t = time.perf_counter()
            await drv.cycle()
            cyc.append(time.perf_counter() - t)
            t = time.perf_counter()
            await var.read_value()
            rd.append(time.perf_counter() - t)
            t = time.perf_counter()
            await wvar.write_value(ua.Variant(0.001, ua.VariantType.Double))
            wr.append(time.perf_counter() - t)
    finally:
        await raw.disconnect()
        await drv.close()
        await server.close()
    return {"sealer_round_trip": stats(cyc), "raw_read": stats(rd), "raw_write": stats(wr)}


async def northbound(n: int) -> dict[str, dict]:
    from cell.config import OpcuaSpec, load_cell
    from cell.opcua import serve_northbound
    from cell.runtime import Cell

    import tempfile

    from drivers.opcua_certs import generate

    cfg = load_cell(REPO / "launch" / "packaging_cell.yaml")
    cell = Cell(cfg, seed=1)
    pki = Path(tempfile.mkdtemp(prefix="axcell-bench-pki-"))
    generate(pki)
    # secure by default: no None endpoint; the operator logs in over Basic256Sha256 SignAndEncrypt
    nb = await serve_northbound(cell, OpcuaSpec(users={"op": {"role": "operator", "password": "bench"}}), 0,
                                pki_dir=pki, refresh_s=3600)
    c = Client(nb.endpoint)
    c.application_uri = "urn:axcell:client"
    await c.set_security_string(f"Basic256Sha256,SignAndEncrypt,{pki / 'client.der'},{pki / 'client.key.pem'}")
    c.set_user("op")
    c.set_password("bench")
    await c.connect()
    lat, raw = [], []
    try:
        P = await c.get_namespace_index("http://opcfoundation.org/UA/PackML/")
        (unit,) = await (await c.nodes.objects.get_child(f"{P}:PackMLObjects")).get_children()
        base = await unit.get_child(f"{P}:BaseStateMachine")
        queue: asyncio.Queue = asyncio.Queue()

        class Handler:
            def datachange_notification(self, node, val, data):
                queue.put_nowait((time.perf_counter(), val.Text))

        sub = await c.create_subscription(10, Handler())
        await sub.subscribe_data_change(await base.get_child("0:CurrentState"))
        await queue.get()  # the initial value
        abort, clear = ua.QualifiedName("Abort", P), ua.QualifiedName("Clear", P)
        abort_id = (await base.get_child(abort)).nodeid
        clear_id = (await base.get_child(clear)).nodeid

        async def command(mid, want: set[str]) -> float:
            while not queue.empty():
                queue.get_nowait()
            t0 = time.perf_counter()
            await base.call_method(mid)
            while True:
                t, text = await asyncio.wait_for(queue.get(), 5)
                if text in want:
                    return t - t0

        for i in range(n + 10):
            d1 = await command(abort_id, {"Aborting", "Aborted"})
            await asyncio.sleep(0.02)  # let Aborting reach Aborted
            d2 = await command(clear_id, {"Cleared"})
            await asyncio.sleep(0.02)
            if i >= 10:
                lat += [d1, d2]
            t = time.perf_counter()
            await unit.call_method(ua.QualifiedName("SetUnitMode", P), ua.Variant(1, ua.VariantType.Int32))
            if i >= 10:
                raw.append(time.perf_counter() - t)
        await sub.delete()
    finally:
        await c.disconnect()
        await nb.stop()
        await cell.close()
    return {"packml_command_to_notification": stats(lat), "raw_method_call": stats(raw)}


def simulated(n: int) -> dict[str, float]:
    from drivers.base import DeviceContext
    from drivers.opcua_machine import OpcuaMachine
    from sim.clock import SimClock
    from sim.opcua_sealer import SealerModel, SealerParams, SealerServer

    counts = {"requests": 0, "publishes": 0, "notifications": 0}
    cpu: list[float] = []

    async def main() -> None:
        clock = SimClock()
        model = SealerModel(SealerParams(cycle_time_s=1.5, index_time_s=0.6, jam_probability=0.01), clock)

        async def sim_servers(profile: str, name: str, options: dict) -> SealerServer:
            return await SealerServer(model).start()

        drv = OpcuaMachine("sealer", OpcuaMachine.Config.model_validate({
            "simulate": True, "security": {"policy": "none", "allow_none": True}}),
            DeviceContext(clock=clock, resources={"sim_servers": sim_servers}, cell="bench"))
        send, notified = drv._request, drv._on_datachange

        async def request(*a: object, **kw: object) -> object:
            counts["requests"] += 1
            return await send(*a, **kw)

        def datachange(*a: object) -> None:
            counts["notifications"] += 1
            notified(*a)

        drv._request, drv._on_datachange = request, datachange  # type: ignore[method-assign]

        async def work() -> None:
            try:
                await drv.connect()
                await drv.command("reset")
                callbacks = drv.client.uaclient._subscription_callbacks  # noqa: SLF001 - counting only
                for sid, cb in list(callbacks.items()):
                    def publish(result: object, cb=cb) -> object:
                        counts["publishes"] += 1
                        return cb(result)
                    callbacks[sid] = publish
                for k in counts:
                    counts[k] = 0
                for _ in range(n):
                    await clock.sleep(10.0)
                    t = time.process_time()
                    await drv.status()
                    try:
                        await drv.cycle(timeout=30)
                    except Exception:  # noqa: BLE001 - a jam: make ready again, as the cell does
                        await drv.command("reset")
                    cpu.append(time.process_time() - t)
            finally:
                clock.stop()

        task = asyncio.ensure_future(work())
        await clock.run()
        await task
        await drv.close()

    asyncio.run(main())
    return {"cpu_ms_per_cycle_median": round(statistics.median(cpu) * 1000, 3),
            **{f"{k}_per_cycle": round(v / n, 2) for k, v in counts.items()}}


async def main(n: int) -> dict:
    out = {**await southbound(n), **await northbound(n)}
    out["ratios"] = {
        "sealer_round_trip / raw_read": round(out["sealer_round_trip"]["median_ms"] / out["raw_read"]["median_ms"], 1),
        "sealer_round_trip / raw_write": round(out["sealer_round_trip"]["median_ms"] / out["raw_write"]["median_ms"], 1),
        "packml_command_to_notification / raw_method_call":
            round(out["packml_command_to_notification"]["median_ms"] / out["raw_method_call"]["median_ms"], 1),
    }
    out["goal_northbound_median_le_20ms"] = out["packml_command_to_notification"]["median_ms"] <= 20.0
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    res = asyncio.run(main(args.n))
    res["simulated_sealer_cycle"] = simulated(args.n)
    for k, v in res.items():
        if isinstance(v, dict) and "median_ms" in v:
            print(f"{k:<34} median {v['median_ms']:8.3f} ms   p99 {v['p99_ms']:8.3f} ms   (n={v['n']})")
    for k, v in res["ratios"].items():
        print(f"ratio {k:<50} {v}x")
    print(f"northbound goal (median <= 20 ms at 10 ms publishing): {'met' if res['goal_northbound_median_le_20ms'] else 'MISSED'}")
    print("simulated sealer cycle (status + cycle on the discrete-event clock): "
          + ", ".join(f"{k} {v}" for k, v in res["simulated_sealer_cycle"].items()))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
