"""report.md: the page `alexctl report` writes last, from what it gathered (the runs' table, the claims, the
figures with their captions, the data used). Text only: the figures are drawn by alexctl.reporting.figures."""

from __future__ import annotations

import numpy as np

from alexctl import __version__
from alexctl.reporting import convergence
from alexctl.reporting.runs import Run


def render_markdown(
    runs: list[Run],
    figures: list[tuple[str, str]],
    notes: list[str],
    data: dict,
    split: str,
    *,
    title: str = "AlexNet runs",
    reach: float | None = None,
    claims_md: str = "",
) -> str:
    header = [
        "run",
        "path",
        "kind",
        "epochs",
        "best val top-1",
        "best val top-5",
        "1-crop top-1",
        "1-crop top-5",
        "10-crop top-1",
        "10-crop top-5",
        "images/s (median)",
    ]
    if reach is not None:
        header.append(f"first epoch with train error <= {reach:.0%}")
    lines = [
        f"# {title}",
        "",
        f"Written by alexctl {__version__} `report`. Errors on the {split} split; best val: "
        "the epoch with the lowest val top-1 error, as `train` keeps best.pt. Every figure is read from the "
        "run directories named in the table.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for run in runs:
        best = min(run.rows, key=lambda r: r["val_top1_error"]) if run.rows else {}  # the first minimum
        planned = run.config.get("train", {}).get("epochs")
        epochs = "—" if run.kind == "ensemble" else f"{len(run.rows)}" + (f"/{planned}" if planned else "")
        rates = [r["images_per_second"] for r in run.rows if r.get("images_per_second") is not None]
        kind = f"ensemble of {run.config.get('members')}" if run.kind == "ensemble" else "train"
        cells = [
            run.label,
            f"`{run.path}`",
            kind,
            epochs,
            _pct(best.get("val_top1_error")),
            _pct(best.get("val_top5_error")),
        ]
        cells += [_pct(run.evals.get(c, {}).get(k)) for c in (1, 10) for k in ("top1_error", "top5_error")]
        cells.append(f"{float(np.median(rates)):.1f}" if rates else "—")
        if reach is not None:
            cells.append(first_epoch_reaching(run.rows, reach))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    ensembles = [r for r in runs if r.kind == "ensemble"]
    lines += ["", "## Ensembles", ""] if ensembles else []
    for run in ensembles:  # each member's own errors, as the ensemble read them (top-1 / top-5)
        ev = run.evals.get(max(run.evals, default=0), {})
        e1, e5 = ev.get("member_top1_errors", []), ev.get("member_top5_errors", [])
        members = [
            f"`{m}`" + (f" ({_pct(e1[n])} / {_pct(e5[n])})" if n < min(len(e1), len(e5)) else "")
            for n, m in enumerate(run.config.get("member_dirs", []))
        ]
        lines.append(f"- **{run.name}** averages {', '.join(members)}.")
    lines += ["", claims_md] if claims_md else []
    lines += ["", "## Figures", ""]
    for name, caption in figures:
        lines += [f"![{name}]({name})", "", caption, ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    if data:
        searched = (
            f" Nearest neighbours searched {data['train_searched']} of the {data['train_images']} training images."
            if "train_searched" in data
            else ""
        )
        lines += [
            "## Data",
            "",
            f"Data directory `{data['dir']}`, split `{data['split']}`: {data['images']} "
            f"images, {data['classes']} classes.{searched}",
            "",
        ]
    return "\n".join(lines)


def first_epoch_reaching(rows: list[dict], error: float) -> str:
    """The first epoch whose training top-1 error is at most `error` (Figure 1's measure), as a table cell."""
    first = convergence.first_epoch_at_most(
        [r["epoch"] for r in rows], [r.get("train_top1_error", 1.0) for r in rows], error
    )
    return str(first) if first is not None else (f"not within {len(rows)}" if rows else "—")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"
