"""alexctl.reporting.claims and `alexctl report --reach / --baseline`: Figure 1's epochs to a training error (the
threshold lowered when a run never reaches it), and each group of runs against a baseline group, paired by
seed, with the paper's figures beside the measured differences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from alexctl.reporting import claims, convergence, figures
from alexctl.reporting.runs import Run

from helpers import invoke, json_output


def _curve(label: str, activation: str, lr: float, errors: list[float], classes: int = 10) -> Run:
    rows = [
        {"epoch": e, "train_top1_error": err, "val_top1_error": err, "val_top5_error": err / 3}
        for e, err in enumerate(errors, 1)
    ]
    config = {
        "model": {"arch": "cifar", "activation": activation},
        "train": {"lr": lr, "seed": 0},
        "data": {"classes": classes},
    }
    return Run(Path(label), "train", rows, config, name=label, label=label)


TRAIN_SETTINGS = ("lighting_std", "epochs", "train_crop", "flip")


def _trained(
    label: str,
    seed: int,
    top1: dict[int, float],
    *,
    classes: int = 10,
    curve: tuple[list[float], list[float]] = ([], []),
    **settings,
) -> Run:
    """A training run of the paper's net (with `settings` changed) whose eval files hold top1[crops]
    (top-5: a third of it), and whose metrics rows hold curve's (training errors, validation errors)."""
    model = {"arch": "alexnet", "lrn": True, "pooling": "overlapping", "columns": 2, "dropout": 0.5, **settings}
    model.setdefault("drop_layer", "none")
    train = {"epochs": 30, "lr": 0.01, "lighting_std": 0.1, "train_crop": "random", "flip": True, "seed": seed}
    for key in list(model):
        if key in TRAIN_SETTINGS:
            train[key] = model.pop(key)
    evals = {c: {"top1_error": e, "top5_error": e / 3} for c, e in top1.items()}
    rows = [
        {"epoch": e, "train_top1_error": t, "val_top1_error": v, "val_top5_error": v / 3}
        for e, (t, v) in enumerate(zip(*curve), 1)
    ]
    return Run(
        Path(f"{label}-{seed}"),
        "train",
        rows,
        {"model": model, "train": train, "data": {"classes": classes}},
        evals,
        name=f"{label}-{seed}",
        label=label,
    )


# ---------------------------------------------------------------- Figure 1


def test_figure1_counts_epochs_to_the_threshold_and_the_ratio_to_the_fastest():
    relu = _curve("ReLU", "relu", 0.003, [0.6, 0.4, 0.24, 0.1])
    tanh = _curve("tanh", "tanh", 0.01, [0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.28, 0.27, 0.26, 0.25, 0.2])
    fig = convergence.figure1([relu, tanh], 0.25)
    assert fig.threshold == 0.25 and not fig.lowered
    r, t = fig.runs
    assert (r.epoch, t.epoch, r.reach_epoch, t.reach_epoch) == (3, 11, 3, 11)
    assert r.crossing == pytest.approx(2 + (0.4 - 0.25) / (0.4 - 0.24))  # between epochs 2 and 3
    assert t.crossing == 11.0  # exactly 25% at epoch 11
    assert (r.times, t.times) == (1.0, pytest.approx(11 / 3))
    assert t.times_crossing == pytest.approx(11 / r.crossing)
    assert (r.lowest, r.lowest_epoch, t.lowest, t.lowest_epoch) == (0.1, 4, 0.2, 12)
    assert (r.activation, r.lr, t.epochs) == ("relu", 0.003, 12)
    page = convergence.render_figure1(fig)
    assert fig.common_epoch == 4  # the errors compared at the last epoch both have: a probe's measure
    assert "| ReLU | relu | 0.003 | 4 | 3 | 2.94 | 1.00 | 1.00 | 10.00% | 10.00% (4) |" in page
    assert "| tanh | tanh | 0.01 | 12 | 11 | 11.00 | 3.67 | 3.74 | 50.00% | 20.00% (12) |" in page
    assert "not reached" not in page


