"""The ``axcell`` command line.

    axcell check FILE            validate a cell file (exit 2 with located errors)
    axcell schema                JSON Schema of cell files
    axcell skills [--json]       the skill library with parameter schemas
    axcell run FILE ...          run a cell (simulated: faster than real time)
    axcell vision fit|inspect    teach and run the inspection model

User errors print one clear line per problem and never a traceback
(set ``AXCELL_DEBUG=1`` to see one).
"""

from __future__ import annotations

import os

# One BLAS thread per process: the cell's numpy work is small and latency-bound, and a multi-threaded
# BLAS on a shared 2-core box only adds jitter. Set before numpy is imported; the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .cliargs import UserError, port_arg, positive_arg, seed_arg, speed_arg, writable_dir, writable_file
from .config import CellFileError, json_schema, load_cell


# aliases kept for the subcommand modules written against them
_speed, _positive = speed_arg, positive_arg


MAX_PROBLEMS_SHOWN = 100


def print_problems(e: CellFileError, *, summary: bool = True) -> None:
    """``FILE:LINE: field.path: message (value)``, one line per problem (the first 100), then a count."""
    for prob in e.problems[:MAX_PROBLEMS_SHOWN]:
        print(prob.format(e.file), file=sys.stderr)
    n = len(e.problems)
    if n > MAX_PROBLEMS_SHOWN:
        print(f"{e.file}: {n} problem(s), the first {MAX_PROBLEMS_SHOWN} shown", file=sys.stderr)
    elif summary:
        print(f"{e.file}: {n} problem(s)", file=sys.stderr)


