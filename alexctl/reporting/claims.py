"""The paper's claims, measured from run directories and set beside the paper's own figures.

    figure1(runs, reach)       Figure 1 (3.1): the epochs each run needs to reach a training error, and how
                               many times the fastest run's that is
    ablations(runs, baseline)  sections 3.2-4.1 and 6: each group of runs (runs sharing a LABEL) against the
                               baseline group, the difference in error paired by seed; ten crops against one
                               on the baseline's runs; an ensemble against its members
    render_figure1, render_ablations: Markdown tables in the form docs/results.md takes

Everything is read from the runs' own files (metrics.jsonl, config.json, eval/*.json); alexctl.reporting.report
loads them (report.Run) and calls this module. Errors and differences are fractions of a held-out split;
the tables print differences in percentage points (variant minus baseline: positive means the change
costs accuracy, as removing a part of the paper's recipe should).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class PaperFigure:
    """What the paper reports for one claim: the change in top-1 / top-5 error, in percentage points,
    that the claim's variant makes (None: the paper gives no number)."""

    claim: str
    section: str
    top1: float | None
    top5: float | None
    says: str  # the paper's words and data set
    over: bool = False  # the paper says "over" the figure
    top1_errors: tuple[float, float] | None = None  # the paper's own top-1 errors (baseline, variant), in %


# The paper's figures (docs: /work/shared/spec/alexnet.md), for the variant that removes the part of the recipe.
# Keyed by (arch, setting, the variant's value); the baseline is the paper's recipe.
ABLATIONS: dict[tuple[str, str, object], PaperFigure] = {
    ("alexnet", "lrn", False): PaperFigure(
        "no LRN", "3.3", 1.4, 1.2, "response normalisation cuts top-1 / top-5 error by 1.4 / 1.2 points (ILSVRC)"
    ),
    ("cifar", "lrn", False): PaperFigure(
        "no LRN",
        "3.3",
        2.0,
        None,
        "CIFAR-10 test error: 13% without response normalisation, 11% with it",
        top1_errors=(11, 13),
    ),
    ("alexnet", "pooling", "plain"): PaperFigure(
        "non-overlapping pooling (z = s = 2)",
        "3.4",
        0.4,
        0.3,
        "overlapping pooling (z = 3, s = 2) cuts top-1 / top-5 error by 0.4 / 0.3 points (ILSVRC)",
    ),
    ("alexnet", "columns", 1): PaperFigure(
        "one column at half width",
        "3.2",
        1.7,
        1.2,
        "two columns cut top-1 / top-5 error by 1.7 / 1.2 points against one with half the kernels (ILSVRC)",
    ),
    ("alexnet", "lighting_std", 0.0): PaperFigure(
        "no PCA lighting",
        "4.1",
        1.0,
        None,
        "PCA colour augmentation cuts top-1 error by over 1 point (ILSVRC)",
        over=True,
    ),
}
TEN_CROPS = PaperFigure(
    "ten crops against one", "4.1", None, None, "no figure: the paper averages the softmax of ten patches at test time"
)
AVERAGING = PaperFigure(
    "models averaged against one",
    "6",
    38.1 - 40.7,
    16.4 - 18.2,
    "ILSVRC-2012 val: 1 CNN 40.7% / 18.2%, the average of 5 CNNs 38.1% / 16.4%",
    top1_errors=(40.7, 38.1),
)
FIGURE1_SPEEDUP = 6.0  # 3.1, Figure 1: ReLUs reach 25% training error six times faster than tanh units
FIGURE1_REACH = 0.25
IGNORED_SETTINGS = {"seed"}  # what may differ between the seeds of one group