def test_figure1_lowers_the_threshold_to_the_lowest_whole_percent_every_run_reaches():
    relu = _curve("ReLU", "relu", 0.003, [0.5, 0.3, 0.2])
    tanh = _curve("tanh", "tanh", 0.01, [0.8, 0.5, 0.4, 0.312, 0.33])
    fig = convergence.figure1([relu, tanh], 0.25)
    assert fig.lowered and fig.threshold == 0.32 and fig.reach == 0.25
    r, t = fig.runs
    assert (r.reach_epoch, r.epoch, t.reach_epoch, t.epoch) == (3, 2, None, 4)
    assert r.times == 1.0 and t.times == 2.0
    page = convergence.render_figure1(fig)
    assert page.startswith("## Figure 1: epochs to 32% training error")
    assert "**25% was not reached** within the epochs trained by: tanh." in page
    assert "| tanh | tanh | 0.01 | 5 | not within 5 | 4 |" in page
    # A threshold that is itself a whole percent stays (no rounding up past it).
    assert convergence.figure1([_curve("a", "relu", 0.1, [0.5, 0.31])], 0.25).threshold == 0.31


def test_the_figure1_plot_draws_relu_solid_and_tanh_dashed_from_chance():
    relu = _curve("ReLU", "relu", 0.003, [0.6, 0.4, 0.24])
    tanh = _curve("tanh", "tanh", 0.01, [0.8, 0.7])
    fig = figures.plot_training_error([relu, tanh], [0.25, 0.32])
    (ax,) = fig.axes
    curves = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
    assert curves["ReLU"].get_linestyle() == "-" and curves["tanh"].get_linestyle() == "--"
    assert list(curves["ReLU"].get_xdata()) == [0, 1, 2, 3]
    assert list(curves["ReLU"].get_ydata()) == pytest.approx([0.9, 0.6, 0.4, 0.24])  # chance, then each epoch
    assert sorted(line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == ":") == [0.25, 0.32]


def test_crossing_starts_from_chance_at_epoch_zero():
    assert convergence.crossing([1, 2], [0.5, 0.2], 0.7, chance=0.9) == pytest.approx(0.5)  # from (0, 90%) to (1, 50%)
    assert convergence.crossing([1, 2], [0.5, 0.2], 0.7, chance=None) == 1.0
    assert convergence.crossing([1, 2], [0.5, 0.4], 0.3, chance=0.9) is None


def test_figure1_table_and_plot_through_the_report_command(two_runs, tmp_path):
    out = tmp_path / "fig1"
    result = invoke(
        "report",
        f"A={two_runs[0]}",
        f"B={two_runs[1]}",
        "--reach",
        "0.25",
        "--images",
        "0",
        "--neighbours",
        "0",
        "--out",
        out,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json_output(result)
    assert summary["claims"] == str(out / "claims.md")
    assert [Path(f).name for f in summary["figures"]][:2] == ["curves.png", "training-error.png"]
    with Image.open(out / "training-error.png") as im:
        assert im.width >= 500
    numbers = json.loads((out / "claims.json").read_text())["figure1"]
    rows = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in two_runs]
    lowest = max(min(r["train_top1_error"] for r in rs) for rs in rows)  # one epoch of a tiny net: above 25%
    assert numbers["lowered"] and numbers["threshold"] >= lowest > 0.25
    assert [r["label"] for r in numbers["runs"]] == ["A", "B"] and numbers["runs"][0]["lr"] == 0.01
    page = (out / "report.md").read_text()
    assert "## Figure 1: epochs to" in page and "![training-error.png](training-error.png)" in page
    assert (out / "claims.md").read_text().startswith("Runs trained on CPU")
    # Without --reach or --baseline the same folder keeps no stale tables.
    assert invoke("report", two_runs[0], "--images", "0", "--neighbours", "0", "--out", out).returncode == 0
    assert not (out / "claims.md").exists() and not (out / "training-error.png").exists()


# ---------------------------------------------------------------- the ablations


