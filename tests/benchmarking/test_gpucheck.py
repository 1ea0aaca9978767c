"""alexctl.benchmarking.gpucheck and pipelines/gpu-check.mk: what the GPU check compares and how it judges the figures
(from made-up numbers), the stock recipe's partition, and the whole check's dry version on this CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from alexctl.benchmarking import gpucheck, stock

from helpers import ROOT, SHARED_DATA


def _variants(cuda: bool, scale, done=None) -> list[tuple]:
    return list(gpucheck.ladder(cuda, scale, done or {}))


def test_the_ladder_compares_every_switch_the_issue_names_on_a_gpu():
    variants = _variants(True, gpucheck.FULL)
    options = {name: o for name, _, o, _, _ in variants}
    assert all(skip is None for *_, skip in variants)
    assert options["fp32, eager"]["precision"] == "fp32" and options["fp32, eager"]["compile"] is False
    assert {o["lrn_impl"] for o in options.values()} == {"torch", "triton"}
    assert {o["conv_form"] for o in options.values()} == {"groups", "split", "blockdiag", "auto"}
    assert any(o["compile"] and not o["cuda_graphs"] for o in options.values())
    assert sum(o["cuda_graphs"] for o in options.values()) == 2  # both LRNs under compile + CUDA graphs
    assert [n for n, group, *_ in variants if group == "residency"] == [
        "residency disk",
        "residency jpeg",
        "residency decoded",
    ]
    assert [group for _, group, *_ in variants][-1] == "stock"


def test_the_ladder_takes_the_faster_lrn_and_the_fastest_network_from_what_was_measured():
    def measured(name, synthetic, end_to_end=None):
        rows = [{"measure": "synthetic", "median": synthetic}]
        rows += [{"measure": "end_to_end", "median": end_to_end}] if end_to_end else []
        return name, {"name": name, "group": "network", "options": {"marker": name}, "rows": rows}

    done = dict([measured("bf16 + channels-last", 100.0, 90.0), measured("bf16 + channels-last, Triton LRN", 150.0)])
    variants = _variants(True, gpucheck.FULL, done)
    compiled = [o for _, group, o, _, _ in variants if group == "network" and o["compile"]]
    assert compiled[0]["lrn_impl"] == "triton" and compiled[-1]["lrn_impl"] == "torch"
    residency = [o for _, group, o, _, _ in variants if group == "residency"]
    assert all(o["marker"] == "bf16 + channels-last" for o in residency)  # the only one with an end to end


def test_a_dry_run_skips_what_needs_cuda_and_says_why():
    skipped = {name: skip for name, *_, skip in _variants(False, gpucheck.DRY) if skip}
    assert "bf16 + channels-last, Triton LRN" in skipped and skipped["bf16 + channels-last, Triton LRN"] == "needs CUDA"
    assert sum("compile" in name for name in skipped) == 3


def _doc(synthetic, end_to_end, ten_crop, jpeg, paper_wall, stock_wall):
    variant = {
        "name": "fast",
        "group": "network",
        "options": {},
        "rows": [
            {"measure": "synthetic", "median": synthetic},
            {"measure": "end_to_end", "median": end_to_end},
            {"measure": "ten_crop", "median": ten_crop},
        ],
    }
    residency = {
        "name": "residency jpeg",
        "group": "residency",
        "options": {},
        "rows": [{"measure": "end_to_end", "median": jpeg}],
    }
    recipe = {"complete": True, "train_images": 4239, "val_images": 471, "val_seconds": 0.0}
    return {
        "steps": {
            "bench": {"variants": [variant, residency]},
            "paper": {**recipe, "wall_seconds": paper_wall, "train_seconds": paper_wall - 10},
            "stock": {**recipe, "wall_seconds": stock_wall, "train_seconds": stock_wall - 10},
        }
    }


def test_figures_are_computed_from_the_numbers_and_judged_against_their_targets():
    figures = {f["name"]: f for f in gpucheck.figures(_doc(20_000, 19_500, 45_000, 18_000, 40.0, 200.0))}
    ratio = figures["end to end / synthetic"]
    assert ratio["value"] == pytest.approx(0.975) and ratio["met"] == "met"
    assert figures["paper net, end-to-end training"]["met"] == "not met"  # 19,500 < 25,000
    assert figures["ten-crop evaluation"]["value"] == 45_000 and figures["ten-crop evaluation"]["met"] == "met"
    ilsvrc = figures["projected 90 ILSVRC-2012 epochs"]
    assert ilsvrc["value"] == pytest.approx(1_281_167 * 90 / 18_000 / 60, rel=1e-4)  # at the jpeg residency's rate
    assert ilsvrc["met"] == ("met" if ilsvrc["value"] < 80 else "not met")
    # the epochs (30 s) scale to all of Imagenette (9,469 images), the 10 s outside them do not
    paper = figures["90 Imagenette epochs, paper recipe"]
    assert paper["value"] == pytest.approx(10 + 30 * 9469 / 4710, rel=1e-4) and paper["met"] == "not met"
    assert figures["paper recipe's speed-up over the stock recipe"]["value"] == pytest.approx(5.0)
    assert figures["90 Imagenette epochs, stock torchvision recipe"]["met"] == "no target"
    fast = {f["name"]: f for f in gpucheck.figures(_doc(30_000, 29_000, 45_000, 29_000, 25.0, 200.0))}
    assert fast["paper net, end-to-end training"]["met"] == "met"
    assert fast["90 Imagenette epochs, paper recipe"]["met"] == "met"


def test_figures_not_yet_measured_say_so():
    figures = gpucheck.figures({"steps": {}})
    assert {f["met"] for f in figures} == {"not measured"} and all(f["value"] is None for f in figures)


def test_the_fastest_runtime_becomes_the_training_flags():
    options = {
        "precision": "bf16",
        "channels_last": "on",
        "compile": True,
        "cuda_graphs": True,
        "lrn_impl": "triton",
        "conv_form": "auto",
        "residency": "decoded",
    }
    flags = gpucheck.runtime_flags(options)
    assert " ".join(flags) == (
        "--precision bf16 --channels-last on --lrn-impl triton --conv-form auto "
        "--residency decoded --compile --cuda-graphs"
    )
    assert "--compile" not in gpucheck.runtime_flags({**options, "compile": False, "cuda_graphs": False})


def test_the_stock_recipe_reads_the_files_of_the_same_partition(slice_data, imagenette_slice):
    from alexctl.data.loader import load_split

    files = stock.partition(slice_data)
    train, val = load_split(slice_data, "train"), load_split(slice_data, "val")
    assert (len(files.train), len(files.val)) == (len(train), len(val)) == (110, 10)
    assert not set(files.train) & set(files.val)
    assert all(p.is_file() and p.is_relative_to(imagenette_slice) for p in files.train + files.val)
    # each file's folder is the class its label names, in the data directory's class order
    assert all(files.classes[label] == path.parent.name for path, label in zip(files.val, files.val_labels))
    assert sorted(np.bincount(files.val_labels)) == [1] * 10


def test_the_stock_transforms_give_the_recipe_s_shapes(imagenette_slice):
    from PIL import Image

    image = Image.open(next(imagenette_slice.rglob("*.JPEG"))).convert("RGB")
    assert tuple(stock.train_transform()(image).shape) == (3, 224, 224)
    assert tuple(stock.eval_transform()(image).shape) == (3, 224, 224)
    ten = stock.ten_crop_transform()(image)
    assert tuple(ten.shape) == (10, 3, 224, 224) and abs(float(ten.mean())) < 3  # normalised


@pytest.mark.slow
def test_the_dry_gpu_check_runs_every_step_and_writes_its_table(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    poison = tmp_path / "poison"
    poison.mkdir()
    (poison / "webdataset.py").write_text("raise ImportError('webdataset must not be imported at run time')\n")
    env = {**os.environ, "PYTHONPATH": str(poison), "ALEXCTL_PROGRESS_SECONDS": "1000"}
    make = [
        "make",
        "-s",
        "-f",
        str(ROOT / "pipelines" / "gpu-check.mk"),
        f"OUT={out}",
        f"WORK={work}",
        f"PY={sys.executable}",
        f"PART={SHARED_DATA / 'imagenette-224' / 'train-1of2.tar'}",
        f"SITE={tmp_path}/site",
    ]
    proc = subprocess.run(make, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "gpu-check.json").read_text())
    assert doc["mode"] == "dry" and doc["scale"]["width"] == 0.125
    assert all(doc["steps"][s]["complete"] for s in ("prepare", "bench", "paper", "stock"))
    assert all((out / "steps" / f"{s}.json").exists() for s in ("prepare", "bench", "paper", "stock"))

    variants = {v["name"]: v for v in doc["steps"]["bench"]["variants"]}
    assert len(variants) == len(_variants(False, gpucheck.DRY))
    for v in variants.values():
        assert "error" not in v, v
        assert bool(v.get("skipped")) != bool(v["rows"]), v  # measured, or skipped with a reason
        for row in v["rows"]:
            assert 0 < row["min"] <= row["median"] <= row["max"], row
    assert {r["measure"] for r in variants["fp32, eager"]["rows"]} == {
        "data_path",
        "synthetic",
        "end_to_end",
        "ten_crop",
    }
    assert [v["residency_reason"].split(",")[0] for n, v in variants.items() if n.startswith("residency")] == [
        "disk",
        "jpeg",
        "decoded",
    ]
    assert doc["steps"]["bench"]["fastest"]["name"] in variants

    prepared = doc["steps"]["prepare"]
    for name in ("paper", "stock"):
        recipe = doc["steps"][name]
        assert recipe["epochs"] == 2 and recipe["wall_seconds"] > 0
        assert (recipe["train_images"], recipe["val_images"]) == (prepared["train_images"], prepared["val_images"])
        for crops in ("1crop", "10crop"):
            errors = recipe[f"errors_{crops}"]
            assert 0 <= errors["top1"] <= 1 and 0 <= errors["top5"] <= errors["top1"] and errors["images"] == 5
    assert doc["steps"]["paper"]["options"] == doc["steps"]["bench"]["fastest"]["options"]

    for figure in doc["figures"]:  # each judged from its own number
        if figure["value"] is None or figure["target"] is None:
            continue
        value, target = figure["value"], figure["target"]
        met = (
            value >= target
            if figure["comparison"] == ">="
            else value <= target
            if figure["comparison"] == "<="
            else value < target
        )
        assert figure["met"] == ("met" if met else "not met"), figure
    assert sum(f["value"] is not None for f in doc["figures"]) == len(doc["figures"])

    table = (out / "gpu-check.md").read_text()
    assert "Dry run" in table and doc["machine"]["torch"] in table and "make -f pipelines/gpu-check.mk" in table
    assert all(name in table for name in variants) and all(f["name"] in table for f in doc["figures"])
    assert table in proc.stdout  # the report's table is printed last
    # Every step is a file written last: a second make has nothing to do.
    assert subprocess.run(["make", "-q", *make[2:]], env=env).returncode == 0
