"""cell.heap.keep_heap: an inspection process reuses its frames' pages instead of faulting fresh ones in."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# load a saved model (as `axcell vision inspect` and `axcell run` do), inspect frames, print the minor page
# faults per frame after a warm-up
PROBE = r"""
import resource, sys
import numpy as np
sys.path.insert(0, {repo!r})
if {keep}:
    from cell.heap import keep_heap
    assert keep_heap()
from skills.vision import Inspector
ins = Inspector.load({model!r})
frames = np.load({frames!r})
for f in frames[:3]:
    ins.inspect(f)
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for f in frames[3:]:
    ins.inspect(f)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / (len(frames) - 3))
"""


def _faults_per_frame(keep: bool, model: Path, frames: Path) -> float:
    code = PROBE.format(repo=str(REPO), keep=keep, model=str(model), frames=str(frames))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_heap_stops_per_frame_page_faults_of_a_loaded_model(tmp_path):
    from sim.render import PRODUCTS, Lighting, PartSpec, make_top_down_calibration, render_scene
    from skills.vision import Inspector

    app = PRODUCTS["kimchi"]
    cal = make_top_down_calibration(1280, 1024, (math.hypot(app.length_mm, app.width_mm) + 60) / 1024)
    rng = np.random.default_rng(4)

    def frame():
        part = PartSpec(app, x=float(rng.uniform(-0.02, 0.02)), y=float(rng.uniform(-0.02, 0.02)),
                        yaw=float(rng.uniform(-math.pi, math.pi)), seed=int(rng.integers(1 << 31)))
        return render_scene([part], cal, lighting=Lighting.random(rng), rng=rng)

    model = Inspector().fit([frame() for _ in range(8)]).save(tmp_path / "m.npz")
    frames = tmp_path / "frames.npy"
    np.save(frames, np.stack([frame() for _ in range(9)]))
    plain = _faults_per_frame(False, model, frames)
    kept = _faults_per_frame(True, model, frames)
    # glibc maps each multi-megabyte buffer of a frame afresh (measured: about 1,100 faults a frame, ~1.5 ms);
    # with the heap kept, the pages are reused
    assert plain > 200, plain
    assert kept < plain / 10, (kept, plain)


def test_keep_heap_is_idempotent():
    from cell.heap import keep_heap

    first = keep_heap()
    assert keep_heap() == first
