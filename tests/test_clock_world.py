"""The discrete-event clock and the world: ordering, timeouts, busy I/O, belts, eyes, infeed."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from sim.clock import SimClock
from sim.world import DEFECT_KINDS, InfeedConfig, VariantSpec, World, WorldConfig
from tests.conftest import run_sim


def test_waits_fire_in_time_order_with_fifo_ties():
    clock = SimClock()
    log: list[tuple[float, str]] = []

    async def worker(name: str, dt: float, n: int) -> None:
        for _ in range(n):
            await clock.sleep(dt)
            log.append((round(clock.now(), 6), name))

    async def main() -> None:
        await asyncio.gather(worker("a", 0.5, 4), worker("b", 0.25, 8))

    run_sim(clock, main())
    assert [t for t, _ in log] == sorted(t for t, _ in log)
    assert (1.0, "a") in log and log.index((1.0, "a")) < log.index((1.0, "b"))  # 'a' scheduled its wait first
    assert clock.now() == 2.0


def test_wait_for_times_out_in_simulated_time_without_wall_time():
    clock = SimClock()

    async def main() -> float:
        with pytest.raises(TimeoutError):
            await clock.wait_for(asyncio.Event().wait(), 3600.0)
        return clock.now()

    w0 = time.perf_counter()
    assert run_sim(clock, main()) == 3600.0
    assert time.perf_counter() - w0 < 2.0


def test_busy_block_freezes_time_until_real_io_completes():
    clock = SimClock()
    seen = {}

    async def io_request() -> None:
        async with clock.busy():
            await asyncio.sleep(0.05)  # real I/O: simulated time must not move meanwhile
            seen["t_during"] = clock.now()

    async def main() -> None:
        timer = asyncio.ensure_future(clock.sleep(10.0))
        await io_request()
        await timer

    run_sim(clock, main())
    assert seen["t_during"] == 0.0 and clock.now() == 10.0


def test_real_time_factor_paces_against_wall_clock():
    clock = SimClock()

    async def main() -> None:
        await clock.run(until=0.4, speed=2.0)

    w0 = time.perf_counter()
    asyncio.run(main())
    assert 0.15 <= time.perf_counter() - w0 < 1.0
    assert clock.now() == pytest.approx(0.4)


def _world(rate=60.0, seed=3, defects=None) -> World:
    cfg = WorldConfig(seed=seed, infeed=InfeedConfig(conveyor="belt", rate_ppm=rate, mix={"a": 1, "b": 1}, spawn_x=-1.0),
                      defect_rates=defects or {})
    variants = {n: VariantSpec(n, 0.19, 0.14, 0.045) for n in ("a", "b")}
    return World(cfg, variants)


def test_belt_carries_parts_past_eye_and_off_the_end():
    w = _world()
    belt = w.add_belt("belt", x_start=-1.2, x_end=1.0, y=0.5, z=0.0, width=0.4, nominal_speed=0.25)
    eye = w.add_eye("belt", x=0.0)
    edges: list[tuple[bool, float]] = []
    eye.listeners.append(lambda s, t: edges.append((s, t)))
    events: list[str] = []
    w.listeners.append(lambda what, p: events.append(what))

    async def main() -> None:
        belt.set_speed(0.25)
        w.start_infeed()
        await w.clock.sleep(60.0)

    run_sim(w.clock, main())
    spawned = events.count("spawned")
    assert 45 <= spawned <= 75  # about one a second
    rises = [t for s, t in edges if s]
    assert len(rises) == sum(1 for p in w.parts.values() if p.eye_time is not None)
    for p in w.parts.values():
        if p.eye_time is not None and p.state == "belt":  # leading edge reached the beam then
            x_at = p.x0 + 0.25 * (p.eye_time - p.created)
            assert x_at + 0.5 * 0.19 * abs(math.cos(p.yaw)) + 0.5 * 0.14 * abs(math.sin(p.yaw)) == pytest.approx(0.0, abs=1e-9)
    assert events.count("binned") == sum(1 for p in w.parts.values() if p.state == "bin")
    assert all(w.part_xy(p)[0] <= 1.0 + 1e-9 for p in w.parts.values() if p.state == "belt")


def test_stopping_the_belt_freezes_parts_and_eyes():
    w = _world()
    belt = w.add_belt("belt", x_start=-1.2, x_end=1.0, y=0.5, z=0.0, width=0.4, nominal_speed=0.25)

    async def main() -> None:
        belt.set_speed(0.25)
        w.start_infeed()
        await w.clock.sleep(10.0)
        belt.set_speed(0.0)
        before = {p.id: w.part_xy(p) for p in w.parts.values()}
        await w.clock.sleep(100.0)
        assert {p.id: w.part_xy(p) for p in w.parts.values()} == before

    run_sim(w.clock, main())


def test_defect_rates_and_streams_are_reproducible():
    rates = {k: 0.05 for k in DEFECT_KINDS}

    def run() -> list[tuple]:
        w = _world(rate=120, seed=11, defects=rates)
        belt = w.add_belt("belt", x_start=-1.2, x_end=1.0, y=0.5, z=0.0, width=0.4, nominal_speed=0.5)

        async def main() -> None:
            belt.set_speed(0.5)
            w.start_infeed()
            await w.clock.sleep(600.0)

        run_sim(w.clock, main())
        return [(p.id, p.variant.name, p.defects, round(p.yaw, 12), round(p.y, 12)) for p in w.parts.values()]

    a, b = run(), run()
    assert a == b
    share = sum(1 for _, _, d, _, _ in a if d) / len(a)
    assert 0.2 < share < 0.4  # 6 kinds × 5 %


def test_world_config_rejects_bad_rates():
    with pytest.raises(ValueError):
        WorldConfig(infeed=InfeedConfig(conveyor="c", mix={"a": 1}), defect_rates={"underfill": 0.8, "torn_film": 0.5})
    with pytest.raises(ValueError):
        InfeedConfig(conveyor="c", mix={"a": -1})


def test_overlapping_connects_share_one_attempt_and_its_error():
    """A cell node activating while the cell resets: both connect every device, which opens once."""
    from drivers.base import Device, DeviceConfig, DeviceContext
    from sim.clock import SimClock

    class Slow(Device):
        opened = 0
        fail = False

        async def _connect(self) -> None:
            type(self).opened += 1
            await asyncio.sleep(0.01)  # real I/O takes a while
            if self.fail:
                raise RuntimeError("refused")

    async def main():
        dev = Slow("d", DeviceConfig(), DeviceContext(clock=SimClock()))
        await asyncio.gather(dev.connect(), dev.connect(), dev.connect())
        assert dev.connected and Slow.opened == 1
        await dev.connect()  # connected: nothing more
        assert Slow.opened == 1
        bad = Slow("e", DeviceConfig(), DeviceContext(clock=SimClock()))
        bad.fail = True
        res = await asyncio.gather(bad.connect(), bad.connect(), return_exceptions=True)
        assert [str(r) for r in res] == ["refused", "refused"] and Slow.opened == 2 and not bad.connected
        bad.fail = False  # a later call tries again
        await bad.connect()
        assert bad.connected and Slow.opened == 3

    asyncio.run(main())
