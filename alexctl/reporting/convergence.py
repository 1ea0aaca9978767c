"""Epochs to a training error, and what the training curve says against the validation one.

    figure1(runs, reach)        Figure 1 (3.1): the epochs each run needs to reach a training error, and how
                                many times the fastest run's that is
    overfitting(base, variant)  sections 4.1 and 4.2: the epochs each group needs to reach one training error,
                                and the gap between validation and training error at the end, paired by seed
    render_figure1: the Markdown table in the form docs/results.md takes

Training error here is the running top-1 error over each epoch's training batches (`train_top1_error` in
metrics.jsonl), with the run's own augmentation and dropout active, as cuda-convnet reported it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FIGURE1_SPEEDUP = 6.0  # 3.1, Figure 1: ReLUs reach 25% training error six times faster than tanh units
FIGURE1_REACH = 0.25


@dataclass
class Values:
    """One number per seed (or per member), in error fractions or differences of them."""

    values: list[float]
    seeds: list[int]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    def summary(self) -> dict:
        return {
            "mean": self.mean,
            "min": min(self.values),
            "max": max(self.values),
            "n": len(self.values),
            "values": self.values,
            "seeds": self.seeds,
        }


# ---------------------------------------------------------------- Figure 1 (3.1)


@dataclass
class Speed:
    """One run's way down to a training error: Figure 1's measure."""

    label: str
    activation: str
    lr: float | None
    epochs: int  # epochs trained
    reach_epoch: int | None  # the first epoch whose training error is at most the requested `reach`
    epoch: int | None  # the first epoch at most `threshold` (the table's measure)
    crossing: float | None  # where the curve crosses `threshold`, linear between the per-epoch points
    lowest: float  # the lowest training error of any epoch
    lowest_epoch: int
    errors: list[float]  # the training error of each epoch, 1..epochs
    times: float | None = None  # epoch / the fastest run's epoch
    times_crossing: float | None = None


@dataclass
class Figure1:
    reach: float  # the training error asked for (Figure 1: 25%)
    threshold: float  # the one the table measures: reach, or the lowest whole percent every run reaches
    runs: list[Speed]

    @property
    def common_epoch(self) -> int:
        """The last epoch every run has: where their training errors compare directly (a probe's measure)."""
        return min((s.epochs for s in self.runs), default=0)

    @property
    def lowered(self) -> bool:
        return self.threshold != self.reach


def figure1(runs: list, reach: float) -> Figure1:
    """Each training run (reporting.runs.Run with metrics rows) on its way to `reach`. If a run never gets there,
    the threshold becomes the lowest whole percent that every run reaches, and the table says so."""
    curves = [r for r in runs if r.rows]
    lowest_of_all = max((min(row["train_top1_error"] for row in r.rows) for r in curves), default=reach)
    threshold = reach if lowest_of_all <= reach else math.ceil(round(lowest_of_all * 100, 9)) / 100
    speeds = [_speed(run, reach, threshold) for run in curves]
    fastest = min((s.epoch for s in speeds if s.epoch is not None), default=None)
    fastest_crossing = min((s.crossing for s in speeds if s.crossing is not None), default=None)
    for s in speeds:
        s.times = s.epoch / fastest if fastest and s.epoch is not None else None
        s.times_crossing = s.crossing / fastest_crossing if fastest_crossing and s.crossing is not None else None
    return Figure1(reach, threshold, speeds)


def _speed(run, reach: float, threshold: float) -> Speed:
    errors = [row["train_top1_error"] for row in run.rows]
    epochs = [row["epoch"] for row in run.rows]
    classes = run.config.get("data", {}).get("classes")
    chance = 1 - 1 / classes if classes else None
    low = int(np.argmin(errors))
    return Speed(
        run.label,
        run.config.get("model", {}).get("activation", "?"),
        run.config.get("train", {}).get("lr"),
        len(errors),
        first_epoch_at_most(epochs, errors, reach),
        first_epoch_at_most(epochs, errors, threshold),
        crossing(epochs, errors, threshold, chance),
        errors[low],
        epochs[low],
        errors,
    )


def first_epoch_at_most(epochs: list[int], errors: list[float], error: float) -> int | None:
    return next((e for e, err in zip(epochs, errors) if err <= error), None)


def crossing(epochs: list[int], errors: list[float], error: float, chance: float | None) -> float | None:
    """The epoch where the training-error curve first comes down to `error`, linear between the per-epoch
    points (and from chance at epoch 0, where known): a finer measure than the first whole epoch."""
    points = ([(0, chance)] if chance is not None and chance > error else []) + list(zip(epochs, errors))
    for (e0, a), (e1, b) in zip([(None, None)] + points, points):
        if b <= error:
            return float(e1) if e0 is None or a <= error else e0 + (a - error) / (a - b) * (e1 - e0)
    return None


def render_figure1(fig: Figure1) -> str:
    t, r = f"{fig.threshold:.0%}", f"{fig.reach:.0%}"
    header = ["run", "activation", "learning rate", "epochs trained", f"first epoch at <= {r} training error"]
    if fig.lowered:
        header.append(f"first epoch at <= {t}")
    header += [
        f"crossing {t} (interpolated)",
        "x the fastest (first epoch)",
        "x the fastest (interpolated)",
        f"training error at epoch {fig.common_epoch}",
        "lowest training error (epoch)",
    ]
    lines = [f"## Figure 1: epochs to {t} training error", ""]
    if fig.lowered:
        missed = ", ".join(s.label for s in fig.runs if s.reach_epoch is None)
        lines += [
            f"**{r} was not reached** within the epochs trained by: {missed}. The table measures the epochs "
            f"to {t}, the lowest whole percent of training error that every run reaches.",
            "",
        ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in fig.runs:
        cells = [s.label, s.activation, "—" if s.lr is None else f"{s.lr:g}", str(s.epochs), _epoch(s.reach_epoch, s)]
        if fig.lowered:
            cells.append(_epoch(s.epoch, s))
        cells += [
            "—" if s.crossing is None else f"{s.crossing:.2f}",
            _times(s.times),
            _times(s.times_crossing),
            f"{s.errors[fig.common_epoch - 1]:.2%}",
            f"{s.lowest:.2%} ({s.lowest_epoch})",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += [
        "",
        f"Training error: the running top-1 error over each epoch's training batches (`train_top1_error` "
        f"in metrics.jsonl). The paper (Figure 1): ReLUs reach 25% {FIGURE1_SPEEDUP:g} times faster than "
        "tanh units, each net at the learning rate that makes it fastest. Interpolated: linear between the "
        "per-epoch points, from chance at epoch 0.",
        "",
    ]
    return "\n".join(lines)


def _epoch(epoch: int | None, s: Speed) -> str:
    return str(epoch) if epoch is not None else f"not within {s.epochs}"


def _times(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


# ---------------------------------------------------------------- overfitting (4.1, 4.2)


@dataclass
class Overfitting:
    """A variant against the baseline on the training curve: how soon each reaches one training error,
    and how far the validation error stays above the training error at the end (the paper's "overfitting").
    Per seed; the ratio and the difference over the seeds both groups have (else against the baseline's mean)."""

    threshold: float  # the training error measured to: the lowest whole percent every run of both groups reaches
    epochs: tuple[Values, Values]  # (baseline, variant): where each curve crosses it, interpolated
    slower: Values  # the baseline's epochs over the variant's (dropout: the paper's "roughly doubles")
    epoch: int  # the last epoch every run has: where the gap is read
    gap: tuple[Values, Values]  # (baseline, variant): val top-1 error minus training error at `epoch`
    gap_difference: Values  # the variant's gap minus the baseline's
    paired: bool

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "epoch": self.epoch,
            "paired": self.paired,
            "epochs": {"baseline": self.epochs[0].summary(), "variant": self.epochs[1].summary()},
            "slower": self.slower.summary(),
            "gap": {"baseline": self.gap[0].summary(), "variant": self.gap[1].summary()},
            "gap_difference": self.gap_difference.summary(),
        }


def overfitting(base: list, variant: list, seed_of) -> Overfitting | None:
    """Both groups' runs (reporting.runs.Run with metrics rows) on their training curves; None where a run has no rows."""
    runs = base + variant
    if not all(r.rows for r in runs):
        return None
    lowest_of_all = max(min(row["train_top1_error"] for row in r.rows) for r in runs)
    threshold = math.ceil(round(lowest_of_all * 100, 9)) / 100
    epoch = min(r.rows[-1]["epoch"] for r in runs)

    def per_seed(group: list, measure) -> Values:
        ordered = sorted(group, key=seed_of)
        return Values([measure(r) for r in ordered], [seed_of(r) for r in ordered])

    def reach(run) -> float:
        classes = run.config.get("data", {}).get("classes")
        rows = run.rows
        errors = [row["train_top1_error"] for row in rows]
        return crossing([row["epoch"] for row in rows], errors, threshold, 1 - 1 / classes if classes else None)

    def gap(run) -> float:
        row = next(row for row in run.rows if row["epoch"] == epoch)
        return row["val_top1_error"] - row["train_top1_error"]

    epochs = (per_seed(base, reach), per_seed(variant, reach))
    gaps = (per_seed(base, gap), per_seed(variant, gap))
    common = sorted(set(epochs[0].seeds) & set(epochs[1].seeds))

    def paired(values: tuple[Values, Values], combine) -> Values:
        b, v = (dict(zip(x.seeds, x.values)) for x in values)
        if common:
            return Values([combine(b[s], v[s]) for s in common], common)
        return Values([combine(values[0].mean, v[s]) for s in sorted(v)], sorted(v))

    slower = paired(epochs, lambda b, v: b / v)
    return Overfitting(threshold, epochs, slower, epoch, gaps, paired(gaps, lambda b, v: v - b), bool(common))


def render_overfitting(rows: list[tuple[str, str, float | None, Overfitting]]) -> str:
    """The overfitting table: (claim (section), runs, the paper's ratio of epochs, the measure) per row."""
    header = [
        "claim (section)",
        "runs",
        "training error reached",
        "epochs to it: baseline",
        "epochs to it: variant",
        "baseline / variant (the paper)",
        "val - train error at the end: baseline",
        "variant",
        "difference (mean; min..max)",
    ]
    lines = [
        "### Overfitting (section 4): the training curve against the validation error",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for claim, runs, paper_ratio, o in rows:
        d = o.gap_difference.summary()
        ratio = f"**{o.slower.mean:.2f}** ({'—' if paper_ratio is None else f'~{paper_ratio:g}'})"
        cells = [
            claim,
            runs + ("" if o.paired else ", unpaired"),
            f"{o.threshold:.0%}",
            f"{o.epochs[0].mean:.2f}",
            f"{o.epochs[1].mean:.2f}",
            ratio,
            f"{o.gap[0].mean:.2%} (epoch {o.epoch})",
            f"{o.gap[1].mean:.2%}",
            f"**{d['mean'] * 100:+.2f}** ({d['min'] * 100:+.2f}..{d['max'] * 100:+.2f}, n={d['n']})",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += [
        "",
        "Training error reached: the lowest whole percent of training error that every run of both groups "
        "reaches; epochs to it interpolated between the per-epoch points (from chance at epoch 0). Training "
        "error is the running error over each epoch's batches with the run's own augmentation and dropout "
        "active (as cuda-convnet reported it), so a run without them also sees easier batches. The gap: "
        "validation top-1 error (center crop) minus training error at the last epoch every run has; a "
        "positive difference means the variant overfits more.",
        "",
    ]
    return "\n".join(lines)
