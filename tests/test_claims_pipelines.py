"""pipelines/gpu-claims.mk and cifar10-claims.mk: the GPU claims command runs in miniature on the CPU (so it
cannot rot between GPU leases), planned against a budget: the most telling claims first, what does not fit
owed, and a second call on a fresh machine goes on from what the first brought back (OUT); its tables hold
the differences the runs' own files give and the paper's figures the spec gives; a third call has nothing
to do. The CIFAR-10 part and the Figure 1 pipelines are well-formed (dry runs)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

import zygote
from helpers import ROOT, SHARED_DATA

pytestmark = pytest.mark.slow
# One Imagenette part's miniature: the recipe and two claims of one seed, one epoch of a narrow net. The
# estimates make the plan the same on any machine: data 100 + recipe 200 + one claim 200 fit the 550 s budget,
# the second claim does not (the steps themselves take seconds).
MINI = [
    "SCALE=mini",
    "VARIANTS=no-augmentation no-conv3",
    "FULL_SEEDS=0",
    "VARIANT_SEEDS=0",
    "EXTRA=",
    "NETTE_BUDGET=--epochs 1 --width 0.125 --batch-size 16 --lr 0.00125 --checkpoint-minutes 0 --keep 0",
    "NETTE_DATA_S=100",
    "NETTE_CLAIM_S=200",
    "BUDGET_S=550",
]


def make(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALEXCTL_PROGRESS_SECONDS": "1000"}
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600
    )


def _sample(src: Path, dest: Path, per_class: int) -> Path:
    """The first `per_class` images of each class of a train/<class>/<name> tar, as such a tar."""
    counts: dict[str, int] = {}
    with tarfile.open(src) as tar, tarfile.open(dest, "w") as out:
        for member in tar:
            wnid = member.name.split("/")[-2] if member.isfile() else None
            if wnid is not None and counts.get(wnid, 0) < per_class:
                counts[wnid] = counts.get(wnid, 0) + 1
                out.addfile(member, tar.extractfile(member))
    return dest


def _args(root: Path, work: str) -> list[str]:
    return [
        "-f",
        "pipelines/gpu-claims.mk",
        f"OUT={root}/out",
        f"WORK={root}/{work}",
        f"PART={root}/part.tar",
        f"PY={zygote.python()}",
        *MINI,
    ]


@pytest.fixture(scope="module")
def calls(tmp_path_factory) -> dict:
    """Call 1 on machine A; `export`; call 2 on a fresh machine B given OUT back; call 3 on B again."""
    root = tmp_path_factory.mktemp("gpu-claims")
    _sample(SHARED_DATA / "imagenette-224" / "train-1of2.tar", root / "part.tar", 10)
    out = root / "out"
    first = make(*_args(root, "a"), "imagenette")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    plan1 = json.loads((out / "plan-imagenette.json").read_text())
    page1 = (out / "imagenette.md").read_text()
    exported = make(*_args(root, "a"), "export")
    assert exported.returncode == 0, exported.stderr
    second = make(*_args(root, "b"), "imagenette")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    plan2 = json.loads((out / "plan-imagenette.json").read_text())
    report_time = (out / "imagenette" / "report.md").stat().st_mtime_ns
    third = make(*_args(root, "b"), "imagenette")
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    return {
        "root": root,
        "out": out,
        "first": first,
        "second": second,
        "third": third,
        "plans": [plan1, plan2, json.loads((out / "plan-imagenette.json").read_text())],
        "pages": [page1, (out / "imagenette.md").read_text()],
        "report_time": report_time,
    }


def _eval(run: Path, crops: int = 10) -> dict:
    return json.loads((run / "eval" / f"val-{crops}crop.json").read_text())


def _table(page: str) -> list[list[str]]:
    lines = [ln for ln in page.splitlines() if ln.startswith("| ") and not ln.startswith("| claim ")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_the_first_call_runs_the_most_telling_claim_and_owes_what_does_not_fit(calls):
    steps = calls["plans"][0]["steps"]
    assert {n: s["status"] for n, s in steps.items()} == {
        "data": "done",
        "recipe": "done",
        "no-augmentation": "done",
        "no-conv3": "owed",
    }
    assert steps["no-conv3"]["why"] == "does not fit: estimate 200 s, 50 s of the budget left"
    assert "owed (the next call goes on from here): no-conv3" in calls["first"].stdout
    rows = _table(calls["pages"][0])
    assert [r[0] for r in rows[:1]] == ["no translations or reflections (4.1)"]
    assert not any(r[0].startswith("no conv3") for r in rows)


def test_a_fresh_machine_goes_on_from_what_the_first_call_brought_back(calls):
    out, b = calls["out"], calls["root"] / "b" / "imagenette"
    assert f"unpacking {out}/work.tar.gz" in calls["second"].stdout
    steps = calls["plans"][1]["steps"]
    # The complete runs came back and count as done (one attempt each, in call 1); the data, which did not
    # travel, and the owed claim ran in call 2.
    assert [steps[n]["attempts"] for n in ("data", "recipe", "no-augmentation", "no-conv3")] == [2, 1, 1, 1]
    assert all(s["status"] == "done" for s in steps.values()) and len(calls["plans"][1]["calls"]) == 2
    # ... without their checkpoints (`export` leaves them behind: a device call brings back 64 MiB at most).
    assert list((calls["root"] / "a" / "imagenette" / "full" / "seed0").glob("checkpoints/*.pt"))
    assert not list(b.glob("full/seed0/checkpoints/*.pt")) and not list(b.glob("no-augmentation/seed0/checkpoints/*"))
    rows = {r[0]: r for r in _table(calls["pages"][1])}
    # Section 7: "removing any of the middle layers results in a loss of about 2% for the top-1 performance".
    depth = rows["no conv3 (7)"]
    assert depth[1:4] == ["~+2.00", "10-crop", "paper's recipe (1) vs no conv3 (1)"]
    claims = {c["claim"]: c for c in json.loads((out / "imagenette.json").read_text())["ablations"]["claims"]}
    full = _eval(b / "full" / "seed0")["top1_error"]
    assert claims["no conv3"]["difference"]["top1"]["values"] == pytest.approx(
        [_eval(b / "no-conv3" / "seed0")["top1_error"] - full]
    )
    config = json.loads((b / "no-conv3" / "seed0" / "config.json").read_text())
    assert config["model"]["drop_layer"] == "conv3"
    # Section 4.1: the overfitting claim also on the training curves, from the runs' own metrics.
    aug = claims["no translations or reflections"]
    assert aug["paper"]["overfits"] and aug["paired"] and aug["overfitting"]["epoch"] == 1
    trained = json.loads((b / "no-augmentation" / "seed0" / "config.json").read_text())["train"]
    assert (trained["train_crop"], trained["flip"]) == ("center", False)
    rows_b = [json.loads(x) for x in (b / "no-augmentation" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    rows_f = [json.loads(x) for x in (b / "full" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    gap = [r[-1]["val_top1_error"] - r[-1]["train_top1_error"] for r in (rows_f, rows_b)]
    assert aug["overfitting"]["gap_difference"]["values"] == pytest.approx([gap[1] - gap[0]])
    assert "### Overfitting (section 4)" in calls["pages"][1]


def test_a_third_call_has_nothing_to_do(calls):
    before, after = calls["plans"][1]["steps"], calls["plans"][2]["steps"]
    assert {n: s["attempts"] for n, s in after.items()} == {n: s["attempts"] for n, s in before.items()}
    assert (calls["out"] / "imagenette" / "report.md").stat().st_mtime_ns == calls["report_time"]
    assert " -m alexctl " not in calls["third"].stdout.replace("-m alexctl.benchmarking.gpuclaims", "")


def test_the_cifar10_part_plans_each_seeds_pair(tmp_path):
    dry = make(
        "-n", "-f", "pipelines/gpu-claims.mk", f"OUT={tmp_path}/out", f"WORK={tmp_path}/w", "SCALE=mini", "cifar10"
    )
    assert dry.returncode == 0, dry.stderr
    (line,) = [ln for ln in dry.stdout.splitlines() if "alexctl.benchmarking.gpuclaims" in ln]
    w = f"{tmp_path}/w/cifar10"
    assert f" data:0:30:-:{w}/data/val/manifest.json " in line
    for seed, value in ((0, 100), (1, 90)):
        pair = f"{w}/lrn/seed{seed}/eval/val-10crop.json,{w}/nolrn/seed{seed}/eval/val-10crop.json"
        assert f" seed{seed}:{value}:30:data:{pair} " in line
    run = make("-n", "-f", "pipelines/gpu-claims.mk", f"WORK={tmp_path}/w", "SCALE=mini", f"{w}/nolrn/seed1/run.json")
    (train,) = [ln for ln in run.stdout.replace("\\\n", "").splitlines() if " -m alexctl train " in ln]
    assert "--arch cifar" in train and "--seed 1" in train and train.endswith("--no-lrn")


def test_the_figure1_pipeline_is_well_formed(tmp_path):
    dry = make("-n", "-f", "pipelines/cifar10-claims.mk", f"OUT={tmp_path}", "figure1")
    assert dry.returncode == 0, dry.stderr
    trains = [line for line in dry.stdout.splitlines() if " -m alexctl train " in line]
    assert len(trains) == 2
    for activation, line in zip(("relu", "tanh"), sorted(trains)):
        for flag in (
            "--arch cifar",
            "--train-crop center",
            "--no-flip",
            "--lighting-std 0",
            "--dropout 0",
            "--weight-decay 0",
            "--schedule constant",
            f"--activation {activation}",
        ):
            assert flag in line, (flag, line)
    assert " --reach 0.25 " in dry.stdout and '"ReLU=' in dry.stdout and '"tanh=' in dry.stdout


def test_figure1_on_the_full_training_set_is_well_formed(tmp_path):
    """Issue 21: all 45,000 training images (no --subset), LRN off and on, tanh's finer grid from 0.01 to 0.1."""
    dry = make("-n", "-f", "pipelines/cifar10-claims.mk", f"OUT={tmp_path}", "figure1-full", "sweep-full")
    assert dry.returncode == 0, dry.stderr
    trains = [ln for ln in dry.stdout.replace("\\\n", "").splitlines() if " -m alexctl train " in ln]
    runs = {ln.split(" train ")[1].split()[0].removeprefix(f"{tmp_path}/full/"): ln for ln in trains}
    grid = ["0.01", "0.02", "0.03", "0.05", "0.07", "0.1"]
    assert sorted(runs) == sorted(
        f"{n}/{r}"
        for n in ("lrn", "nolrn")
        for r in ["figure1/relu", "figure1/tanh"] + [f"sweep/tanh-{g}" for g in grid]
    )
    for name, line in runs.items():
        assert "--subset" not in line and "--weight-decay 0" in line and "--train-crop center" in line
        assert (" --lrn " in line) == name.startswith("lrn/") and (" --no-lrn " in line) == name.startswith("nolrn/")
    assert " --activation tanh --lr 0.05 --epochs 2" in runs["lrn/sweep/tanh-0.05"]
    assert " --activation relu --lr 0.003 --epochs 16" in runs["nolrn/figure1/relu"]
    assert " --activation tanh --lr 0.02 --epochs " in runs["nolrn/figure1/tanh"]
    assert dry.stdout.count(" --reach 0.25 ") == 4


