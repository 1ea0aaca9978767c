"""`alexctl report`: the paper's pictures of trained runs, on one Markdown page.

    runs' metrics.jsonl      -> curves.png        training curves, learning-rate cuts marked
    each run's best.pt       -> conv1-<run>.png   the conv1 kernels, one block per column (Figure 3)
    eval/<split>-*crop.npz   -> top5.png          images and their five most probable classes (Figure 4, left)
    the first run's best.pt  -> neighbours.png    training images nearest in fc7 space (Figure 4, right)
    --reach E                -> training-error.png, claims.md/.json: Figure 1, the epochs to a training error
    --baseline LABEL         -> claims.md/.json   each group of runs against LABEL's, beside the paper's figures
    all of it                -> report.md         the runs' table, the claims, the figures, the data used (last)

A run is a training run (config.json, metrics.jsonl or checkpoints/) or an ensemble (run.json of
kind "ensemble"). A figure that needs what no given run has (an ensemble has no curves and no
weights) is skipped and report.md says why. Figures are matplotlib Figure objects saved through the
Agg canvas, never pyplot: a report leaves the process's backend and figure registry alone.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexctl import rundir
from alexctl.checkpoint import load_weights
from alexctl.config import RuntimeOptions
from alexctl.data.loader import Split, load_split
from alexctl.data.resident import open_source
from alexctl.device import Runtime, reading, resolve
from alexctl.errors import UserError
from alexctl.inference.core import infer, last_hidden, predict
from alexctl.nets.build import model_from_checkpoint
from alexctl.nets.kernel_grid import grid_columns, kernel_grid
from alexctl.reporting import claims, convergence
from alexctl.reporting import figures as draw
from alexctl.reporting.page import render_markdown
from alexctl.reporting.runs import Run, load_runs
from alexctl.rundir import Evaluation

NEIGHBOURS_SHOWN = 6  # Figure 4 (right): six training images per test image
FIGURES = ("curves.png", "training-error.png", "top5.png", "neighbours.png")  # and conv1-<run>.png
CLAIMS = ("claims.md", "claims.json")
BATCH = 64
CHUNK = 4096  # images whose features are held at once while searching for neighbours


def report(
    run_dirs: list[Path | str],
    out_dir: Path,
    *,
    data_dir: Path | None = None,
    split: str = "val",
    images: int = 8,
    neighbours: int = 4,
    max_train: int = 2000,
    title: str = "AlexNet runs",
    reach: float | None = None,
    baseline: str | None = None,
    runtime: Runtime | None = None,
) -> dict:
    """Write the figures, then OUT/report.md; returns the `--json` summary. A run may be given as LABEL=DIR
    to name it on the page (runs sharing a label are seeds of one group). `reach` adds Figure 1: the column
    "first epoch with training error <= reach", its table and plot; `baseline` the table of the paper's
    claims, every other group against the group of that label (alexctl.reporting.claims)."""
    started = time.monotonic()
    runs, out = load_runs(run_dirs, split), Path(out_dir)
    if any(out.resolve() == run.path.resolve() for run in runs):
        raise UserError(f"--out {out} is one of the run directories; write the report elsewhere.")
    figure1 = convergence.figure1(runs, reach) if reach is not None and any(r.rows for r in runs) else None
    try:
        ablations = claims.ablations(runs, baseline) if baseline is not None else None
    except ValueError as e:
        raise UserError(f"--baseline {baseline!r}: {e}") from None
    runtime = runtime or resolve(RuntimeOptions(devices="cpu", workers=0))
    weighted = [r for r in runs if r.kind == "train" and r.dir.best_checkpoint.exists()]
    checkpoints = {r.name: load_weights(r.dir.best_checkpoint) for r in weighted}
    first = (weighted[0], checkpoints[weighted[0].name]) if weighted else None
    data = train = None
    data_info: dict = {}
    if images or (neighbours and first):  # read and check the data before writing anything
        data_root = _data_dir(runs, data_dir, checkpoints)
        data = load_split(data_root, split)
        data_info = {"dir": str(data_root), "split": split, "images": len(data), "classes": data.num_classes}
        if neighbours and first:
            train = load_split(data_root, "train")
            for part in (data, train):
                _check_matches(first[1], part, first[0].dir.best_checkpoint)
    figures: list[tuple[str, str]] = []  # (file name, caption), in the page's order
    notes: list[str] = []  # why a figure is missing

    # Two reports into one folder would mix their figures; the lock file goes when the report is written.
    with rundir.DirectoryLock(out / ".lock", "report", remove=True):
        rundir.remove_temporaries(out)  # what a killed report left
        _draw_curves(out, runs, figure1, figures, notes)
        figures += [_conv1_figure(run, checkpoints[run.name], out) for run in weighted]
        if not weighted:
            notes.append("No conv1 kernels and no nearest neighbours: no training run given has checkpoints/best.pt.")
        if images:
            chosen = spread(len(data), images)
            probs, source = _predictions(runs, split, data, chosen, first, runtime)
            if probs is None:
                notes.append(f"No top-5 figure: {source}")
            else:
                draw.save_figure(draw.plot_top5(data, chosen, probs), out / "top5.png")
                figures.append(
                    (
                        "top5.png",
                        f"{len(chosen)} {split} images with their five most probable classes, "
                        f"the true class in red (the paper's Figure 4, left); {source}.",
                    )
                )
        if train is not None:
            candidates = spread(len(train), max_train) if max_train else np.arange(len(train))
            queries = spread(len(data), neighbours)
            found, distances = _search(first[1], data, queries, train, candidates, runtime)
            draw.save_figure(draw.plot_neighbours(data, queries, train, found, distances), out / "neighbours.png")
            data_info.update(train_searched=len(candidates), train_images=len(train))
            figures.append(
                (
                    "neighbours.png",
                    f"{len(queries)} {split} images (left) and the {NEIGHBOURS_SHOWN} of "
                    f"{len(candidates)} training images nearest to each in the last hidden layer (fc7; Euclidean distance d, "
                    f"{first[0].name}'s best checkpoint; the paper's Figure 4, right); green: the query's "
                    "class.",
                )
            )
        for path in out.glob("*.png"):  # a re-run that draws fewer figures must not leave old ones beside the page
            if (path.name in FIGURES or path.name.startswith("conv1-")) and path.name not in dict(figures):
                path.unlink()
        tables = _write_claims(out, runs, figure1, ablations)
        page = out / "report.md"
        rundir.atomic_write_bytes(
            page,
            render_markdown(
                runs, figures, notes, data_info, split, title=title, reach=reach, claims_md=tables
            ).encode(),
        )
    summary = {
        "out": str(out),
        "report": str(page),
        "figures": [str(out / name) for name, _ in figures],
        "runs": len(runs),
        "seconds": round(time.monotonic() - started, 3),
    }
    return {**summary, "claims": str(out / "claims.md")} if tables else summary


def _draw_curves(
    out: Path, runs: list[Run], figure1: convergence.Figure1 | None, figures: list[tuple[str, str]], notes: list[str]
) -> None:
    """curves.png (every run with metrics) and, with --reach, training-error.png (Figure 1)."""
    if any(r.rows for r in runs):
        draw.save_figure(draw.plot_curves([r for r in runs if r.rows]), out / "curves.png")
        figures.append(
            (
                "curves.png",
                "Training curves: loss and top-1 error (solid: val, dotted: train) and "
                "val top-5 error against epoch; dashed verticals where the learning rate was divided "
                "(section 5).",
            )
        )
    else:
        notes.append("No training curves: no run given has a metrics.jsonl (ensembles have none).")
    if figure1 is not None:
        thresholds = sorted({figure1.reach, figure1.threshold})
        draw.save_figure(draw.plot_training_error([r for r in runs if r.rows], thresholds), out / "training-error.png")
        figures.append(
            (
                "training-error.png",
                "Training error against epochs (the paper's Figure 1: solid "
                "ReLU, dashed tanh), dotted at " + " and ".join(f"{t:.0%}" for t in thresholds) + ".",
            )
        )


def _write_claims(
    out: Path, runs: list[Run], figure1: convergence.Figure1 | None, ablations: claims.Ablations | None
) -> str:
    """claims.md (the tables alone, in the form docs/results.md takes) and claims.json (their numbers);
    returns the Markdown, or removes what an earlier report left when there is nothing to write."""
    parts = ([convergence.render_figure1(figure1)] if figure1 else []) + (
        [claims.render_ablations(ablations)] if ablations else []
    )
    if not parts:
        for name in CLAIMS:
            (out / name).unlink(missing_ok=True)
        return ""
    numbers = {
        "figure1": {**asdict(figure1), "lowered": figure1.lowered, "common_epoch": figure1.common_epoch}
        if figure1
        else None,
        "ablations": {
            "baseline": ablations.baseline,
            "top5": ablations.top5,
            "claims": [c.to_dict() for c in ablations.claims],
        }
        if ablations
        else None,
    }
    numbers["measured"] = claims.provenance(runs)
    rundir.write_json(out / "claims.json", numbers)
    text = "\n".join([f"Runs trained {numbers['measured']}.", ""] + parts)
    rundir.atomic_write_bytes(out / "claims.md", text.encode())
    return text


def spread(n: int, count: int) -> np.ndarray:
    """`count` indices spread evenly over 0..n-1 (all if count >= n): deterministic, and not just the
    first few, which in a class-sorted split would all be one class."""
    if count >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))


# ---------------------------------------------------------------- conv1 kernels (Figure 3)


def _conv1_figure(run: Run, ckpt: dict, out: Path) -> tuple[str, str]:
    config = ckpt["model_config"]
    columns = grid_columns(config.get("arch", "alexnet"), config.get("columns", 1))
    weight = ckpt["model"]["conv1.weight"]  # (K, 3, k, k)
    name = f"conv1-{run.name}.png"
    buffer = io.BytesIO()
    grid = kernel_grid(weight, columns=columns)  # (3, H, W) in [0, 1]
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(buffer, format="png")  # what torchvision's save_image writes
    rundir.atomic_write_bytes(out / name, buffer.getvalue())
    layout = "upper block column 1, lower block column 2" if columns == 2 else "one column"
    return name, (
        f"The {weight.shape[0]} conv1 kernels of {run.name} ({weight.shape[2]}x{weight.shape[3]}x3, "
        f"each scaled to its own min..max; {layout}): the paper's Figure 3."
    )


# ---------------------------------------------------------------- nearest neighbours (Figure 4, right)


def _search(
    ckpt: dict, data: Split, queries: np.ndarray, train: Split, candidates: np.ndarray, runtime: Runtime
) -> tuple[np.ndarray, np.ndarray]:
    net = model_from_checkpoint(ckpt, runtime).eval()
    mean_image = ckpt["mean_image"].to(runtime.primary)
    query_features = torch.cat([f for _, f in fc7_features(net, data, mean_image, queries, runtime)])
    return nearest_neighbours(
        query_features, fc7_features(net, train, mean_image, candidates, runtime), NEIGHBOURS_SHOWN
    )


def fc7_features(
    net: torch.nn.Module, split: Split, mean_image: torch.Tensor, indices: np.ndarray, runtime: Runtime
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(indices, (n, d) float32 on the CPU) per chunk: the last hidden layer (fc7 for AlexNet) of the center
    crop, in eval mode (no dropout). Chunks, so that a whole train split never has to fit in memory."""
    net.eval()
    with open_source(split, **reading(runtime, residency="disk")) as source:
        for i in range(0, len(indices), CHUNK):
            chunk = indices[i : i + CHUNK]
            features = infer(
                last_hidden(net, runtime),
                source,
                chunk,
                mean_image,
                crops=1,
                crop=net.input_size,
                runtime=runtime,
                batch_size=BATCH,
            )
            yield chunk, torch.from_numpy(features)