def provenance(runs: list) -> str:
    """Where and when the training runs ran, from their config.json: "on CPU (...) with torch 2.14.1,
    alexctl 0.1.0, 2026-11-25" (every distinct value, joined)."""
    trained = [r.config for r in runs if r.kind == "train" and r.config]

    def each(values) -> str:
        return ", ".join(dict.fromkeys(v for v in values if v)) or "?"

    dates = sorted(c.get("created", "")[:10] for c in trained if c.get("created"))
    return (
        f"on {each(c.get('runtime', {}).get('device_name') for c in trained)} with torch "
        f"{each(c.get('runtime', {}).get('torch') for c in trained)}, alexctl "
        f"{each(c.get('alexctl_version') for c in trained)}, "
        + (dates[0] if dates and dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}" if dates else "date unknown")
    )


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
    """Each training run (report.Run with metrics rows) on its way to `reach`. If a run never gets there,
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


# ---------------------------------------------------------------- ablations (3.2-4.1, 6)


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


@dataclass
class Claim:
    """One row: a variant against the baseline on one measure of error."""

    paper: PaperFigure
    baseline: str  # what the rows compare: labels, or "1 crop" / "member"
    variant: str
    measure: str  # "10-crop", "1-crop" or "best val (center crop)"
    errors: dict[str, tuple[Values, Values]]  # "top1"/"top5" -> (baseline's errors, variant's errors)
    difference: dict[str, Values]  # "top1"/"top5" -> variant minus baseline, per seed
    paired: bool  # the differences are per seed (else: the variant's minus the baseline's mean)
    note: str = ""
    claim: str = ""

    def to_dict(self) -> dict:
        return {
            "claim": self.claim or self.paper.claim,
            "section": self.paper.section,
            "paper": asdict(self.paper),
            "baseline": self.baseline,
            "variant": self.variant,
            "measure": self.measure,
            "paired": self.paired,
            "note": self.note,
            "errors": {k: {"baseline": b.summary(), "variant": v.summary()} for k, (b, v) in self.errors.items()},
            "difference": {k: d.summary() for k, d in self.difference.items()},
        }


@dataclass
class Ablations:
    baseline: str
    claims: list[Claim] = field(default_factory=list)
    top5: bool = True  # False when the data has five classes or fewer (top-5 error is then always 0)
    notes: list[str] = field(default_factory=list)


def ablations(runs: list, baseline: str) -> Ablations:
    """Every group of `runs` (report.Run, grouped by label) against the group labelled `baseline`: the
    setting that differs names the paper's claim. Then ten crops against one on the baseline's runs, and
    each ensemble against its members. Raises ValueError naming a missing baseline."""
    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    base = [r for r in groups.get(baseline, []) if r.kind == "train"]
    if not base:
        raise ValueError(f"no training run is labelled {baseline!r} (labels: {', '.join(groups)}).")
    out = Ablations(baseline, top5=_classes(base[0]) > 5)
    if not out.top5:
        out.notes.append(f"Top-5 error is left out: the data has {_classes(base[0])} classes, so it is always 0.")
    for label, members in groups.items():
        trained = [r for r in members if r.kind == "train"]
        if label != baseline and trained:
            out.claims.append(_ablation(base, trained, baseline, label, out.top5))
    crops = _ten_crops(base, baseline, out.top5)
    if crops is not None:
        out.claims.append(crops)
    out.claims += [_averaging(r, out.top5) for r in runs if r.kind == "ensemble" and r.evals]
    return out


def _classes(run) -> int:
    return int(run.config.get("data", {}).get("classes") or 1000)


def _settings(run) -> dict:
    config = run.config
    return {**config.get("model", {}), **config.get("train", {})}


def _seed(run) -> int:
    return int(run.config.get("train", {}).get("seed", 0))


def measure_of(runs: list) -> int | None:
    """The crops whose eval every run has (10 preferred), else None: the best epoch's val error."""
    return next((c for c in (10, 1) if all(c in r.evals for r in runs)), None)


def errors_of(run, crops: int | None) -> dict[str, float]:
    if crops is not None:
        ev = run.evals[crops]
        return {"top1": ev["top1_error"], "top5": ev["top5_error"]}
    best = min(run.rows, key=lambda r: r["val_top1_error"])
    return {"top1": best["val_top1_error"], "top5": best["val_top5_error"]}


def measure_name(crops: int | None) -> str:
    return f"{crops}-crop" if crops else "best val (center crop)"


def _ablation(base: list, variant: list, base_label: str, label: str, top5: bool) -> Claim:
    reference = _settings(base[0])
    changed = {k: v for k, v in _settings(variant[0]).items() if k not in IGNORED_SETTINGS and reference.get(k) != v}
    arch = reference.get("arch", "alexnet")
    known = [ABLATIONS[(arch, k, v)] for k, v in changed.items() if (arch, k, v) in ABLATIONS]
    paper = known[0] if len(known) == 1 else PaperFigure(label, "—", None, None, "no figure for this change")
    crops = measure_of(base + variant)
    note = (
        ""
        if len(changed) == 1
        else (
            "differs from the baseline in " + ", ".join(f"{k} = {v!r}" for k, v in changed.items())
            if changed
            else "the same settings as the baseline"
        )
    )
    claim = _compare(paper, base_label, label, measure_name(crops), base, variant, lambda r: errors_of(r, crops), top5)
    claim.note = "; ".join(filter(None, [note, claim.note]))
    return claim


