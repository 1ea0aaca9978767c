"""The paper's pictures, drawn: training curves, training error against epochs (Figure 1), top-5
predictions and nearest neighbours (Figure 4); the conv1 kernel grid (Figure 3) is alexctl.nets.kernel_grid.
Pure drawing: `alexctl.reporting.report` gathers the data.

Figures are matplotlib Figure objects saved through the Agg canvas, never pyplot, so drawing
leaves the process's backend and figure registry alone.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter

from alexctl import rundir
from alexctl.data.loader import Split
from alexctl.data.transform import decode_jpeg

TOP_CLASSES = 5  # Figure 4 (left): the five most probable labels


def plot_curves(runs: list) -> Figure:
    """Loss, top-1 error (val and train) and top-5 val error against epoch, one colour per run."""
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = [
        ("loss", "train_loss", "val_loss"),
        ("top-1 error", "train_top1_error", "val_top1_error"),
        ("top-5 error (val)", None, "val_top5_error"),
    ]
    for n, run in enumerate(runs):
        colour, epochs = f"C{n % 10}", [r["epoch"] for r in run.rows]
        for ax, (_, train_key, val_key) in zip(axes, panels):
            ax.plot(epochs, [r.get(val_key) for r in run.rows], "-o", color=colour, ms=3, label=run.name)
            if train_key:
                ax.plot(epochs, [r.get(train_key) for r in run.rows], ":", color=colour, marker=".")
            for epoch in lr_cuts(run.rows):  # between the last epoch at the old rate and the first at the new
                ax.axvline(epoch + 0.5, color=colour, ls="--", lw=1, alpha=0.7)
    for ax, (title, _, _) in zip(axes, panels):
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if "error" in title:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    drawn = (("-", "val"), (":", "train")) + ((("--", "lr / 10"),) if any(lr_cuts(run.rows) for run in runs) else ())
    styles = [Line2D([], [], color="k", ls=ls, label=label) for ls, label in drawn]
    axes[0].legend(handles=styles, loc="upper right", fontsize=8)
    axes[2].legend(loc="upper right", fontsize=8, title="run")
    return fig


def plot_training_error(runs: list, thresholds: list[float]) -> Figure:
    """The paper's Figure 1: training error against epochs, one line per run (solid for ReLU, dashed for
    tanh, as the paper draws them), with dotted horizontals at the thresholds measured."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for n, run in enumerate(runs):
        dashed = run.config.get("model", {}).get("activation") == "tanh"
        start = [(0, _chance(run))] if _chance(run) is not None else []  # chance before the first step
        epochs, errors = zip(*start, *((r["epoch"], r["train_top1_error"]) for r in run.rows))
        ax.plot(epochs, errors, "--" if dashed else "-", color=f"C{n % 10}", marker=".", label=run.label)
    for t in thresholds:
        ax.axhline(t, color="k", ls=":", lw=1)
        ax.annotate(
            f"{t:.0%}",
            (1, t),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3),
            textcoords="offset points",
            ha="right",
            fontsize=8,
        )
    ax.set(xlabel="epochs", ylabel="training error rate", ylim=(0, None), xlim=(0, None))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def _chance(run) -> float | None:
    classes = run.config.get("data", {}).get("classes")
    return 1 - 1 / classes if classes else None


def lr_cuts(rows: list[dict]) -> list[int]:
    """Epochs after which the learning rate was reduced: `lr_reduced_after`, or `lr` differing in the next row."""
    cuts = {r["epoch"] for r in rows if r.get("lr_reduced_after")}
    cuts |= {a["epoch"] for a, b in zip(rows, rows[1:]) if b.get("lr") != a.get("lr")}
    return sorted(cuts)


