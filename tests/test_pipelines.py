"""pipelines/: the demo chain runs under make through nightly.sh in cron's bare environment, a second
night has nothing to do, a held lock stops a second job, raising the epochs trains the finished runs
further, one seed needs no ensemble, and every pipeline is well-formed (make -n)."""

from __future__ import annotations

import fcntl
import re
import subprocess
from pathlib import Path

import pytest

import zygote
from helpers import ROOT, make

SMALL = [
    "SEEDS=0 1",
    "IMAGES=--classes 4 --per-class 12",
    "TRAIN=--width 0.125 --batch-size 16 --epochs 1 --checkpoint-minutes 0",
]
WORK_COMMANDS = re.compile(r" -m alexctl (demo-data|preprocess|train|eval|ensemble|report) ")


def nightly(tmp_path: Path, *args: str) -> tuple[int, str]:
    """pipelines/nightly.sh as cron runs it: no environment but a minimal PATH, another working directory."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PIPELINE": "demo.mk",
        "OUT": str(tmp_path / "night"),
        "LOGS": str(tmp_path / "logs"),
        "ALEXCTL_PROGRESS_SECONDS": "1000",
    }
    proc = subprocess.run(
        ["env", "-i", *[f"{k}={v}" for k, v in env.items()], str(ROOT / "pipelines" / "nightly.sh"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    logs = sorted((tmp_path / "logs").glob("nightly-*.log"))
    return proc.returncode, logs[-1].read_text() if logs else ""


@pytest.mark.slow
def test_the_demo_pipeline_from_cron_then_nothing_to_do_then_a_held_lock(tmp_path):
    # -j4, as the README allows: a run's 1- and 10-crop evaluations must not race for its eval/ lock (issue 19)
    code, log = nightly(tmp_path, "-j4", *SMALL, f"PY={zygote.python()}")
    assert code == 0, log
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in log.splitlines()), log[:500]
    assert "ensemble of 2:" in log and (tmp_path / "night" / "report" / "report.md").is_file()
    for seed in (0, 1):  # make must not delete pattern-rule targets as intermediates
        assert (tmp_path / "night" / "runs" / f"seed{seed}" / "run.json").is_file()
    assert "\tdone\t" in log.splitlines()[-2] and log.splitlines()[-1].endswith("nightly: exit 0")
    # From the repository too, `make -q` agrees that everything is done.
    night = [f"OUT={tmp_path}/night", *SMALL, f"PY={zygote.python()}"]
    assert make("-q", "-f", "pipelines/demo.mk", *night, f"{tmp_path}/night/report/report.md").returncode == 0
    # The next night (same OUT) has nothing to do.
    code, log = nightly(tmp_path, *SMALL, f"PY={zygote.python()}")
    second = log.split("nightly: make", 2)[-1]
    assert code == 0 and not WORK_COMMANDS.search(second), second
    # Another job holds the lock: a second one says so and exits 3.
    with open(tmp_path / "logs" / "nightly.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, log = nightly(tmp_path, *SMALL)
    assert code == 3 and "another nightly job holds" in log.splitlines()[-1]
    # Raising the epochs (a flag of TRAIN) trains the finished run further instead of keeping it: its flags'
    # stamp is newer than its run.json. Asked for the run alone, make does that and nothing else.
    more = [f.replace("--epochs 1", "--epochs 2") for f in SMALL]
    raised = make(
        "-f",
        "pipelines/demo.mk",
        f"OUT={tmp_path}/night",
        *more,
        f"PY={zygote.python()}",
        f"{tmp_path}/night/runs/seed0/run.json",
    )
    assert raised.returncode == 0 and WORK_COMMANDS.findall(raised.stdout) == ["train"], raised.stdout + raised.stderr
    assert len((tmp_path / "night" / "runs" / "seed0" / "metrics.jsonl").read_text().splitlines()) == 2
    # ...and the rest of the chain follows it (make -n: what the next night would run): seed 1 trains further,
    # both runs are evaluated again, then the ensemble and the report.
    after = make("-n", "-f", "pipelines/demo.mk", f"OUT={tmp_path}/night", *more, f"PY={zygote.python()}")
    assert sorted(WORK_COMMANDS.findall(after.stdout)) == [
        "ensemble",
        "eval",
        "eval",
        "eval",
        "eval",
        "report",
        "train",
    ]
    assert f"train {tmp_path}/night/runs/seed1 " in after.stdout


def test_one_seed_needs_no_ensemble(tmp_path):
    one = [f"OUT={tmp_path}/one", "SEEDS=0", f"PY={zygote.python()}"]
    dry = make("-n", "-f", "pipelines/demo.mk", *one)
    assert dry.returncode == 0, dry.stderr
    assert WORK_COMMANDS.findall(dry.stdout) == [
        "demo-data",
        "preprocess",
        "preprocess",
        "train",
        "eval",
        "eval",
        "report",
    ]
    report = [line for line in dry.stdout.splitlines() if " -m alexctl report " in line]
    assert len(report) == 1 and f"{tmp_path}/one/runs/seed0 " in report[0] and "ensemble" not in report[0]


def test_every_pipeline_is_well_formed(tmp_path):
    extra = {"ilsvrc2012.mk": ["TRAIN_SRC=t.tar", "VAL_SRC=v.tar", "VAL_LABELS=LOC_val_solution.csv"]}
    for mk in ("imagenette.mk", "ilsvrc2012.mk", "cifar10-claims.mk", "ablations.mk", "demo.mk"):
        dry = make("-n", "-f", f"pipelines/{mk}", f"OUT={tmp_path}/{mk}", *extra.get(mk, []))
        assert dry.returncode == 0, mk + dry.stderr
        commands = [line for line in dry.stdout.splitlines() if " -m alexctl " in line]
        assert any(" train " in c for c in commands), mk
        for c in commands:
            assert c.split(" -m alexctl ")[1].split()[0] in {
                "demo-data",
                "preprocess",
                "train",
                "eval",
                "ensemble",
                "report",
            }, c
