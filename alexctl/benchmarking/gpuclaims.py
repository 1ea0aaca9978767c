"""`make gpu-claims` planned against the GPU time there is (issue 21): pipelines/gpu-claims.mk names its steps
(the data, the recipe's runs, one step per claim with its seeds), their value and their estimate; this runs
them through alexctl.benchmarking.plan, the most telling claims first, each step a `make` of its targets in its
own process group, its record (OUT/STEM.json) written before and after. What does not fit is owed, and the
next call (this machine or a fresh one given OUT back) goes on from the records and the runs it brought back.

    python -m alexctl.benchmarking.gpuclaims OUT --stem plan-imagenette --budget 480 --title TITLE \\
        --make "make -f pipelines/gpu-claims.mk -j3 ..." NAME:VALUE:ESTIMATE_S:NEEDS:TARGET[,TARGET...] ...

NEEDS: names of steps listed earlier, joined by commas ("-": none). A step is done when make made its
targets (they are also its `produces`: a fresh machine that lacks them makes them again). Steps that
failed or were cut short in an earlier call are tried again: training resumes from its checkpoints.
Exit status 0 when every step is done or owed, 1 when one failed, 2 for a malformed step.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from alexctl.benchmarking.plan import DONE, OWED, Step, run_plan

CAP_FACTOR = 3.0  # a step is stopped at three times its estimate (or at the end of the budget, if sooner)


def parse_step(spec: str, make: list[str]) -> Step:
    """NAME:VALUE:ESTIMATE_S:NEEDS:TARGETS -> a Step that makes TARGETS; ValueError naming the spec if malformed."""
    parts = spec.split(":")
    if len(parts) != 5 or not parts[0] or not parts[4]:
        raise ValueError(f"step {spec!r} is not NAME:VALUE:ESTIMATE_S:NEEDS:TARGET[,TARGET...].")
    name, value, estimate, needs, targets = parts
    try:
        value_f, estimate_s = float(value), float(estimate)
    except ValueError:
        raise ValueError(f"step {spec!r}: VALUE and ESTIMATE_S must be numbers.") from None
    paths = tuple(Path(t) for t in targets.split(","))
    return Step(
        name,
        [*make, *map(str, paths)],
        estimate_s=estimate_s,
        value=value_f,
        cap_s=estimate_s * CAP_FACTOR,
        needs=() if needs in ("", "-") else tuple(needs.split(",")),
        produces=paths,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alexctl.benchmarking.gpuclaims", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("steps", nargs="+", metavar="STEP")
    parser.add_argument("--make", required=True, help="the make command line each step's targets are added to")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds of this call the steps may take")
    parser.add_argument("--stem", default="plan", help="the record files' name: OUT/STEM.json, .md, .log")
    parser.add_argument("--title", default="gpu-claims")
    args = parser.parse_args(argv)
    try:
        steps = [parse_step(s, shlex.split(args.make)) for s in args.steps]
        args.out.mkdir(parents=True, exist_ok=True)
        doc = run_plan(steps, args.out, budget_s=args.budget, title=args.title, retry=True, stem=args.stem)
    except ValueError as e:
        print(f"gpu-claims: {e}", file=sys.stderr)
        return 2
    records = doc["steps"]
    status = {s.name: records.get(s.name, {}).get("status", "not run") for s in steps}
    owed = [f"{n} ({records[n].get('why', '')})" for n, st in status.items() if st == OWED]
    failed = [f"{n}: {st}" for n, st in status.items() if st not in (DONE, OWED)]
    done = sum(st == DONE for st in status.values())
    print(f"gpu-claims: {args.title}: {done} of {len(steps)} steps done; records in {args.out / args.stem}.json")
    if owed:
        print("gpu-claims: owed (the next call goes on from here): " + "; ".join(owed))
    if failed:
        print("gpu-claims: not done: " + "; ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