def test_each_group_against_the_baseline_paired_by_seed_with_the_papers_figure():
    base = [_trained("paper", s, {1: 0.30 + s / 100, 10: 0.28 + s / 100}) for s in (0, 1, 2)]
    no_lrn = [_trained("no LRN", s, {10: 0.31 + s / 50}, lrn=False) for s in (0, 1)]
    plain = [_trained("2/2", s, {10: 0.25}, pooling="plain") for s in (5, 6)]  # no seed in common
    odd = [_trained("odd", 0, {10: 0.5}, lrn=False, columns=1)]  # two changes: no paper figure
    table = claims.ablations(base + no_lrn + plain + odd, "paper")
    assert table.top5 and [c.claim or c.paper.claim for c in table.claims] == [
        "no LRN",
        "non-overlapping pooling (z = s = 2)",
        "odd",
        "ten crops against one",
    ]
    lrn, pool, other, crops = table.claims
    assert lrn.paper is claims.ABLATIONS[claims.change("alexnet", lrn=False)] and (lrn.paper.top1, lrn.paper.top5) == (
        1.4,
        1.2,
    )
    assert lrn.paired and lrn.measure == "10-crop"
    assert lrn.difference["top1"].values == pytest.approx([0.31 - 0.28, 0.33 - 0.29]) and lrn.difference[
        "top1"
    ].seeds == [0, 1]
    assert lrn.difference["top5"].values == pytest.approx([(0.31 - 0.28) / 3, (0.33 - 0.29) / 3])
    assert lrn.errors["top1"][0].values == pytest.approx([0.28, 0.29, 0.30])  # the baseline: all its seeds
    assert not pool.paired and pool.difference["top1"].values == pytest.approx([0.25 - 0.29] * 2)
    assert other.paper.top1 is None and "lrn = False" in other.note and "columns = 1" in other.note
    assert crops.paper is claims.TEN_CROPS and crops.difference["top1"].values == pytest.approx([-0.02] * 3)
    page = claims.render_ablations(table)
    assert (
        "| no LRN (3.3) | +1.40 / +1.20 | 10-crop | paper (3) vs no LRN (2) | 29.00% | 32.00% | **+3.50** "
        "(+3.00..+4.00, n=2) |" in page
    )
    assert "paper (3) vs 2/2 (2), unpaired" in page


def test_cifar_lrn_pca_ensembles_and_five_classes():
    cifar = claims.ablations(
        [_trained("with", s, {10: 0.2}, arch="cifar") for s in (0, 1)]
        + [_trained("without", s, {10: 0.23}, arch="cifar", lrn=False) for s in (0, 1)],
        "with",
    )
    (row,) = cifar.claims
    assert row.paper.top1 == 2.0 and "13% without" in row.paper.says  # 3.3: 13% -> 11% on CIFAR-10
    assert row.difference["top1"].values == pytest.approx([0.03, 0.03])
    base = [_trained("paper", s, {10: 0.3}, classes=5) for s in (0, 1)]
    no_pca = [_trained("no PCA", s, {10: 0.32}, classes=5, lighting_std=0.0) for s in (0, 1)]
    members = {
        "top1_error": 0.27,
        "top5_error": 0.0,
        "member_top1_errors": [0.3, 0.31, 0.29],
        "member_top5_errors": [0.0, 0.0, 0.0],
    }
    ensemble = Run(
        Path("ens"),
        "ensemble",
        config={"kind": "ensemble", "members": 3},
        evals={10: members},
        name="ens",
        label="ensemble of 3",
    )
    table = claims.ablations(base + no_pca + [ensemble], "paper")
    assert not table.top5 and "5 classes" in table.notes[0]
    pca, avg = table.claims
    assert pca.paper.top1 == 1.0 and pca.paper.over and set(pca.difference) == {"top1"}
    assert avg.claim == "3 models averaged against one" and avg.paper is claims.AVERAGING
    assert (avg.paper.top1, avg.paper.top5) == pytest.approx((-2.6, -1.8))  # 6: 40.7 -> 38.1, 18.2 -> 16.4
    assert avg.difference["top1"].values == pytest.approx([-0.03, -0.04, -0.02])
    assert avg.difference["top1"].mean == pytest.approx(0.27 - 0.30)
    page = claims.render_ablations(table)
    assert "| no PCA lighting (4.1) | >+1.00 | 10-crop |" in page and "top-5" not in page.split("\n")[2]
    with pytest.raises(ValueError, match="'nobody'"):
        claims.ablations(base, "nobody")