def _compare(
    paper: PaperFigure, base_label: str, label: str, measure: str, base: list, variant: list, error, top5: bool
) -> Claim:
    """Variant minus baseline per seed where both have the seed; without a common seed, the variant's
    errors minus the baseline's mean."""
    b = {_seed(r): error(r) for r in base}
    v = {_seed(r): error(r) for r in variant}
    common = sorted(set(b) & set(v))
    keys = ["top1"] + (["top5"] if top5 else [])
    errors = {
        k: (Values([b[s][k] for s in sorted(b)], sorted(b)), Values([v[s][k] for s in sorted(v)], sorted(v)))
        for k in keys
    }
    if common:
        difference = {k: Values([v[s][k] - b[s][k] for s in common], common) for k in keys}
    else:
        difference = {k: Values([v[s][k] - errors[k][0].mean for s in sorted(v)], sorted(v)) for k in keys}
    note = "" if common else "no seed in common: each variant run against the baseline's mean"
    return Claim(paper, base_label, label, measure, errors, difference, bool(common), note)


def _ten_crops(base: list, label: str, top5: bool) -> Claim | None:
    """The baseline's runs with ten crops against the same runs with one (the center patch)."""
    both = sorted((r for r in base if 1 in r.evals and 10 in r.evals), key=_seed)
    if not both:
        return None
    seeds = [_seed(r) for r in both]
    errors, difference = {}, {}
    for k in ["top1"] + (["top5"] if top5 else []):
        one, ten = ([errors_of(r, crops)[k] for r in both] for crops in (1, 10))
        errors[k] = (Values(one, seeds), Values(ten, seeds))
        difference[k] = Values([t - o for t, o in zip(ten, one)], seeds)
    return Claim(TEN_CROPS, f"{label}, 1 crop", f"{label}, 10 crops", "1 and 10 crops", errors, difference, True)


def _averaging(run, top5: bool) -> Claim:
    """An ensemble's error against each of its members' (as the ensemble measured them, same crops)."""
    crops = max(run.evals, default=None)
    ev = run.evals.get(crops, {})
    members = run.config.get("members") or len(ev.get("member_top1_errors", []))
    keys = ["top1"] + (["top5"] if top5 else [])
    errors, difference = {}, {}
    for k in keys:
        mine = ev.get(f"member_{k}_errors", [])
        order = list(range(len(mine)))
        errors[k] = (Values(mine, order), Values([ev[f"{k}_error"]], [0]))
        difference[k] = Values([ev[f"{k}_error"] - m for m in mine], order)
    return Claim(
        AVERAGING,
        "each member",
        run.label,
        f"{crops}-crop",
        errors,
        difference,
        True,
        "differences against each member: mean = the ensemble minus the members' mean",
        claim=f"{members} models averaged against one",
    )


def render_ablations(table: Ablations) -> str:
    keys = ["top1"] + (["top5"] if table.top5 else [])
    names = {"top1": "top-1", "top5": "top-5"}
    header = ["claim (section)", "the paper: " + " / ".join(names[k] for k in keys), "measured on", "runs"]
    for k in keys:
        header += [f"{names[k]}: baseline", f"{names[k]}: variant", f"{names[k]}: difference (mean; min..max)"]
    lines = [
        f"## The paper's claims against `{table.baseline}`",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for c in table.claims:
        paper = " / ".join(_paper(c.paper, k) for k in keys)
        n_base, n_var = len(c.errors["top1"][0].values), len(c.errors["top1"][1].values)
        runs = f"{c.baseline} ({n_base}) vs {c.variant} ({n_var})" + ("" if c.paired else ", unpaired")
        cells = [f"{c.claim or c.paper.claim} ({c.paper.section})", paper, c.measure, runs]
        for k in keys:
            b, v = c.errors[k]
            d = c.difference[k].summary()
            cells += [
                f"{b.mean:.2%}",
                f"{v.mean:.2%}",
                f"**{_points(d['mean'] * 100)}** ({_points(d['min'] * 100)}..{_points(d['max'] * 100)}, n={d['n']})",
            ]
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    lines += [
        "",
        "Differences in percentage points of error, the variant minus the baseline (positive: the variant "
        "is worse); mean, min..max and n over the seeds both sides share (paired by seed) or, for an "
        "ensemble, over its members. Errors: means over the runs.",
        "",
    ]
    lines += [
        f"- {c.claim or c.paper.claim} ({c.paper.section}): the paper: {c.paper.says}."
        + (f" Note: {c.note}." if c.note else "")
        for c in table.claims
    ]
    lines += [f"- {n}" for n in table.notes] + [""]
    return "\n".join(lines)


def _paper(paper: PaperFigure, key: str) -> str:
    """The paper's change in error: "+1.40", ">+1.00", "+2.00 (11% -> 13%)"."""
    value = getattr(paper, key)
    cell = (">" if paper.over and value is not None else "") + _points(value)
    if key == "top1" and paper.top1_errors:
        cell += " ({:g}% -> {:g}%)".format(*paper.top1_errors)
    return cell


def _points(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f}"
