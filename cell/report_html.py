"""``axcell report RUN_DIR``: a self-contained HTML run report computed from the traceability store.

Everything is derived from the store's records (parts, PackML state changes
with their stop reasons, alarms), so the OEE adds up from the records:
OEE = A × P × Q = good / (design speed × planned time).  Plots are inline SVG
(no scripts, no CDN): throughput and OEE over time, cycle-time histogram,
reject Pareto by defect, state timeline.
"""

from __future__ import annotations

import html
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

from . import oee as oee_mod
from .packml import State
from .store import station_counts

COLORS = {
    "Execute": "#1e9e4a", "Idle": "#2f7fd6", "Held": "#e0a000", "Holding": "#e0a000", "Unholding": "#e0a000",
    "Suspended": "#c9b600", "Suspending": "#c9b600", "Unsuspending": "#c9b600", "Stopped": "#5b6572",
    "Stopping": "#7b8592", "Aborted": "#d23a3a", "Aborting": "#d23a3a", "Clearing": "#d23a3a",
    "Resetting": "#3b8fb0", "Starting": "#3b8fb0", "Completing": "#6a5acd", "Complete": "#6a5acd",
}


class ReportError(Exception):
    pass


# -- data ------------------------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A run directory's JSON file as a mapping; :class:`ReportError` naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ReportError(f"{path}: cannot read {what} ({e.__class__.__name__}: {e})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: {what} is not a JSON object ({type(data).__name__})")
    return data


