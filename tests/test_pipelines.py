"""pipelines/*.mk: the demo chain runs under make, a second make has nothing to do, and the other
pipelines are well-formed (make -n) with the files they name."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import ROOT


def make(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALEXCTL_PROGRESS_SECONDS": "1000"}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=900)


def test_the_demo_pipeline_runs_and_a_second_make_does_nothing(tmp_path):
    small = [f"OUT={tmp_path}/demo", "SEEDS=0 1", "IMAGES=--classes 4 --per-class 12",
             "TRAIN=--width 0.125 --batch-size 16 --epochs 1 --checkpoint-minutes 0", f"PY={sys.executable}"]
    first = make("-f", "pipelines/demo.mk", *small)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "ensemble of 2:" in first.stdout and (tmp_path / "demo" / "report" / "report.md").is_file()
    for seed in (0, 1):  # make must not delete pattern-rule targets as intermediates
        assert (tmp_path / "demo" / "runs" / f"seed{seed}" / "run.json").is_file()
    assert "rm " not in first.stdout
    assert make("-q", "-f", "pipelines/demo.mk", *small, f"{tmp_path}/demo/report/report.md").returncode == 0
    again = make("-f", "pipelines/demo.mk", *small)
    assert again.returncode == 0 and " -m alexctl " not in again.stdout, again.stdout


def test_every_pipeline_is_well_formed(tmp_path):
    extra = {"ilsvrc2012.mk": ["TRAIN_SRC=t.tar", "VAL_SRC=v.tar", "VAL_LABELS=LOC_val_solution.csv"]}
    for mk in ("imagenette.mk", "ilsvrc2012.mk", "cifar10-claims.mk", "ablations.mk", "demo.mk"):
        dry = make("-n", "-f", f"pipelines/{mk}", f"OUT={tmp_path}/{mk}", *extra.get(mk, []))
        assert dry.returncode == 0, mk + dry.stderr
        commands = [line for line in dry.stdout.splitlines() if " -m alexctl " in line]
        assert any(" train " in c for c in commands), mk
        for c in commands:
            assert c.split(" -m alexctl ")[1].split()[0] in {
                "demo-data", "preprocess", "train", "eval", "ensemble", "report"}, c
