"""The web HMI in a real headless Chromium: Reset, Start, Execute, counts rise, screenshot, Stop.

Starts ``axcell run launch/packaging_cell.yaml --speed 20 --hmi-port 0`` (an
interactive run: nothing starts by itself) and drives the page with
Playwright's Python package and Debian's ``/usr/bin/chromium``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "build" / "test-artifacts"
TOKEN = "browser-test-token-0123"
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.timeout(180)


def _start_cell(run_dir: Path) -> tuple[subprocess.Popen, str, list[str]]:
    env = {**os.environ, "AXCELL_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cell.cli", "run", "launch/packaging_cell.yaml", "--speed", "20", "--hmi-port", "0",
         "--run-dir", str(run_dir), "--seed", "3"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    found: dict[str, str] = {}
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"HMI: (http://127\.0\.0\.1:\d+)/", line)
            if m:
                found["url"] = m.group(1)
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(120) or "url" not in found:
        proc.kill()
        pytest.fail("the cell did not serve its HMI:\n" + "".join(lines[-30:]))
    return proc, found["url"], lines


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium "
                                                   "(apt-get install chromium)")
def test_hmi_reset_start_execute_counts_rise(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    proc, url, lines = _start_cell(tmp_path / "run")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_api.sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROME_ARGS, bypass_csp=True,
                viewport={"width": 1500, "height": 1000})
            try:
                page = ctx.new_page()
                console_errors: list[str] = []
                page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
                page.goto(url + "/", wait_until="domcontentloaded")
                banner = page.locator("#state-banner")
                sync_api.expect(banner).to_have_attribute("data-state", "Stopped", timeout=15000)
                # only the legal commands are offered
                sync_api.expect(page.locator("#btn-reset")).to_be_visible()
                assert page.locator("#btn-start").count() == 0
                page.fill("#token", TOKEN)
                page.click("#token-save")
                page.click("#btn-reset")
                sync_api.expect(banner).to_have_attribute("data-state", "Idle", timeout=15000)
                page.click("#btn-start")
                sync_api.expect(banner).to_have_attribute("data-state", "Execute", timeout=15000)
                assert page.locator("#btn-stop").is_visible()
                page.wait_for_function("Number(document.getElementById('count-packed').textContent) >= 1",
                                       timeout=60000)
                first = int(page.inner_text("#count-packed"))
                page.wait_for_function(
                    f"Number(document.getElementById('count-packed').textContent) > {first}", timeout=60000)
                page.wait_for_function("document.querySelectorAll('#parts tr').length > 0", timeout=15000)
                page.wait_for_function("document.getElementById('camera').naturalWidth > 0", timeout=15000)
                time.sleep(2.5)  # a few trend samples
                shot = ARTIFACTS / "hmi_execute.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                page.click("#btn-stop")
                sync_api.expect(banner).to_have_attribute("data-state", "Stopped", timeout=20000)
                assert not [e for e in console_errors if "favicon" not in e], console_errors
            finally:
                ctx.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the cell did not shut down within 30 s of SIGTERM:\n" + "".join(lines[-30:]))
    assert rc == 0, "".join(lines[-30:])
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["parts"]["packed"] >= 2
    assert report["store"]["counts"]["packed"] == report["parts"]["packed"]
