"""The GPU check's figures (issue 17, "Figures owed"), each judged against its target, and its Markdown table.

Read from the planner's records (gpu-check.json: each step's "result"), so that what an earlier call measured on
another machine counts as much as this call's. A figure not yet measured says so; nothing is filled in.
"""

from __future__ import annotations

from pathlib import Path

from alexctl.benchmarking.gpubench import all_variants, fastest, median

IMAGENETTE_IMAGES = 9_469  # both parts of Imagenette's training split (../shared/data/README.md)
ILSVRC_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012's training split
STOCK_ANCHOR_SECONDS, STOCK_ANCHOR_TOP1 = 393, 0.834  # issue 17: the stock recipe, 90 Imagenette epochs, an H100
BENCH_STEPS = ("bench-eager", "bench-compiled", "bench-256")


def figures(doc: dict) -> list[dict]:
    """The owed figures from the measurements so far, each with its target and whether it is met."""
    results = {name: (record.get("result") or {}) for name, record in doc.get("steps", {}).items()}
    variants = all_variants({s: results.get(s, {}) for s in BENCH_STEPS})
    best = fastest(variants)
    ten_crop = max(
        ((r["crops_per_second"], r["name"], r.get("tf32")) for r in results.get("ten-crop", {}).get("rows", [])),
        default=(None, None, None),
    )
    jpeg = next((v for v in variants if v["name"] == "residency jpeg" and not v.get("error")), {})
    ilsvrc_rate, ilsvrc_basis = (
        (median(jpeg, "end_to_end"), "residency jpeg (ILSVRC-2012 at 256 px: ~25 GB as JPEG, ~252 GB decoded)")
        if median(jpeg, "end_to_end")
        else ((best or {}).get("end_to_end"), (best or {}).get("name"))
    )
    paper, stock = results.get("paper", {}), results.get("stock", {})
    paper_90 = _paper_projection(paper)
    stock_90 = _stock_projection(stock)
    tf32 = f"; TF32 {'on' if (best or {}).get('tf32') else 'off'}" if best else ""
    return [
        _figure(
            "end to end / synthetic",
            _ratio(best, "end_to_end", "synthetic"),
            "",
            ">=",
            0.95,
            best and f"{best['name']} (network: {best['network']}){tf32}",
        ),
        _figure(
            "paper net, end-to-end training",
            best and best["end_to_end"],
            "images/s",
            ">=",
            25_000,
            best and best["name"] + tf32,
        ),
        _figure(
            "ten-crop evaluation",
            ten_crop[0],
            "crops/s",
            ">=",
            40_000,
            ten_crop[1] and f"`alexctl eval`'s inference, {ten_crop[1]}; TF32 {'on' if ten_crop[2] else 'off'}",
        ),
        _figure("90 Imagenette epochs, paper recipe, excluding compile", paper_90[0], "s", "<=", 60, paper_90[1]),
        _figure("90 Imagenette epochs, stock torchvision recipe", stock_90[0], "s", None, None, stock_90[1]),
        _figure(
            "paper recipe's speed-up over the stock recipe",
            stock_90[0] / paper_90[0] if paper_90[0] and stock_90[0] else None,
            "x",
            None,
            None,
            "the two 90-epoch projections above",
        ),
        _figure(
            "projected 90 ILSVRC-2012 epochs",
            ilsvrc_rate and ILSVRC_TRAIN_IMAGES * 90 / ilsvrc_rate / 60,
            "min",
            "<",
            80,
            ilsvrc_basis
            and f"{ILSVRC_TRAIN_IMAGES:,} images x 90 at the end-to-end rate of {ilsvrc_basis}; no compile",
        ),
    ]


def _paper_projection(paper: dict) -> tuple[float | None, str | None]:
    """The epochs' seconds without the first epoch's extra (compile), scaled from this part to all of Imagenette
    (and to 90 epochs, when fewer ran: a dry run)."""
    images = (paper.get("train_images") or 0) + (paper.get("val_images") or 0)
    if paper.get("epochs_seconds") is None or not images or not paper.get("epochs"):
        return None, None
    factor = IMAGENETTE_IMAGES / images * 90 / paper["epochs"]
    scaled = f"x{factor:.2f} to 90 epochs of Imagenette's {IMAGENETTE_IMAGES:,} images"
    return paper["epochs_seconds"] * factor, (
        f"{paper['epochs_seconds']:.1f} s in {paper['epochs']} epochs on this part's {images:,} images, {scaled}; "
        f"compile and warm-up apart: {paper['first_epoch_extra_seconds']:.1f} s; the command took "
        f"{paper.get('wall_seconds')} s"
    )


def _stock_projection(stock: dict) -> tuple[float | None, str | None]:
    images = (stock.get("train_images") or 0) + (stock.get("val_images") or 0)
    if not stock.get("typical_epoch_seconds") or not images:
        return None, None
    factor = IMAGENETTE_IMAGES / images
    return stock["typical_epoch_seconds"] * 90 * factor, (
        f"a typical epoch ({stock['typical_epoch_seconds']:.1f} s, of {stock['epochs']}) x 90, x{factor:.2f} to "
        f"Imagenette's {IMAGENETTE_IMAGES:,} images; issue 17's anchors: {STOCK_ANCHOR_SECONDS} s, {STOCK_ANCHOR_TOP1:.1%} top-1"
    )


