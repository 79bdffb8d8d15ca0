"""Simulated time waits for OPC UA notifications: the sim sealer's gate and the driver that uses it.

Against a simulated server in the same process, the machine driver learns of state changes from its
subscription instead of reading every ``poll_interval_s``; the server's :class:`NotifyGate` holds the
simulated clock until each change of the watched state node has reached the driver. So a cycle ends
at the very instant the sealer reached Complete, with a handful of requests, the same on every run.
"""

from __future__ import annotations

import asyncio
import functools
import time

import pytest

from drivers.opcua_aspace import NotifyGate

pytestmark = pytest.mark.timeout(60)


@functools.lru_cache(maxsize=None)
def _run_cycles(n: int, *, gated: bool, poll: float = 0.05, max_hold_s: float = 2.0):
    """``n`` cycles of the driver against a sim sealer on one SimClock.

    Returns (cycle results, the sealer's transitions, requests the driver sent, gate)."""
    from drivers.base import DeviceContext
    from drivers.opcua_machine import OpcuaMachine
    from sim.clock import SimClock
    from sim.opcua_sealer import SealerModel, SealerParams, SealerServer

    async def main():
        clock = SimClock()
        model = SealerModel(SealerParams(cycle_time_s=2.3, index_time_s=0.7, telemetry_period_s=0.5), clock,
                            rng=lambda stream: __import__("numpy").random.default_rng(7))
        holder: dict = {}

        async def sim_servers(profile: str, name: str, options: dict):
            server = await SealerServer(model).start()
            server.notify_gate.max_hold_s = max_hold_s
            holder["server"] = server
            if not gated:  # a server that offers no gate: the driver polls
                return type("NoGate", (), {"endpoint": server.endpoint, "close": server.close})()
            return server

        opts = {"simulate": True, "security": {"policy": "none", "allow_none": True}, "poll_interval_s": poll}
        driver = OpcuaMachine("sealer", OpcuaMachine.Config.model_validate(opts),
                              DeviceContext(clock=clock, resources={"sim_servers": sim_servers}, cell="t"))
        requests: list[str] = []
        send = driver._request

        async def counted(fn, what, **kw):
            requests.append(what)
            return await send(fn, what, **kw)

        driver._request = counted  # type: ignore[method-assign]
        results = []

        async def work():
            try:
                await driver.connect()
                await driver.command("reset")
                requests.clear()
                for _ in range(n):
                    await clock.sleep(0.37)  # start off any polling grid
                    results.append(await driver.cycle(timeout=30))
            finally:
                clock.stop()

        task = asyncio.ensure_future(work())
        await clock.run(until=600)
        await task
        await driver.close()
        return results, list(model.transitions), requests, holder["server"].notify_gate

    return asyncio.run(main())


def test_gated_cycles_end_at_the_instant_of_complete_with_few_requests():
    results, transitions, requests, gate = _run_cycles(3, gated=True)
    completes = [t for (t, _old, new, _cause) in transitions if new == "Complete"]
    assert len(results) == 3 and len(completes) >= 3
    for res, t in zip(results, completes[-3:]):
        assert res.ok
        assert res.finished == pytest.approx(t, abs=1e-9)  # not the next poll after it
    # per cycle: the cycles counter, start, the telemetry at the end, a reset (the state comes from
    # the subscription; a safety read per event_poll_interval_s of clock time at most)
    per_cycle = len(requests) / 3
    assert per_cycle <= 4 + (2.3 + 0.7 + 1.0) / 1.0, requests
    assert gate is not None and gate.holds >= 3 and gate.lost == 0


def test_without_a_gate_the_driver_polls_and_ends_on_its_grid():
    results, transitions, requests, _ = _run_cycles(2, gated=False, poll=0.05)
    completes = [t for (t, _old, new, _cause) in transitions if new == "Complete"]
    for res, t in zip(results, completes[-2:]):
        assert res.ok and t <= res.finished < t + 0.05 + 1e-9
    assert len(requests) / 2 > 40  # a read every 50 ms through a 3 s cycle


def test_gated_cycles_are_the_same_on_every_run():
    a = [(r.started, r.finished, r.telemetry) for r in _run_cycles(3, gated=True)[0]]
    b = [(r.started, r.finished, r.telemetry) for r in _run_cycles.__wrapped__(3, gated=True)[0]]
    assert a == b


def test_gate_holds_the_clock_until_delivery_and_lets_go_of_a_lost_notification():
    from sim.clock import SimClock

    async def main():
        clock = SimClock()
        gate = NotifyGate(clock, max_hold_s=0.3)
        gate.changed("ns=2;s=Unwatched", 1)  # nobody watches it: no hold
        assert not gate.pending("ns=2;s=Unwatched")
        gate.watch("ns=2;s=State")
        seen: list[float] = []

        async def sleeper():
            await clock.sleep(1.0)
            seen.append(clock.now())
            clock.stop()

        async def deliver_late():
            gate.changed("ns=2;s=State", 5)
            gate.changed("ns=2;s=State", 6)  # changed again before delivery: 6 is what counts
            await asyncio.sleep(0.05)  # wall time: the clock must not move meanwhile
            assert clock.now() == 0.0 and gate.pending("ns=2;s=State")
            gate.delivered("ns=2;s=State", 5)
            assert gate.pending("ns=2;s=State")
            gate.delivered("ns=2;s=State", 6)
            assert not gate.pending("ns=2;s=State")

        t = asyncio.ensure_future(sleeper())
        d = asyncio.ensure_future(deliver_late())
        await clock.run()
        await asyncio.gather(t, d)
        assert seen == [1.0] and gate.lost == 0
        # a notification that never comes: the clock goes on after max_hold_s of wall time
        t0 = time.perf_counter()
        gate.changed("ns=2;s=State", 7)
        t = asyncio.ensure_future(sleeper())
        await clock.run()
        await t
        assert time.perf_counter() - t0 >= 0.25 and gate.lost == 1 and seen[-1] == 2.0
        # a server that goes away releases what it held
        gate.changed("ns=2;s=State", 8)
        assert gate.pending("ns=2;s=State")
        gate.release_all()
        assert not gate.pending("ns=2;s=State")

    asyncio.run(main())