def test_figure1_on_the_subset_with_lrn_is_well_formed(tmp_path):
    """Issue 21: the subset's two nets again with LRN on (and channels-last off), all else as `figure1`."""
    plain, lrn = (
        make("-n", "-f", "pipelines/cifar10-claims.mk", f"OUT={tmp_path}", t) for t in ("figure1", "figure1-lrn")
    )
    assert plain.returncode == 0 and lrn.returncode == 0, lrn.stderr
    trains = {}
    for dry in (plain, lrn):
        for line in dry.stdout.replace("\\\n", "").splitlines():
            if " -m alexctl train " in line:
                trains[line.split(" train ")[1].split()[0].removeprefix(f"{tmp_path}/")] = line
    assert sorted(trains) == ["figure1-lrn/relu", "figure1-lrn/tanh", "figure1/relu", "figure1/tanh"]
    for net in ("relu", "tanh"):
        with_lrn, without = trains[f"figure1-lrn/{net}"], trains[f"figure1/{net}"]
        assert " --lrn " in with_lrn and "--channels-last off" in with_lrn and "--subset 10000" in with_lrn
        swapped = with_lrn.replace("--lrn --channels-last off", "--no-lrn --channels-last on")
        assert swapped.replace("figure1-lrn/", "figure1/") == without
    assert '"ReLU=' in lrn.stdout and " --reach 0.25 " in lrn.stdout


def test_ablations_pipeline_trains_every_variant_with_its_flags(tmp_path):
    dry = make("-n", "-f", "pipelines/ablations.mk", f"OUT={tmp_path}")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.replace("\\\n", "").splitlines()
    flags = {
        "no-augmentation": "--train-crop center --no-flip",
        "no-dropout": "--dropout 0",
        "no-conv3": "--drop-layer conv3",
        "no-conv4": "--drop-layer conv4",
        "no-conv5": "--drop-layer conv5",
        "no-lrn": "--no-lrn",
    }
    for variant, flag in flags.items():
        (line,) = [ln for ln in lines if f" train {tmp_path}/ablations/{variant}/seed0 " in ln]
        assert line.rstrip().endswith(flag), line