def load_run(run_dir: Path, run_id: str | None = None) -> dict[str, Any]:
    """Everything the report shows, read (read-only) from the run directory's store.

    A damaged run directory (unreadable ``run.json``, a store that is not SQLite, lacks tables or holds
    malformed rows) raises :class:`ReportError` naming the file; nothing is ever written to the store.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run directory" if not run_dir.exists()
                          else f"{run_dir}: not a run directory (give the folder that holds run.json)")
    meta: dict[str, Any] = {}
    if (run_dir / "run.json").is_file():
        meta = _read_json(run_dir / "run.json", "run.json")
    store = meta.get("store")
    if store is not None and not isinstance(store, str):
        raise ReportError(f"{run_dir / 'run.json'}: store: expected a file path, got {store!r}")
    db = Path(store or run_dir / "cell.sqlite")
    if not db.is_file():
        raise ReportError(f"{run_dir}: no traceability store (looked for {db})")
    try:
        return _load_store(run_dir, db, meta, run_id)
    except sqlite3.Error as e:
        raise ReportError(f"{db}: unreadable traceability store ({e.__class__.__name__}: {e})") from None
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ReportError(f"{db}: damaged traceability store ({e.__class__.__name__}: {e})") from None


def _load_store(run_dir: Path, db: Path, meta: dict[str, Any], run_id: str | None) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rid = run_id or meta.get("run_id")
        if rid is None:
            row = conn.execute("SELECT run_id FROM runs ORDER BY started_wall DESC LIMIT 1").fetchone()
            if row is None:
                raise ReportError(f"{db}: no runs recorded")
            rid = row[0]
        run = conn.execute("SELECT * FROM runs WHERE run_id = ?", (rid,)).fetchone()
        if run is None:
            raise ReportError(f"{db}: no run {rid}")
        parts = [dict(r) for r in conn.execute("SELECT * FROM parts WHERE run_id = ? ORDER BY seq", (rid,))]
        for p in parts:
            p["defects"] = json.loads(p["defects"] or "[]")
        states = [dict(r) for r in conn.execute("SELECT * FROM states WHERE run_id = ? ORDER BY seq", (rid,))]
        alarms = [dict(r) for r in conn.execute("SELECT * FROM alarms WHERE run_id = ? ORDER BY alarm_id", (rid,))]
        acc = {r[0]: r[1] for r in conn.execute("SELECT name, value FROM counters")}
        by_station = station_counts(conn, rid)  # empty for a store from before the case stations
    finally:
        conn.close()
    run_meta = json.loads(run["meta"] or "{}")
    names = run_meta.get("case_stations") if isinstance(run_meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        names = []
    names = list(dict.fromkeys(names + list(by_station["cases"]) + list(by_station["packed"])))
    stations = {n: {"cases": by_station["cases"].get(n, 0), "packed": by_station["packed"].get(n, 0)} for n in names}
    report_json: dict[str, Any] = {}
    if (run_dir / "report.json").is_file():
        try:
            report_json = _read_json(run_dir / "report.json", "report.json")
        except ReportError:
            pass  # the store is the record; report.json only adds the run length
    if not isinstance(report_json.get("oee"), dict):
        report_json.pop("oee", None)
    try:
        float(report_json.get("sim_seconds") or 0.0)
    except (TypeError, ValueError):
        report_json.pop("sim_seconds", None)
    design = float(meta.get("design_speed_ppm") or run_meta.get("design_speed_ppm")
                   or (report_json.get("oee") or {}).get("design_speed_ppm") or 0.0)
    times = [s["t"] for s in states] + [p[k] for p in parts for k in ("closed_at", "arrival") if p.get(k) is not None]
    end = max([float(report_json.get("sim_seconds") or 0.0)] + times) if times else 0.0
    return {"run_id": rid, "cell": run["cell"], "started": run["started_wall"], "ended": run["ended_wall"],
            "seed": run["seed"], "db": str(db), "parts": parts, "states": states, "alarms": alarms, "acc": acc,
            "design_speed_ppm": design, "end": end, "report": report_json, "stations": stations}


def _reason(s: dict[str, Any]) -> oee_mod.Reason | None:
    """The stop reason (first-out) recorded with a state change, or None."""
    if s["stop_reason"] is None and s["stop_category"] is None:
        return None
    return (s["stop_reason"] or "", s["stop_category"] or "")


def intervals(states: list[dict], end: float) -> list[dict[str, Any]]:
    """State intervals with the stop reason in force (the OEE tracker's rule, :func:`oee.reason_in_force`)."""
    out = []
    reason: oee_mod.Reason | None = None
    for i, s in enumerate(states):
        if i:
            reason = oee_mod.reason_in_force(reason, State.parse(s["source"]), State.parse(s["target"]), _reason(s))
        t1 = states[i + 1]["t"] if i + 1 < len(states) else end
        if t1 > s["t"]:
            out.append({"t0": s["t"], "t1": t1, "state": s["target"], "reason": reason[0] if reason else None,
                        "category": (reason[1] or None) if reason else None})
    return out


def oee_series(data: dict[str, Any], times: list[float]) -> list[oee_mod.OEE]:
    """The cumulative OEE at each of ``times`` (ascending).

    The recorded state changes (with the stop reason stored at each) are
    replayed through :class:`oee.OeeTracker`, the tracker the live cell uses,
    so the figures are the ones the run report and the API gave.
    """
    states = data["states"]
    first = states[0] if states else {"t": 0.0, "target": State.STOPPED.label}
    tracker = oee_mod.OeeTracker(lambda: data["end"], data["design_speed_ppm"], initial=State.parse(first["target"]),
                                 start=first["t"])
    closed = sorted((p["closed_at"], p["outcome"] == "packed") for p in data["parts"]
                    if p["outcome"] and p["closed_at"] is not None)
    out = []
    i, j, good = 1, 0, 0
    for t in times:
        while i < len(states) and states[i]["t"] < t:
            s = states[i]
            tracker.record(s["t"], State.parse(s["source"]), State.parse(s["target"]), _reason(s))
            i += 1
        while j < len(closed) and closed[j][0] <= t:
            good += closed[j][1]
            j += 1
        out.append(tracker.oee(processed=j, good=good, at=t))
    return out


def oee_until(data: dict[str, Any], t: float) -> oee_mod.OEE:
    """The cumulative OEE at cell time ``t`` (see :func:`oee_series`)."""
    return oee_series(data, [t])[0]


# -- SVG -------------------------------------------------------------------------------------------
def _esc(x: Any) -> str:
    return html.escape(str(x))


def _nice(v: float) -> float:
    if v <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * e:
            return m * e
    return 10 * e


def svg_lines(series: list[tuple[str, str, list[tuple[float, float]]]], *, w: int = 720, h: int = 220,
              ymax: float | None = None, xlabel: str = "", ylabel: str = "", pct: bool = False) -> str:
    pts = [p for _, _, s in series for p in s]
    if not pts:
        return "<p class='muted'>no data</p>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    top = ymax if ymax is not None else _nice(max(p[1] for p in pts) * 1.05)
    L, R, T, B = 50, 10, 10, 30
    sx = lambda x: L + (x - x0) / ((x1 - x0) or 1) * (w - L - R)  # noqa: E731
    sy = lambda y: T + (1 - y / (top or 1)) * (h - T - B)  # noqa: E731
    out = [f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" class="chart">']
    for i in range(5):
        y = top * i / 4
        out.append(f'<line x1="{L}" x2="{w - R}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#ddd"/>'
                   f'<text x="{L - 4}" y="{sy(y) + 4:.1f}" text-anchor="end" font-size="10">'
                   f'{(f"{y * 100:.0f}%" if pct else f"{y:g}")}</text>')
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        out.append(f'<text x="{sx(x):.1f}" y="{h - 12}" text-anchor="middle" font-size="10">{x / 60:.1f}</text>')
    out.append(f'<text x="{w / 2}" y="{h - 1}" text-anchor="middle" font-size="10">{_esc(xlabel)}</text>')
    out.append(f'<text x="10" y="{h / 2}" font-size="10" transform="rotate(-90 10 {h / 2})" text-anchor="middle">'
               f'{_esc(ylabel)}</text>')
    for i, (name, color, s) in enumerate(series):
        if not s:
            continue
        d = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y) in enumerate(s))
        out.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        out.append(f'<rect x="{L + 10 + i * 120}" y="{T + 2}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{L + 24 + i * 120}" y="{T + 11}" font-size="11">{_esc(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_bars(labels: list[str], values: list[float], *, w: int = 720, h: int = 220, color: str = "#2f7fd6",
             cumulative: bool = False, xlabel: str = "", ylabel: str = "") -> str:
    if not values:
        return "<p class='muted'>no data</p>"
    L, R, T, B = 50, 40 if cumulative else 10, 10, 46
    top = _nice(max(values) * 1.05)
    n = len(values)
    bw = (w - L - R) / n
    sy = lambda y: T + (1 - y / top) * (h - T - B)  # noqa: E731
    out = [f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" class="chart">']
    for i in range(5):
        y = top * i / 4
        out.append(f'<line x1="{L}" x2="{w - R}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#ddd"/>'
                   f'<text x="{L - 4}" y="{sy(y) + 4:.1f}" text-anchor="end" font-size="10">{y:g}</text>')
    for i, (lab, v) in enumerate(zip(labels, values)):
        x = L + i * bw
        out.append(f'<rect x="{x + 1:.1f}" y="{sy(v):.1f}" width="{max(1.0, bw - 2):.1f}" height="{sy(0) - sy(v):.1f}" '
                   f'fill="{color}"><title>{_esc(lab)}: {v:g}</title></rect>')
        if n <= 30 or i % max(1, n // 15) == 0:
            out.append(f'<text x="{x + bw / 2:.1f}" y="{h - B + 14}" text-anchor="middle" font-size="10">'
                       f'{_esc(lab)}</text>')
    if cumulative:
        tot = sum(values) or 1
        acc, pts = 0.0, []
        for i, v in enumerate(values):
            acc += v
            pts.append((L + (i + 0.5) * bw, T + (1 - acc / tot) * (h - T - B)))
        d = " ".join(f"{'M' if j == 0 else 'L'}{x:.1f},{y:.1f}" for j, (x, y) in enumerate(pts))
        out.append(f'<path d="{d}" fill="none" stroke="#d23a3a" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#d23a3a"/>')
        out.append(f'<text x="{w - 4}" y="{T + 8}" text-anchor="end" font-size="10" fill="#d23a3a">100%</text>')
    out.append(f'<text x="{w / 2}" y="{h - 4}" text-anchor="middle" font-size="10">{_esc(xlabel)}</text>')
    out.append(f'<text x="10" y="{h / 2}" font-size="10" transform="rotate(-90 10 {h / 2})" text-anchor="middle">'
               f'{_esc(ylabel)}</text></svg>')
    return "".join(out)


def svg_timeline(ivs: list[dict], end: float, *, w: int = 720, h: int = 70) -> str:
    if not ivs:
        return "<p class='muted'>no state changes</p>"
    t0 = ivs[0]["t0"]
    span = (end - t0) or 1.0
    L, R = 10, 10
    sx = lambda t: L + (t - t0) / span * (w - L - R)  # noqa: E731
    out = [f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" class="chart">']
    for iv in ivs:
        x0, x1 = sx(iv["t0"]), sx(iv["t1"])
        tip = f'{iv["state"]} {iv["t0"]:.1f}–{iv["t1"]:.1f} s' + (f' ({iv["reason"]})' if iv["reason"] else "")
        out.append(f'<rect x="{x0:.2f}" y="8" width="{max(0.5, x1 - x0):.2f}" height="30" '
                   f'fill="{COLORS.get(iv["state"], "#999")}"><title>{_esc(tip)}</title></rect>')
    for i in range(6):
        t = t0 + span * i / 5
        out.append(f'<text x="{sx(t):.1f}" y="54" text-anchor="middle" font-size="10">{t / 60:.1f} min</text>')
    out.append("</svg>")
    seen = []
    for iv in ivs:
        if iv["state"] not in seen:
            seen.append(iv["state"])
    legend = " ".join(f'<span class="lg"><i style="background:{COLORS.get(s, "#999")}"></i>{_esc(s)}</span>'
                      for s in seen)
    return "".join(out) + f"<div>{legend}</div>"


# -- the report ------------------------------------------------------------------------------------
def build_html(data: dict[str, Any]) -> str:
    parts, end = data["parts"], data["end"]
    ivs = intervals(data["states"], end)
    total = oee_until(data, end)
    counts = {k: sum(1 for p in parts if p["outcome"] == k) for k in ("packed", "rejected", "missed")}
    counts["open"] = sum(1 for p in parts if p["outcome"] is None)
    arrived = len(parts)
    t_first = ivs[0]["t0"] if ivs else 0.0
    nb = max(4, min(60, int((end - t_first) // 30) or 4))
    edges = [t_first + (end - t_first) * (i + 1) / nb for i in range(nb)]
    thr, oee_s, a_s, p_s, q_s = [], [], [], [], []
    prev = t_first
    for e, o in zip(edges, oee_series(data, edges)):
        packed = sum(1 for p in parts if p["outcome"] == "packed" and p["closed_at"] is not None
                     and prev < p["closed_at"] <= e)
        thr.append((e, packed / ((e - prev) / 60.0) if e > prev else 0.0))
        oee_s.append((e, o.oee))
        a_s.append((e, o.availability))
        p_s.append((e, min(o.performance, 1.5)))
        q_s.append((e, o.quality))
        prev = e
    place = sorted(p["place_time"] for p in parts if p["outcome"] == "packed" and p["place_time"] is not None)
    gaps = [b - a for a, b in zip(place, place[1:])]
    if gaps:
        lo, hi = min(gaps), max(gaps)
        nbin = max(5, min(30, int(math.sqrt(len(gaps))) + 1))
        width = (hi - lo) / nbin or 1.0
        hist = [0] * nbin
        for g in gaps:
            hist[min(nbin - 1, int((g - lo) / width))] += 1
        hist_labels = [f"{lo + (i + 0.5) * width:.1f}" for i in range(nbin)]
    else:
        hist, hist_labels = [], []
    pareto: dict[str, int] = {}
    for p in parts:
        if p["outcome"] == "rejected":
            for d in (p["defects"] or ["(no verdict)"]):
                pareto[d] = pareto.get(d, 0) + 1
    par = sorted(pareto.items(), key=lambda kv: -kv[1])
    design = data["design_speed_ppm"]
    shortcut = total.good / (design * total.planned_s / 60.0) if design and total.planned_s else 0.0
    loss_rows = "".join(f"<tr><td>{_esc(b.replace('_', ' '))}</td><td>{v:.1f}</td></tr>"
                        for b, v in total.losses_s.items() if v > 0)
    down_rows = "".join(f"<tr><td>{_esc(d['state'])}</td><td>{_esc(d['reason'] or '—')}</td>"
                        f"<td>{_esc(d['category'] or '—')}</td><td>{_esc(d['bucket'])}</td><td>{d['seconds']:.1f}</td>"
                        f"<td>{d['events']}</td></tr>" for d in total.downtime)
    alarm_rows = "".join(f"<tr><td>{a['alarm_id']}</td><td>{a['time']:.1f}</td><td>{_esc(a['severity'])}</td>"
                         f"<td>{_esc(a['source'])}</td><td>{_esc(a['message'])}</td>"
                         f"<td>{'yes' if a['first_out'] else ''}</td><td>{_esc(a['acked_by'] or '')}</td></tr>"
                         for a in data["alarms"])
    acc = data["acc"]
    stations = data.get("stations") or {}
    station_rows = ""
    if len(stations) > 1:  # several case stations: one row each (a one-station report is as before)
        station_rows = ("<h2>Case stations</h2>\n<table class=\"stations\"><tr><th>case station</th>"
                        "<th>cases completed</th><th>parts packed</th></tr>"
                        + "".join(f"<tr><td>{_esc(n)}</td><td>{v['cases']}</td><td>{v['packed']}</td></tr>"
                                  for n, v in stations.items())
                        + f"<tr><th>total</th><th>{sum(v['cases'] for v in stations.values())}</th>"
                          f"<th>{sum(v['packed'] for v in stations.values())}</th></tr></table>\n"
                          "<p class=\"muted\">from <code>cases</code> and the packed rows of <code>parts</code></p>\n")
    adds_up = arrived == counts["packed"] + counts["rejected"] + counts["missed"] + counts["open"]
    css = ("body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}"
           "h1{margin-bottom:0}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;"
           "text-align:left}th{background:#f3f3f3}.kpi{display:inline-block;margin:6px 16px 6px 0;padding:8px 14px;"
           "background:#f5f7fa;border-radius:8px}.kpi b{display:block;font-size:26px}.muted{color:#777}"
           ".lg{margin-right:12px;font-size:12px}.lg i{display:inline-block;width:10px;height:10px;margin-right:4px}"
           ".ok{color:#1e7e34}.bad{color:#b00}svg.chart{max-width:100%;height:auto;background:#fff}")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>axcell report – {_esc(data['cell'])}</title>
<style>{css}</style></head><body>
<h1>Run report: {_esc(data['cell'])}</h1>
<p class="muted">run {_esc(data['run_id'])} · started {_esc(data['started'])} · seed {_esc(data['seed'])} ·
cell time {end:.0f} s · store {_esc(data['db'])}</p>
<div><span class="kpi"><b>{total.oee * 100:.1f}%</b>OEE</span><span class="kpi"><b>{total.availability * 100:.1f}%</b>availability</span>
<span class="kpi"><b>{total.performance * 100:.1f}%</b>performance</span><span class="kpi"><b>{total.quality * 100:.1f}%</b>quality</span>
<span class="kpi"><b>{counts['packed']}</b>packed</span><span class="kpi"><b>{counts['rejected']}</b>rejected</span>
<span class="kpi"><b>{counts['missed']}</b>missed</span></div>
<h2>How the OEE adds up (from the records)</h2>
<table><tr><th>quantity</th><th>value</th><th>source</th></tr>
<tr><td>run time (APT)</td><td>{total.run_s:.1f} s</td><td>Execute intervals in <code>states</code></td></tr>
<tr><td>planned production time (PPT)</td><td>{total.planned_s:.1f} s</td><td>all time except not scheduled and planned downtime</td></tr>
<tr><td>processed</td><td>{total.processed}</td><td>closed part records (packed + rejected + missed)</td></tr>
<tr><td>good</td><td>{total.good}</td><td>packed part records</td></tr>
<tr><td>design speed</td><td>{design:g} parts/min</td><td>line.design_speed_ppm</td></tr>
<tr><td>availability = APT / PPT</td><td>{total.availability:.4f}</td><td></td></tr>
<tr><td>performance = processed / (design × APT)</td><td>{total.performance:.4f}</td><td></td></tr>
<tr><td>quality = good / processed</td><td>{total.quality:.4f}</td><td></td></tr>
<tr><td>OEE = A × P × Q</td><td>{total.oee:.4f}</td><td>check: good / (design × PPT) = {shortcut:.4f}</td></tr>
<tr><td>machine OEE (external starved/blocked removed)</td><td>{total.machine_oee:.4f}</td><td></td></tr>
<tr><td>arrived = packed + rejected + missed + on belt</td><td class="{'ok' if adds_up else 'bad'}">{arrived} = {counts['packed']} + {counts['rejected']} + {counts['missed']} + {counts['open']}</td><td></td></tr>
<tr><td>AccCount (all runs in this store)</td><td>processed {acc.get('processed', 0)} · good {acc.get('good', 0)} · defective {acc.get('defective', 0)}</td><td><code>counters</code></td></tr>
</table>
{station_rows}<h2>Throughput and OEE over time</h2>
{svg_lines([("packed/min", "#1e9e4a", thr)], xlabel="cell time (min)", ylabel="packed per minute")}
{svg_lines([("OEE", "#2f7fd6", oee_s), ("availability", "#e0a000", a_s), ("performance", "#6a5acd", p_s), ("quality", "#1e9e4a", q_s)], ymax=1.2 if max((v for _, v in p_s), default=0) > 1 else 1.0, xlabel="cell time (min)", ylabel="cumulative", pct=True)}
<h2>Cycle time (between consecutive packed parts)</h2>
{svg_bars(hist_labels, hist, xlabel="seconds", ylabel="count")}
<p class="muted">{len(gaps)} intervals{f", mean {sum(gaps) / len(gaps):.2f} s" if gaps else ""}</p>
<h2>Rejects by defect (Pareto)</h2>
{svg_bars([k for k, _ in par], [v for _, v in par], color="#d23a3a", cumulative=True, xlabel="defect", ylabel="rejected parts")}
<h2>State timeline</h2>
{svg_timeline(ivs, end)}
<h2>Losses</h2>
<table><tr><th>bucket</th><th>seconds</th></tr>{loss_rows}</table>
<table><tr><th>state</th><th>stop reason</th><th>category</th><th>bucket</th><th>seconds</th><th>events</th></tr>{down_rows or '<tr><td colspan=6>no downtime</td></tr>'}</table>
<h2>Alarms</h2>
<table><tr><th>id</th><th>t (s)</th><th>severity</th><th>source</th><th>message</th><th>first-out</th><th>acked by</th></tr>{alarm_rows or '<tr><td colspan=7>none</td></tr>'}</table>
</body></html>
"""


def write_report(run_dir: str | Path, out: str | Path | None = None, run_id: str | None = None) -> Path:
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    if path.is_dir():
        raise ReportError(f"{path}: is a folder; give a file name for the HTML report")
    data = load_run(Path(run_dir), run_id)
    keep = {Path(data["db"]).resolve(), (Path(run_dir) / "run.json").resolve(), (Path(run_dir) / "report.json").resolve()}
    if path.resolve() in keep:
        raise ReportError(f"{path}: would overwrite the run's records; give another file name")
    try:
        html = build_html(data)
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError) as e:
        raise ReportError(f"{data['db']}: damaged traceability store ({e.__class__.__name__}: {e})") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise ReportError(f"{path}: cannot write the report ({e.strerror or e.__class__.__name__})") from None
    return path


def cmd_report(args: Any) -> int:
    """``axcell report RUN_DIR [-o FILE] [--run-id ID]``."""
    try:
        path = write_report(args.run_dir, getattr(args, "output", None), getattr(args, "run_id", None))
    except ReportError as e:
        print(f"axcell: {e}", file=__import__("sys").stderr)
        return 2
    print(path)
    return 0