# -- commands ---------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    cfg = load_cell(args.file)
    kinds = sorted({d.kind for d in cfg.devices})
    print(f"{args.file}: ok — cell {cfg.cell.name!r}, {len(cfg.devices)} devices ({', '.join(kinds)}), "
          f"{len(cfg.products)} products")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_skills(args: argparse.Namespace) -> int:
    from skills import registry

    items = [cls.describe() for _, cls in sorted(registry().items())]
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        for it in items:
            roles = ", ".join(f"{r}:{c}" for r, c in it["roles"].items()) or "-"
            print(f"{it['name']:<18} roles {roles:<44} {it['description']}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_cell(args.file)
    if args.duration is None and cfg.sim is not None and args.hmi_port is None and args.opcua_port is None:
        raise UserError("a simulated batch run needs --duration SIM_SECONDS", 2)
    # outputs are checked before anything starts: a run must not end in an unwritable report
    if args.run_dir is not None:
        writable_dir(args.run_dir, "--run-dir")
    if args.report is not None:
        writable_file(args.report, "the --report JSON")
    if args.record is not None:
        writable_file(args.record, "the --record MCAP file")
    _refuse_overwriting_inputs(cfg, args)
    from .heap import keep_heap
    from .session import RunOptions, run_interruptibly

    keep_heap()  # every tray is inspected in this process: reuse the frames' pages (see cell.heap)
    opts = RunOptions(
        duration=args.duration, seed=args.seed, speed=args.speed, report=args.report, transport=args.transport,
        hmi_port=args.hmi_port, opcua_port=args.opcua_port, record=args.record, quiet=args.quiet,
        run_dir=args.run_dir, processes=args.processes, inspection_worker=not args.inspect_in_cell_thread,
    )
    report = run_interruptibly(cfg, opts)  # Ctrl-C: cancelled until it closes, then exit 130
    if report is not None and not args.quiet:
        from .report import summary_table

        print(summary_table(report))
    return 0


def _refuse_overwriting_inputs(cfg: Any, args: argparse.Namespace) -> None:
    """--report / --record must not name the cell file, the traceability store or its run.json (data loss)."""
    from .session import default_run_dir
    from .store import resolve_store_path

    run_dir = args.run_dir if args.run_dir is not None else default_run_dir(cfg)
    store = resolve_store_path(cfg, run_dir)
    if cfg.store.path:  # the cell file's store.path: checked here, not when the first part is recorded
        writable_file(store, "the traceability store (store.path in the cell file)")
    protected = {"the cell file": Path(args.file), "the traceability store": store,
                 "the store's journal": store.with_name(store.name + "-wal"), "run.json": run_dir / "run.json"}
    outs = [("--report", args.report), ("--record", args.record)]
    for opt, out in outs:
        if out is None:
            continue
        for what, q in protected.items():
            if Path(os.path.abspath(out)) == Path(os.path.abspath(q)) or (q.exists() and out.exists()
                                                                           and os.path.samefile(out, q)):
                raise UserError(f"{out}: {opt} would overwrite {what}; give another file name", 2)
    if args.report is not None and args.record is not None and \
            Path(os.path.abspath(args.report)) == Path(os.path.abspath(args.record)):
        raise UserError(f"{args.report}: --report and --record name the same file", 2)


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="axcell", description="Run robot cells in simulation and on hardware.")
    p.add_argument("--log-level", default=os.environ.get("AXCELL_LOG", "WARNING"))
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="validate a cell file")
    c.add_argument("file")
    c.set_defaults(func=cmd_check)

    s = sub.add_parser("schema", help="print the JSON Schema of cell files")
    s.set_defaults(func=cmd_schema)

    k = sub.add_parser("skills", help="list the skill library")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_skills)

    r = sub.add_parser("run", help="run a cell")
    r.add_argument("file")
    r.add_argument("--duration", type=positive_arg, help="seconds of cell time (simulated seconds in sim)")
    r.add_argument("--seed", type=seed_arg, default=None, help="simulation seed (default: the cell file's)")
    r.add_argument("--speed", type=speed_arg, default=None, help="'max' (default) or a real-time factor, e.g. 1")
    r.add_argument("--report", type=Path, help="write the JSON report here")
    r.add_argument("--transport", choices=["local", "ros"], default="ros",
                   help="ros (default): devices and cell as ROS 2 nodes over DDS; local: in-process, no ROS 2")
    r.add_argument("--processes", action="store_true",
                   help="with --transport ros: one process per device node (a simulated cell: every process "
                        "holds a replica of the world, kept in lock-step with this one; same report as local)")
    r.add_argument("--hmi-port", type=port_arg, help="serve the HMI/API on 127.0.0.1:PORT")
    r.add_argument("--opcua-port", type=port_arg, help="serve the cell as a PackML unit on opc.tcp://127.0.0.1:PORT/axcell/")
    r.add_argument("--record", type=Path, help="record every topic to this MCAP file (ROS transport)")
    r.add_argument("--run-dir", type=Path, help="where the store and images go (default: runs/<cell>-<time>)")
    r.add_argument("--inspect-in-cell-thread", action="store_true",
                   help="judge trays in the cell's own thread instead of an inspection worker process (the "
                        "outcome is the same; the worker lets the cell go on while a tray is judged)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_run)

    # -- run report (cell/report_html.py) --
    rp = sub.add_parser("report", help="write the HTML report of a run directory")
    rp.add_argument("run_dir", type=Path)
    rp.add_argument("-o", "--output", type=Path, help="HTML file (default: RUN_DIR/report.html)")
    rp.add_argument("--run-id", help="which run in the store (default: the run directory's)")
    rp.set_defaults(func=lambda a: __import__("cell.report_html", fromlist=["cmd_report"]).cmd_report(a))
    # -- end run report --

    try:
        from . import cli_vision
    except ImportError:  # pragma: no cover - vision extras missing
        cli_vision = None  # type: ignore[assignment]
    if cli_vision is not None and hasattr(cli_vision, "register"):
        cli_vision.register(sub)
    from . import cli_calibrate  # hand-eye calibration hook: `axcell calibrate`
    cli_calibrate.register(sub)
    from .ros import cli_replay  # ROS 2 hook (issue 3): `axcell replay RUN.mcap` (no rclpy needed)
    cli_replay.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except CellFileError as e:
        print_problems(e)
        return 2
    except UserError as e:
        print(f"axcell: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001
        if os.environ.get("AXCELL_DEBUG"):
            raise
        print(f"axcell: error: {e.__class__.__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
