"""The paper's claims, measured from run directories and set beside the paper's own figures.

    ablations(runs, baseline)  sections 3.2-4.2, 6 and 7: each group of runs (runs sharing a LABEL) against
                               the baseline group, the difference in error paired by seed; for the claims
                               about overfitting (4.1, 4.2) also the training curves (alexctl.reporting.
                               convergence); ten crops against one on the baseline's runs; an ensemble
                               against its members
    render_ablations: the Markdown tables in the form docs/results.md takes
    (Figure 1, 3.1, the epochs to a training error: alexctl.reporting.convergence)

Everything is read from the runs' own files (metrics.jsonl, config.json, eval/*.json); alexctl.reporting.report
loads them (reporting.runs.Run) and calls this module. Errors and differences are fractions of a held-out split;
the tables print differences in percentage points (variant minus baseline: positive means the change
costs accuracy, as removing a part of the paper's recipe should).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from alexctl.config import ModelConfig, TrainConfig, defaults
from alexctl.reporting.convergence import Overfitting, Values, overfitting, render_overfitting


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
    about: bool = False  # the paper says "about" the figure
    top1_errors: tuple[float, float] | None = None  # the paper's own top-1 errors (baseline, variant), in %
    overfits: bool = False  # a claim about overfitting: the training curves are measured too
    slower: float | None = None  # the paper's factor of epochs to converge, the recipe's over the variant's


def change(arch: str, **settings) -> tuple[str, frozenset]:
    """ABLATIONS' key: the architecture and the settings in which the variant differs from the recipe."""
    return arch, frozenset(settings.items())


MIDDLE_LAYER = "removing any of the middle convolutional layers costs about 2 points of top-1 error (ILSVRC-2012 val)"


# The paper's figures (docs: /work/shared/spec/alexnet.md), for the variant that removes the part of the recipe.
# Keyed by change(arch, setting=the variant's value, ...); the baseline is the paper's recipe.
ABLATIONS: dict[tuple[str, frozenset], PaperFigure] = {
    change("alexnet", lrn=False): PaperFigure(
        "no LRN", "3.3", 1.4, 1.2, "response normalisation cuts top-1 / top-5 error by 1.4 / 1.2 points (ILSVRC)"
    ),
    change("cifar", lrn=False): PaperFigure(
        "no LRN",
        "3.3",
        2.0,
        None,
        "CIFAR-10 test error: 13% without response normalisation, 11% with it",
        top1_errors=(11, 13),
    ),
    change("alexnet", pooling="plain"): PaperFigure(
        "non-overlapping pooling (z = s = 2)",
        "3.4",
        0.4,
        0.3,
        "overlapping pooling (z = 3, s = 2) cuts top-1 / top-5 error by 0.4 / 0.3 points (ILSVRC)",
    ),
    change("alexnet", columns=1): PaperFigure(
        "one column at half width",
        "3.2",
        1.7,
        1.2,
        "two columns cut top-1 / top-5 error by 1.7 / 1.2 points against one with half the kernels (ILSVRC)",
    ),
    change("alexnet", lighting_std=0.0): PaperFigure(
        "no PCA lighting",
        "4.1",
        1.0,
        None,
        "PCA colour augmentation cuts top-1 error by over 1 point (ILSVRC)",
        over=True,
    ),
    **{
        change("alexnet", drop_layer=layer): PaperFigure(f"no {layer}", "7", 2.0, None, MIDDLE_LAYER, about=True)
        for layer in ("conv3", "conv4", "conv5")
    },
    change("alexnet", dropout=0.0): PaperFigure(
        "no dropout",
        "4.2",
        None,
        None,
        '"without dropout, our network exhibits substantial overfitting. Dropout roughly doubles the number '
        'of iterations required to converge" (ILSVRC)',
        overfits=True,
        slower=2.0,
    ),
    change("alexnet", train_crop="center", flip=False): PaperFigure(
        "no translations or reflections",
        "4.1",
        None,
        None,
        '"without this scheme [random 224x224 patches and their reflections], our network suffers from '
        'substantial overfitting" (ILSVRC)',
        overfits=True,
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
IGNORED_SETTINGS = {"seed"}  # what may differ between the seeds of one group
DEFAULTS = {**defaults(ModelConfig), **defaults(TrainConfig)}


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


# ---------------------------------------------------------------- ablations (3.2-4.2, 6, 7)


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
    overfitting: Overfitting | None = None  # the training curves, for a claim about overfitting (4.1, 4.2)

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
            "overfitting": self.overfitting.to_dict() if self.overfitting else None,
        }


@dataclass
class Ablations:
    baseline: str
    claims: list[Claim] = field(default_factory=list)
    top5: bool = True  # False when the data has five classes or fewer (top-5 error is then always 0)
    notes: list[str] = field(default_factory=list)


def ablations(runs: list, baseline: str) -> Ablations:
    """Every group of `runs` (reporting.runs.Run, grouped by label) against the group labelled `baseline`: the
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
    """The run's model and training settings; one its config.json lacks (written before the setting existed)
    has its default, so an older baseline still pairs with a newer variant."""
    config = run.config
    return {**DEFAULTS, **config.get("model", {}), **config.get("train", {})}


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
    known = ABLATIONS.get(change(arch, **changed))
    paper = known or PaperFigure(label, "—", None, None, "no figure for this change")
    crops = measure_of(base + variant)
    note = (
        ""
        if known or len(changed) == 1
        else (
            "differs from the baseline in " + ", ".join(f"{k} = {v!r}" for k, v in changed.items())
            if changed
            else "the same settings as the baseline"
        )
    )
    claim = _compare(paper, base_label, label, measure_name(crops), base, variant, lambda r: errors_of(r, crops), top5)
    claim.note = "; ".join(filter(None, [note, claim.note]))
    if paper.overfits:
        claim.overfitting = overfitting(base, variant, _seed)
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
    curves = [
        (
            f"{c.claim or c.paper.claim} ({c.paper.section})",
            f"{c.baseline} vs {c.variant}",
            c.paper.slower,
            c.overfitting,
        )
        for c in table.claims
        if c.overfitting
    ]
    return "\n".join(lines + ([render_overfitting(curves)] if curves else []))


def _paper(paper: PaperFigure, key: str) -> str:
    """The paper's change in error: "+1.40", ">+1.00", "~+2.00", "+2.00 (11% -> 13%)"."""
    value = getattr(paper, key)
    cell = (">" if paper.over and value is not None else "~" if paper.about and value is not None else "") + _points(
        value
    )
    if key == "top1" and paper.top1_errors:
        cell += " ({:g}% -> {:g}%)".format(*paper.top1_errors)
    return cell


def _points(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f}"