def test_baseline_through_the_report_command(two_runs, tmp_path):
    out = tmp_path / "ab"
    for run in two_runs:  # 1- and 10-crop evals, so that the ten-crop row appears
        invoke("eval", run, "--crops", "1", check=True)
        invoke("eval", run, "--crops", "10", check=True)
    result = invoke(
        "report",
        f"base={two_runs[0]}",
        f"other={two_runs[1]}",
        "--baseline",
        "base",
        "--images",
        "0",
        "--neighbours",
        "0",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    numbers = json.loads((out / "claims.json").read_text())["ablations"]
    other, crops = numbers["claims"]
    ev = [{c: json.loads((run / "eval" / f"val-{c}crop.json").read_text()) for c in (1, 10)} for run in two_runs]
    # Seeds 0 and 1 share none: the other run against the baseline's mean (one run), the same settings.
    assert not other["paired"] and other["note"].startswith("the same settings as the baseline; no seed in common")
    assert other["difference"]["top1"]["values"] == pytest.approx([ev[1][10]["top1_error"] - ev[0][10]["top1_error"]])
    assert crops["difference"]["top5"]["values"] == pytest.approx([ev[0][10]["top5_error"] - ev[0][1]["top5_error"]])
    assert "## The paper's claims against `base`" in (out / "report.md").read_text()
    missing = invoke("report", f"base={two_runs[0]}", "--baseline", "nope", "--out", tmp_path / "x")
    assert missing.returncode == 2 and "--baseline 'nope'" in missing.stderr and not (tmp_path / "x").exists()


def test_depth_dropout_and_augmentation_rows_with_the_training_curves():
    curves = {  # (training errors, validation errors) by epoch
        ("paper", 0): ([0.8, 0.6, 0.45, 0.40], [0.7, 0.5, 0.42, 0.38]),
        ("paper", 1): ([0.8, 0.6, 0.5, 0.35], [0.7, 0.5, 0.45, 0.36]),
        ("no dropout", 0): ([0.7, 0.4, 0.2, 0.1], [0.65, 0.5, 0.45, 0.47]),
        ("no dropout", 1): ([0.7, 0.4, 0.2, 0.1], [0.65, 0.5, 0.45, 0.49]),
        ("no aug", 0): ([0.75, 0.45, 0.3, 0.2], [0.7, 0.55, 0.5, 0.52]),
    }
    base = [_trained("paper", s, {10: 0.30 + s / 50}, curve=curves["paper", s]) for s in (0, 1)]
    no_conv4 = [_trained("no conv4", s, {10: 0.33 + s / 100}, drop_layer="conv4") for s in (0, 1)]
    no_dropout = [_trained("no dropout", s, {10: 0.35}, curve=curves["no dropout", s], dropout=0.0) for s in (0, 1)]
    no_aug = [_trained("no aug", 0, {10: 0.4}, curve=curves["no aug", 0], train_crop="center", flip=False)]
    table = claims.ablations(base + no_conv4 + no_dropout + no_aug, "paper")
    depth, dropout, aug = table.claims  # no 1-crop evals: no ten-crop row
    assert depth.paper is claims.ABLATIONS[claims.change("alexnet", drop_layer="conv4")]
    assert (depth.paper.section, depth.paper.top1, depth.overfitting) == ("7", 2.0, None)
    assert depth.difference["top1"].values == pytest.approx([0.03, 0.02])
    # Two settings change together and the paper names the pair (4.1): no note of a confounded change.
    assert aug.paper.claim == "no translations or reflections" and not aug.note and aug.paper.overfits
    o = dropout.overfitting
    # The lowest whole percent every run of the pair reaches: the baseline's seed 0 ends at 40%.
    assert o.threshold == 0.40 and o.epoch == 4 and o.paired
    assert o.epochs[0].values == pytest.approx([4.0, 3 + 0.1 / 0.15]) and o.epochs[1].values == [2.0, 2.0]
    assert o.slower.values == pytest.approx([2.0, (3 + 0.1 / 0.15) / 2])  # the paper: ~2 (4.2)
    assert o.gap[0].values == pytest.approx([-0.02, 0.01]) and o.gap[1].values == pytest.approx([0.37, 0.39])
    assert o.gap_difference.values == pytest.approx([0.39, 0.38])
    assert aug.overfitting.epochs[1].values == pytest.approx([2 + 0.05 / 0.15]) and aug.overfitting.paired
    assert aug.overfitting.slower.values == pytest.approx([4.0 / (2 + 0.05 / 0.15)])
    page = claims.render_ablations(table)
    assert "| no conv4 (7) | ~+2.00 / — | 10-crop | paper (2) vs no conv4 (2) |" in page
    assert "| no dropout (4.2) | — / — | 10-crop |" in page and "roughly doubles the number of iterations" in page
    assert (
        "| no dropout (4.2) | paper vs no dropout | 40% | 3.83 | 2.00 | **1.92** (~2) | -0.50% (epoch 4) | 38.00% "
        "| **+38.50** (+38.00..+39.00, n=2) |" in page
    )
    assert "| no translations or reflections (4.1) | paper vs no aug | 40% | 3.83 | 2.33 | **1.71** (—) |" in page
    # A baseline trained before --drop-layer existed (no drop_layer in its config.json) is the whole net.
    for run in base:
        del run.config["model"]["drop_layer"]
    again = claims.ablations(base + no_dropout, "paper").claims[0]
    assert again.paper.claim == "no dropout" and not again.note
    numbers = dropout.to_dict()["overfitting"]
    assert numbers["slower"]["values"] == pytest.approx(o.slower.values) and numbers["threshold"] == 0.40
