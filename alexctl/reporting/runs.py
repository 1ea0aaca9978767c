"""The runs a report reads: each RUN_DIR argument (a training run or an ensemble, optionally LABEL=DIR), its
metrics, configuration and evaluations, read once."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from alexctl import rundir
from alexctl.errors import UserError
from alexctl.rundir import Evaluation


@dataclass
class Run:
    """One RUN_DIR argument, read once."""

    path: Path
    kind: str  # "train" or "ensemble"
    rows: list[dict] = field(default_factory=list)  # metrics.jsonl
    config: dict = field(default_factory=dict)  # config.json (train) or run.json (ensemble)
    evals: dict[int, dict] = field(default_factory=dict)  # crops -> eval/<split>-<crops>crop.json
    name: str = ""  # unique among the report's runs, safe in a file name
    label: str = ""  # how the page names it: LABEL of a LABEL=DIR argument, else the name

    @property
    def dir(self) -> rundir.RunDir:
        return rundir.RunDir(self.path)


def load_runs(paths: Iterable[Path | str], split: str) -> list[Run]:
    """Each path (or LABEL=PATH) as a Run, or a UserError naming the one that is neither kind."""
    runs: list[Run] = []
    for given in paths:
        label, _, path = str(given).rpartition("=") if "=" in str(given) else ("", "", str(given))
        path = Path(path)
        d = rundir.RunDir(path)
        if not path.is_dir():
            raise UserError(f"run directory {path} does not exist.")
        if any(path.resolve() == r.path.resolve() for r in runs):
            raise UserError(f"run directory {path} is listed twice.")
        manifest = rundir.read_json(d.manifest, "run manifest") if d.manifest.exists() else {}
        if manifest.get("kind") == "ensemble":
            run = Run(path, "ensemble", config=manifest)
        elif d.config.exists() or d.metrics.exists() or d.checkpoints.is_dir():
            config = rundir.read_json(d.config, "run configuration") if d.config.exists() else {}
            run = Run(path, "train", rundir.read_jsonl(d.metrics), config)
        else:
            raise UserError(
                f"{path} is neither a training run (no config.json, metrics.jsonl or checkpoints/) "
                "nor an ensemble (no run.json of kind ensemble)."
            )
        run.evals = {
            c: rundir.read_json(d.eval_metrics(Evaluation(split, c)), "eval metrics")
            for c in (1, 10)
            if d.eval_metrics(Evaluation(split, c)).exists()
        }
        base = run.name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.resolve().name) or "run"
        while run.name in {r.name for r in runs}:  # a second .../seed0 becomes seed0-2
            run.name = f"{base}-{int(run.name[len(base) + 1 :] or 1) + 1}"
        run.label = label or run.name
        runs.append(run)
    return runs
