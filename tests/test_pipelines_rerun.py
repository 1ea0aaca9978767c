"""pipelines/demo.mk from another directory: raising the epochs trains the finished run further, and
one seed needs no ensemble."""

from __future__ import annotations

import sys

import pytest

from helpers import ROOT, make


@pytest.mark.slow
def test_raising_epochs_trains_further_and_one_seed_needs_no_ensemble(tmp_path):
    out = tmp_path / "one"
    flags = [
        "IMAGES=--classes 3 --per-class 8",
        "SEEDS=0",
        f"PY={sys.executable}",
        "TRAIN=--width 0.125 --batch-size 16 --epochs 1 --checkpoint-minutes 0",
    ]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = make("-f", str(ROOT / "pipelines" / "demo.mk"), f"OUT={out}", *flags, cwd=elsewhere)  # not from ROOT
    assert first.returncode == 0, first.stdout + first.stderr
    assert " ensemble " not in first.stdout and (out / "report" / "report.md").is_file()
    more = [f if not f.startswith("TRAIN=") else f.replace("--epochs 1", "--epochs 2") for f in flags]
    second = make("-f", str(ROOT / "pipelines" / "demo.mk"), f"OUT={out}", *more, cwd=elsewhere)
    assert second.returncode == 0 and " train " in second.stdout, second.stdout + second.stderr
    assert len((out / "runs" / "seed0" / "metrics.jsonl").read_text().splitlines()) == 2