def plot_top5(data: Split, chosen: np.ndarray, probs: np.ndarray) -> Figure:
    """Each image above a bar chart of its five most probable classes; the true class's bar in red (Figure 4)."""
    cols = min(4, len(chosen))
    rows = -(-len(chosen) // cols)
    # A fixed layout (inches, the same for every cell), not matplotlib's constrained one, whose solver is most
    # of the drawing's cost: saving this figure took 1.45 s of CPU with it, 0.84 s without (the README tour's
    # report, cpu-2, 2026-12-07), and the cells never change.
    width, height = 3.4 * cols, 4.2 * rows
    fig = Figure(figsize=(width, height))
    grid = fig.add_gridspec(
        2 * rows,
        cols,
        height_ratios=[3, 1.7] * rows,
        **_margins(
            (width, height), (2 * rows, cols), left=1.4, right=0.15, top=0.3, bottom=0.3, wspace=1.45, hspace=0.45
        ),
    )
    names = data.classes.names
    for n, (i, p) in enumerate(zip(chosen, probs)):
        r, c = divmod(n, cols)
        truth, top = int(data.labels[i]), np.argsort(-p, kind="stable")[:TOP_CLASSES]
        ax = fig.add_subplot(grid[2 * r, c])
        ax.imshow(decode_jpeg(data.read(int(i))))
        ax.set_axis_off()
        ax.set_title(short(names[truth]), fontsize=9, fontweight="bold")
        bars = fig.add_subplot(grid[2 * r + 1, c])
        bars.barh(range(len(top)), p[top], color=["tab:red" if t == truth else "tab:blue" for t in top])
        bars.set_yticks(range(len(top)), [short(names[t]) for t in top], fontsize=8)
        bars.invert_yaxis()  # the most probable on top
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=7)
    return fig


def plot_neighbours(data: Split, queries: np.ndarray, train: Split, found: np.ndarray, distances: np.ndarray) -> Figure:
    """One row per query: the query, then its neighbours with their distance and class."""
    names = train.classes.names
    width, height = 1.9 * (1 + found.shape[1]), 2.2 * len(queries)
    fig = Figure(figsize=(width, height))  # a fixed layout, as plot_top5's
    grid = (len(queries), 1 + found.shape[1])
    spacing = _margins((width, height), grid, left=0.05, right=0.05, top=0.4, bottom=0.05, wspace=0.1, hspace=0.4)
    axes = np.array(fig.subplots(*grid, squeeze=False, gridspec_kw=spacing))
    for row, q in enumerate(queries):
        truth = int(data.labels[q])
        axes[row, 0].imshow(decode_jpeg(data.read(int(q))))
        axes[row, 0].set_title(f"query\n{short(names[truth], 18)}", fontsize=8, fontweight="bold")
        for col, (i, d) in enumerate(zip(found[row], distances[row]), 1):
            label = int(train.labels[i])
            axes[row, col].imshow(decode_jpeg(train.read(int(i))))
            axes[row, col].set_title(
                f"d = {d:.3g}\n{short(names[label], 18)}", fontsize=8, color="tab:green" if label == truth else "black"
            )
    for ax in axes.flat:
        ax.set_axis_off()
    return fig


def _margins(size: tuple, grid: tuple, *, left, right, top, bottom, wspace, hspace) -> dict:
    """A gridspec's margins and gaps, given in inches, as the fractions matplotlib takes: the margins of the
    figure's `size` (width, height), the gaps of the mean cell of a `grid` of (rows, columns)."""
    (width, height), (rows, cols) = size, grid
    cell_w = (width - left - right - (cols - 1) * wspace) / cols
    cell_h = (height - top - bottom - (rows - 1) * hspace) / rows
    return dict(
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=wspace / cell_w,
        hspace=hspace / cell_h,
    )


def short(name: str, width: int = 24) -> str:
    name = name.split(",")[0]  # ImageNet's names list synonyms: "tench, Tinca tinca"
    return name if len(name) <= width else name[: width - 1] + "…"


def save_figure(fig: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    rundir.atomic_write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------- inputs
