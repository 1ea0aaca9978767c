"""`alexctl gpu-check`: the GPU check's steps planned against a budget and run (alexctl.benchmarking.gpucheck)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alexctl.cli.options import DATA, Json, emit

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PARTS = (  # the part gpu-prepare.sh puts in .data/ (what travels to a device), else the shared copy
    ROOT / ".data" / "imagenette-224" / "train-1of2.tar",
    ROOT.parent / "shared" / "data" / "imagenette-224" / "train-1of2.tar",
)


OutArg = Annotated[
    Path,
    typer.Argument(metavar="OUT", help="Results: gpu-check.json, gpu-check.md, gpu-check.log."),
]
Work = Annotated[
    Path,
    typer.Option(
        "--work",
        metavar="DIR",
        rich_help_panel=DATA,
        help="Images, data directory and runs (heavy; made again on a fresh machine).",
    ),
]
Part = Annotated[
    Path,
    typer.Option(
        "--part",
        metavar="TAR",
        rich_help_panel=DATA,
        show_default=False,
        help="The Imagenette part, a tar of <wnid>/<name>.JPEG (default: .data/imagenette-224/train-1of2.tar, "
        "else ../shared/data's).",
    ),
]
Mode = Annotated[
    str,
    typer.Option("--mode", metavar="[auto|full|dry]", help="auto: full with CUDA, dry (a smoke test) without."),
]
Budget = Annotated[
    float,
    typer.Option(
        "--budget", metavar="SECONDS", help="Command time to plan against (BUDGET_S); what cannot fit is owed."
    ),
]
Retry = Annotated[
    bool,
    typer.Option("--retry", help="Try again the steps that failed, timed out or crashed in an earlier call."),
]
Step = Annotated[
    str,
    typer.Option("--step", hidden=True, help="Run one step (what the planner's children do)."),
]


def command(
    out: OutArg = Path("out/gpu-check"),
    work: Work = Path("/tmp/alexctl-gpu-check"),
    part: Part = None,
    mode: Mode = "auto",
    budget: Budget = 480.0,
    retry: Retry = False,
    step: Step = None,
    as_json: Json = False,
) -> None:
    """Measure every figure the GPU work owes in one call: preflight, the CUDA-path tests, images/s
    (synthetic and end to end), ten-crop crops/s, the paper's recipe for 90 epochs and the stock
    recipe's rate, on one Imagenette part. Each step runs in its own process with its own time cap;
    the most valuable run first, and what cannot fit the budget is listed as owed. Run it again with
    the same OUT (on this machine, or a fresh one given OUT back) to go on; done steps are skipped.
    Without CUDA it is a dry run of every step (about a minute): no figures.

    Examples:

    \b
        alexctl gpu-check out/gpu-check
        alexctl gpu-check out/gpu-check --budget 300 --part .data/imagenette-224/train-1of2.tar
    """
    from alexctl.benchmarking import gpucheck
    from alexctl.errors import UserError, WorkFailed

    if mode not in ("auto", "full", "dry"):
        raise UserError(f"--mode {mode} is not one of auto, full, dry.")
    if not budget > 0:
        raise UserError(f"--budget {budget} must be above 0 seconds.")
    if part is None:
        part = next((p for p in DEFAULT_PARTS if p.is_file()), DEFAULT_PARTS[0])
    paths = gpucheck.Paths(out.resolve(), work.resolve())
    if step is not None:
        raise typer.Exit(gpucheck.run_step(step, paths, part=part.resolve(), mode=mode))
    doc = gpucheck.gpu_check(
        paths, part=part.resolve(), mode=mode, budget_s=budget, retry=retry, command=f"alexctl gpu-check {out}"
    )
    summary = {
        "out": str(paths.out),
        "figures": doc["figures"],
        "steps": {n: r["status"] for n, r in doc["steps"].items()},
    }
    failed = [
        f"{n} ({r['status']})" for n, r in doc["steps"].items() if r["status"] in ("failed", "timed out", "crashed")
    ]
    if failed:
        raise WorkFailed(
            f"{len(failed)} step(s) of the GPU check did not succeed: {', '.join(failed)}; see {paths.out / 'gpu-check.md'}.",
            summary=summary,
        )
    emit(summary, as_json, [(paths.out / "gpu-check.md").read_text()], command="gpu-check", directory=paths.out)