def _figure(name, value, unit, comparison, target, basis) -> dict:
    met = (
        None
        if value is None or target is None
        else (value >= target if comparison == ">=" else value <= target if comparison == "<=" else value < target)
    )
    status = "not measured" if value is None else ("no target" if target is None else ("met" if met else "not met"))
    return {
        "name": name,
        "value": None if value is None else round(value, 3),
        "unit": unit,
        "comparison": comparison,
        "target": target,
        "met": status,
        "basis": basis,
    }


def _ratio(values: dict | None, top: str, bottom: str) -> float | None:
    if not values or not values.get(top) or not values.get(bottom):
        return None
    return values[top] / values[bottom]


# ---------------------------------------------------------------- the table


def markdown(doc: dict) -> str:
    """For docs/benchmarks.md: the machine, the command, the figures, preflight, the tests, every bench row."""
    m = doc["machine"]
    results = {name: (record.get("result") or {}) for name, record in doc.get("steps", {}).items()}
    lines = [
        f"# GPU check: {m['device_name']}",
        "",
        f"torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}, torchvision {m['torchvision']}, triton "
        f"{m['triton']}, Python {m['python']}, {m['cpu_count']} CPU cores; alexctl {doc['alexctl_version']}.",
        f"Command: `{doc['command']}`; updated {doc.get('updated', '')}.",
    ]
    prep = results.get("prepare", {})
    if prep.get("train_images"):
        lines.append(
            f"Data: {Path(prep['source']).name}, {prep['train_images']:,} train and {prep['val_images']:,} held-out "
            f"images ({prep['holdout']:.0%} of each of {prep['classes']} classes)."
        )
    if doc.get("scale", {}).get("mode") == "dry":
        lines += [
            "",
            "**Dry run on a machine without CUDA**: it checks that every step runs. Its numbers are not figures.",
        ]
    lines += ["", "## Figures", "", "| figure | measured | target | | basis |", "|---|---|---|---|---|"]
    for f in doc.get("figures", []):
        target = f"{f['comparison']} {_number(f['target'])} {f['unit']}" if f["target"] is not None else ""
        value = f"{_number(f['value'])} {f['unit']}" if f["value"] is not None else "not measured"
        lines.append(f"| {f['name']} | {value} | {target} | {f['met']} | {f['basis'] or ''} |")
    checks = results.get("preflight", {}).get("checks", {})
    if checks:
        lines += ["", "## Preflight", "", "| check | | detail | s |", "|---|---|---|---|"]
        lines += [
            f"| {n} | {'ok' if c['ok'] else 'FAILED'} | {c['detail']} | {c['seconds']} |" for n, c in checks.items()
        ]
    tests = results.get("cuda-tests", {})
    if tests:
        lines += [
            "",
            f"CUDA-path tests: {tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, "
            f"{tests['skipped']} skipped"
            + (f" (failed: {', '.join(tests['failures'])})" if tests["failures"] else "")
            + ".",
        ]
    lines += _bench_rows(results)
    for row in results.get("ten-crop", {}).get("rows", []):
        lines.append(
            f"- ten crops ({row['name']}): {_number(row['crops_per_second'])} crops/s on {row['images']:,} images, batch "
            f"{row['batch_size']}, first pass {row['first_pass_seconds']} s apart; TF32 {'on' if row['tf32'] else 'off'}"
            + (f"; stand-in: {row['stand_in']}" if row.get("stand_in") else "")
        )
    return "\n".join(lines) + "\n"


def _bench_rows(results: dict) -> list[str]:
    rows = []
    for step in BENCH_STEPS:
        result = results.get(step, {})
        for v in result.get("variants", []):
            note = (
                v.get("error") and f"failed: {v['error']}" or (v.get("stand_in") and f"stand-in: {v['stand_in']}") or ""
            )
            tf32 = "on" if v.get("tf32") else "off"
            if not v["rows"]:
                rows.append(f"| {v['name']} | {result['batch_size']} | | | | | | {tf32} | {note} |")
            for r in v["rows"]:
                rows.append(
                    f"| {v['name']} | {result['batch_size']} | {r['measure'].replace('_', ' ')} | {_number(r['median'])} "
                    f"| {_number(r['min'])} | {_number(r['max'])} | {r['unit']} | {tf32} | {note} |"
                )
    if not rows:
        return []
    head = ["", "## Speed (median, min and max of the timed windows)", ""]
    head += [
        "| variant | batch | measure | median | min | max | unit | TF32 | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    return head + rows


def _number(x) -> str:
    return f"{x:,.0f}" if isinstance(x, (int, float)) and abs(x) >= 100 else (f"{x:.3g}" if x is not None else "")