def nearest_neighbours(
    queries: torch.Tensor, candidates: Iterable[tuple[np.ndarray, torch.Tensor]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) candidate indices and Euclidean distances, nearest first, over a stream of (indices, features)
    batches. Only the best k per query are kept, so the whole train split never has to fit in memory."""
    best_d = torch.empty(len(queries), 0, dtype=torch.float64)
    best_i = torch.empty(len(queries), 0, dtype=torch.int64)
    q = queries.double()
    for indices, features in candidates:
        # Differences, not |a|^2 + |b|^2 - 2ab: an image's distance to itself is exactly 0.
        d = torch.cat([best_d, torch.cdist(q, features.double(), compute_mode="donot_use_mm_for_euclid_dist")], 1)
        i = torch.cat([best_i, torch.as_tensor(indices, dtype=torch.int64).expand(len(q), -1)], 1)
        order = d.argsort(dim=1, stable=True)[:, :k]  # stable: of equal distances, the earlier candidate
        best_d, best_i = d.gather(1, order), i.gather(1, order)
    return best_i.numpy(), best_d.numpy()


# ---------------------------------------------------------------- figures


def _data_dir(runs: list[Run], given: Path | None, checkpoints: dict[str, dict]) -> Path:
    """--data, else the data directory recorded by the first run that records one."""
    if given is not None:
        return Path(given)
    for run in runs:
        recorded = checkpoints[run.name]["data"]["dir"] if run.name in checkpoints else _recorded_data(run.path)
        if recorded:
            if not Path(recorded).is_dir():
                raise UserError(
                    f"the data directory {recorded} recorded by {run.path} does not exist; pass --data DATA_DIR."
                )
            return Path(recorded)
    raise UserError("no run given records its data directory; pass --data DATA_DIR.")


def _recorded_data(path: Path) -> str | None:
    """config.json's data directory or, for an ensemble, its first member's (members may be ensembles)."""
    d = rundir.RunDir(path)
    if d.config.exists():
        return rundir.read_json(d.config, "run configuration").get("data", {}).get("dir")
    manifest = rundir.read_json(d.manifest, "run manifest") if d.manifest.exists() else {}
    return next(filter(None, map(_recorded_data, map(Path, manifest.get("member_dirs", [])))), None)


def _check_matches(ckpt: dict, data: Split, path: Path) -> None:
    """The checkpoint's mean image and classes must fit the data the figure shows."""
    size = ckpt["mean_image"].shape[-1]
    if size != data.image_size:
        raise UserError(
            f"{path} was trained on {size}x{size} images but {data.root} holds "
            f"{data.image_size}x{data.image_size}; pass the run's own --data."
        )
    if list(ckpt["data"].get("classes") or data.classes.wnids) != list(data.classes.wnids):
        raise UserError(
            f"{data.root} has another class list than the data {path} was trained on; pass the run's own --data."
        )


def _predictions(
    runs: list[Run], split: str, data: Split, chosen: np.ndarray, first: tuple[Run, dict] | None, runtime: Runtime
) -> tuple[np.ndarray | None, str]:
    """(len(chosen), classes) probabilities and where they come from: the first run's saved predictions (10
    crops preferred), else the center-crop predictions of the first training run's best checkpoint."""
    keys = data.keys[chosen].tolist()
    for run in runs:
        for crops in (10, 1):
            path = run.dir.predictions(Evaluation(split, crops))
            if not path.exists():
                continue
            z = rundir.load_npz(path, "predictions")
            if list(z["classes"]) != list(data.classes.wnids):
                raise UserError(f"{path} predicts another class list than {data.root} has; pass the runs' --data.")
            row = {k: n for n, k in enumerate(z["keys"].tolist())}
            missing = [k for k in keys if k not in row]
            if missing:
                raise UserError(
                    f"{path} has no prediction for {missing[0]} of {data.root}; pass the runs' "
                    "--data, or re-run `alexctl eval`."
                )
            return z["probs"][[row[k] for k in keys]], f"{crops}-crop predictions of {run.name} (`{path}`)"
    if first is None:
        return None, f"no run has eval/{split}-10crop.npz or -1crop.npz, and none has a checkpoint to predict with."
    path, ckpt = first[0].dir.best_checkpoint, first[1]
    _check_matches(ckpt, data, path)
    net = model_from_checkpoint(ckpt, runtime)
    with open_source(data, **reading(runtime, residency="disk")) as source:
        probs = predict(
            net, source, chosen, ckpt["mean_image"].to(runtime.primary), crops=1, runtime=runtime, batch_size=BATCH
        )
    return probs, f"center-crop predictions computed for this report with `{path}` (no eval files found)"
