"""The run report: counts, throughput, cycle time, OEE and inspection quality.

Every figure is derived from the ledger's part records and the PackML state
times, so the report always adds up:
``arrived = packed + rejected + missed + on_belt_at_end``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .packml import State



def _counts(cell: Any) -> dict[str, int]:
    return cell.ledger.counts()


def inspection_truth(cell: Any) -> dict[str, Any] | None:
    """Confusion counts of the inspector's verdicts against the simulator's ground truth."""
    world = cell.world
    if world is None:
        return None
    by_eye = {p.eye_time: p for p in world.parts.values() if p.eye_time is not None}
    tp = fp = fn = tn = unmatched = 0
    per_kind: dict[str, dict[str, int]] = {}
    for rec in cell.ledger.records.values():
        truth = by_eye.get(rec.arrival)
        if truth is None:
            unmatched += 1
            continue
        rec.truth_defects = list(truth.defects)
        if rec.inspected_at is None:
            continue
        said_bad = rec.verdict != "good"
        if truth.defective:
            k = per_kind.setdefault(truth.defects[0], {"caught": 0, "missed": 0})
            if said_bad:
                tp += 1
                k["caught"] += 1
            else:
                fn += 1
                k["missed"] += 1
        else:
            fp += said_bad
            tn += not said_bad
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {
        "true_positive": tp, "false_positive": fp, "false_negative": fn, "true_negative": tn,
        "precision": round(precision, 4), "recall": round(recall, 4), "unmatched_records": unmatched,
        "per_defect": per_kind,
        "passed_eye": len(by_eye),
    }


def _packed_by_station(cell: Any) -> dict[str, int]:
    out = {n: 0 for n in cell.ledger.cases_by_station}
    for r in cell.ledger.records.values():
        if r.outcome == "packed" and r.station is not None:
            out[r.station] = out.get(r.station, 0) + 1
    return out


def build_report(cell: Any, *, wall_seconds: float, sim_seconds: float) -> dict[str, Any]:
    c = _counts(cell)
    recs = sorted(cell.ledger.records.values(), key=lambda r: r.arrival)
    place_times = sorted(r.place_time for r in recs if r.outcome == "packed" and r.place_time is not None)
    gaps = np.diff(place_times) if len(place_times) > 1 else np.array([])
    lead = [r.place_time - r.arrival for r in recs if r.outcome == "packed" and r.place_time is not None]
    run_s = cell.fsm.cumulative_times()[State.EXECUTE]
    o = cell.oee()  # the cell's one OEE tracker, the same figures the API and HMI show
    truth = inspection_truth(cell)
    report: dict[str, Any] = {
        "cell": cell.name,
        "seed": cell.seed,
        "sim_seconds": round(sim_seconds, 6),
        "wall_seconds": round(wall_seconds, 3),
        "parts": {
            "arrived": c["arrived"], "inspected": c["inspected"], "good": c["good"], "defective": c["defective"],
            "rejected": c["rejected"], "packed": c["packed"], "missed": c["missed"], "on_belt_at_end": c["open"],
        },
        "cases": {"completed": cell.ledger.cases_completed, "by_station": dict(cell.ledger.cases_by_station),
                  "packed_by_station": _packed_by_station(cell)},
        "throughput_ppm": round(c["packed"] / (run_s / 60.0), 4) if run_s > 0 else 0.0,
        "cycle_time_s": {
            "mean": round(float(gaps.mean()), 4) if gaps.size else None,
            "p95": round(float(np.percentile(gaps, 95)), 4) if gaps.size else None,
            "lead_mean": round(float(np.mean(lead)), 4) if lead else None,
        },
        "oee": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in o.to_dict().items()},
        "inspection": truth if truth is not None else {},
        "states": {s.label: round(t, 6) for s, t in cell.fsm.cumulative_times().items() if t > 0},
        # wall-clock stamps stay in the store; the report holds cell time only, so it is reproducible
        "alarms": [{k: v for k, v in a.to_dict().items() if not k.startswith("wall")} for a in cell.alarms.history],
        "stop_reason": cell.alarms.stop_reason.message if cell.alarms.stop_reason else "",
        "telemetry": cell.ledger.latest_telemetry,
    }
    if cell.world is not None:
        report["sim_truth"] = cell.world.truth_summary()
    return report


def summary_table(report: dict[str, Any]) -> str:
    p = report["parts"]
    o = report["oee"]
    ct = report["cycle_time_s"]
    ins = report.get("inspection") or {}
    rows = [
        ("cell", report["cell"]),
        ("simulated / wall", f"{report['sim_seconds']:.0f} s / {report['wall_seconds']:.2f} s"
                             f"  ({report['sim_seconds'] / max(report['wall_seconds'], 1e-9):.0f}x)"),
        ("parts arrived", p["arrived"]),
        ("  packed", p["packed"]),
        ("  rejected", p["rejected"]),
        ("  missed", p["missed"]),
        ("  on belt at end", p["on_belt_at_end"]),
        ("cases completed", report["cases"]["completed"]),
        *((f"  at {n}", f"{k} (packed {report['cases'].get('packed_by_station', {}).get(n, 0)})")
          for n, k in (report["cases"].get("by_station") or {}).items() if len(report["cases"]["by_station"]) > 1),
        ("throughput", f"{report['throughput_ppm']:.1f} packed/min"),
        ("cycle time", f"mean {ct['mean'] if ct['mean'] is not None else '-'} s, p95 {ct['p95'] if ct['p95'] is not None else '-'} s"),
        ("OEE", f"{o['oee']:.3f}  (A {o['availability']:.3f} × P {o['performance']:.3f} × Q {o['quality']:.3f})"),
    ]
    if ins:
        rows.append(("inspection", f"TP {ins['true_positive']} FP {ins['false_positive']} FN {ins['false_negative']} "
                                   f"TN {ins['true_negative']}  precision {ins['precision']:.3f} recall {ins['recall']:.3f}"))
    w = max(len(str(k)) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)
