"""Summarise run directories as one Markdown table (used by cifar10-claims.mk and ablations.mk).

    python pipelines/table.py OUT.md --reach 0.25 "ReLU=runs/relu" "tanh=runs/tanh"

Each ROW is LABEL=RUN_DIR. Columns, all read from the run's files: epochs, best val top-1 and
top-5 error (run.json), 1-crop and 10-crop eval errors (eval/val-*crop.json) when present,
and with --reach E the first epoch whose training error is at most E (metrics.jsonl).
An ensemble directory (run.json kind "ensemble") shows its 10-crop errors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alexctl import rundir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("rows", nargs="+", help="LABEL=RUN_DIR")
    parser.add_argument("--reach", type=float, default=None, help="report the first epoch with train error <= this")
    parser.add_argument("--title", default="Results")
    args = parser.parse_args()
    header = ["run", "epochs", "best val top-1", "best val top-5", "1-crop top-1", "10-crop top-1", "10-crop top-5"]
    if args.reach is not None:
        header.append(f"first epoch with train error <= {args.reach:.0%}")
    lines = [f"# {args.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in args.rows:
        label, _, path = row.partition("=")
        lines.append("| " + " | ".join([label] + _cells(rundir.RunDir(Path(path)), args.reach)) + " |")
    lines += ["", "Errors are fractions of the held-out split; every figure is read from the run directories named "
              "on the command line (" + ", ".join(r.partition("=")[2] for r in args.rows) + ")."]
    rundir.atomic_write_bytes(args.out, ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


def _cells(run: rundir.RunDir, reach: float | None) -> list[str]:
    manifest = rundir.read_json(run.manifest) if run.manifest.exists() else {}
    rows = rundir.read_jsonl(run.metrics)
    evals = {c: rundir.read_json(run.eval_metrics("val", c)) for c in (1, 10) if run.eval_metrics("val", c).exists()}
    cells = [str(manifest.get("epochs_completed", len(rows)) if rows else "-"),
             _pct(manifest.get("val_top1_error")), _pct(manifest.get("val_top5_error")),
             _pct(evals.get(1, {}).get("top1_error")), _pct(evals.get(10, {}).get("top1_error")),
             _pct(evals.get(10, {}).get("top5_error"))]
    if reach is not None:
        first = next((r["epoch"] for r in rows if r["train_top1_error"] <= reach), None)
        cells.append(str(first) if first is not None else f"not within {len(rows)}")
    return cells


def _pct(value) -> str:
    return f"{100 * value:.1f}%" if value is not None else "-"


if __name__ == "__main__":
    main()
