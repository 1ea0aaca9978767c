"""alexctl gpu-check (alexctl.benchmarking.gpucheck and its steps): what it plans within the budget, what each
bench step compares, how it judges the figures (from made-up numbers), the stock recipe's partition, and the
whole check's dry version on this CPU, continued from its OUT folder on a "fresh machine"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from alexctl.benchmarking import gpubench, gpucheck, gpufigures, gpurecipes, plan, stock

import zygote
from helpers import ROOT, SHARED_DATA


def test_the_full_check_is_planned_within_480_s_in_the_issue_s_order(tmp_path):
    steps = gpucheck.steps(gpucheck.Paths(tmp_path / "out", tmp_path / "work"), gpucheck.FULL, Path("part.tar"))
    planned = plan.plan(steps, gpucheck.BUDGET_S, {})
    names = [s.name for s in planned.run]
    assert names[:4] == ["preflight", "prepare", "cuda-tests", "bench-eager"]
    assert names.index("bench-compiled") < names.index("ten-crop") < names.index("paper") < names.index("stock")
    assert sum(s.estimate_s for s in planned.run) <= gpucheck.BUDGET_S
    assert planned.owed == {"bench-256": "does not fit: estimate 60 s, 15 s of the budget left"}
    # each step is the same command with --step: a child process the planner can stop
    assert all(s.argv[1:5] == ["-m", "alexctl", "gpu-check", "--step"] and s.argv[5] == s.name for s in steps)
    assert all(s.estimate_s < s.cap_s for s in steps)


def test_the_cuda_tests_step_runs_every_test_file_with_a_test_that_skips_without_cuda():
    # conftest.py marks `cuda` the tests whose skipif reason says this
    marked = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if p != Path(__file__) and 'reason="needs a CUDA device"' in p.read_text()
    )
    assert marked == sorted(gpucheck.CUDA_TEST_FILES)


def _measured(name, synthetic=None, end_to_end=None, group="network", **extra):
    rows = [{"measure": "synthetic", "median": synthetic}] if synthetic else []
    rows += [{"measure": "end_to_end", "median": end_to_end}] if end_to_end else []
    return {"name": name, "group": group, "options": {"marker": name}, "rows": rows, "tf32": True, **extra}


def test_the_bench_steps_compare_every_switch_the_issue_names():
    eager = list(gpubench.variants("bench-eager", {}, []))
    options = {name: o for name, o, _ in eager}
    assert options["fp32, eager"]["precision"] == "fp32" and options["fp32, eager"]["channels_last"] == "off"
    assert {o["lrn_impl"] for o in options.values()} == {"torch", "triton"}
    assert {o["conv_form"] for o in options.values()} == {"groups", "split", "blockdiag", "auto"}
    assert not any(o["compile"] for o in options.values())
    earlier = {
        "bench-eager": {
            "variants": [
                _measured("bf16 + channels-last", 100.0, 90.0),
                _measured("bf16 + channels-last, Triton LRN", 150.0),
            ]
        }
    }
    done: list[dict] = []
    compiled = gpubench.variants("bench-compiled", earlier, done)
    first = next(compiled)
    assert first[0] == "bf16 + channels-last + compile (triton LRN)"  # the faster LRN in eager mode
    second = next(compiled)
    assert second[1]["cuda_graphs"] and second[1]["lrn_impl"] == "triton"
    done.append(_measured(second[0], 300.0, 280.0, options=second[1]))
    residencies = list(compiled)
    assert [n for n, _, _ in residencies] == ["residency disk", "residency jpeg", "residency decoded"]
    assert all(o["cuda_graphs"] and o["residency"] == n.split()[-1] for n, o, _ in residencies)  # the fastest net
    (name, options, measures), *_ = gpubench.variants("bench-256", {"x": {"variants": done}}, [])
    assert name.startswith("batch 256: bf16 + channels-last + compile + CUDA graphs") and options["cuda_graphs"]


def test_without_cuda_a_variant_runs_a_stand_in_that_says_what_it_replaces():
    options, why = gpubench.stand_in_for({**gpubench.BF16, "compile": True, "cuda_graphs": True, "lrn_impl": "triton"})
    if gpubench.torch.cuda.is_available():
        assert why is None
        return
    assert (options["compile"], options["cuda_graphs"], options["lrn_impl"]) == (False, False, "torch")
    assert why == "eager, torch LRN in place of compile, cuda_graphs, Triton LRN (no CUDA)"
    assert gpubench.stand_in_for(gpubench.BF16) == (gpubench.BF16, None)


def _doc(synthetic, end_to_end, ten_crop, jpeg, paper_epochs_s, stock_epoch_s):
    part = {"train_images": 4239, "val_images": 471}
    fast = _measured("fast", synthetic, end_to_end)
    residency = _measured("residency jpeg", None, jpeg, group="residency")
    steps = {
        "bench-compiled": {"variants": [fast, residency]},
        "ten-crop": {"rows": [{"name": "eval --compile", "crops_per_second": ten_crop, "tf32": True}]},
        "paper": {**part, "epochs": 90, "epochs_seconds": paper_epochs_s, "first_epoch_extra_seconds": 40.0},
        "stock": {**part, "epochs": 3, "typical_epoch_seconds": stock_epoch_s},
    }
    return {"steps": {name: {"status": "done", "result": result} for name, result in steps.items()}}


def test_figures_are_computed_from_the_numbers_and_judged_against_their_targets():
    figures = {f["name"]: f for f in gpufigures.figures(_doc(20_000, 19_500, 45_000, 18_000, 40.0, 2.0))}
    ratio = figures["end to end / synthetic"]
    assert ratio["value"] == pytest.approx(0.975) and ratio["met"] == "met" and "TF32 on" in ratio["basis"]
    assert figures["paper net, end-to-end training"]["met"] == "not met"  # 19,500 < 25,000
    assert figures["ten-crop evaluation"]["value"] == 45_000 and figures["ten-crop evaluation"]["met"] == "met"
    ilsvrc = figures["projected 90 ILSVRC-2012 epochs"]
    assert ilsvrc["value"] == pytest.approx(1_281_167 * 90 / 18_000 / 60, rel=1e-4)  # at the jpeg residency's rate
    assert ilsvrc["met"] == "not met"  # 106.8 min
    # the epochs without compile (40 s) scale to all of Imagenette; the 40 s of compile stay apart
    paper = figures["90 Imagenette epochs, paper recipe, excluding compile"]
    assert paper["value"] == pytest.approx(40 * 9469 / 4710, rel=1e-4) and paper["met"] == "not met"
    assert "compile and warm-up apart: 40.0 s" in paper["basis"]
    stock_90 = figures["90 Imagenette epochs, stock torchvision recipe"]
    assert stock_90["value"] == pytest.approx(2.0 * 90 * 9469 / 4710, rel=1e-4) and stock_90["met"] == "no target"
    assert "393 s" in stock_90["basis"]
    assert figures["paper recipe's speed-up over the stock recipe"]["value"] == pytest.approx(4.5)
    fast = {f["name"]: f for f in gpufigures.figures(_doc(30_000, 29_000, 45_000, 29_000, 25.0, 2.0))}
    assert fast["paper net, end-to-end training"]["met"] == "met"
    assert fast["90 Imagenette epochs, paper recipe, excluding compile"]["met"] == "met"  # 50.3 s
    assert fast["projected 90 ILSVRC-2012 epochs"]["met"] == "met"  # 66.3 min


def test_figures_not_yet_measured_say_so():
    figures = gpufigures.figures({"steps": {"paper": {"status": "owed"}}})
    assert {f["met"] for f in figures} == {"not measured"} and all(f["value"] is None for f in figures)


def test_the_first_epoch_s_extra_time_is_compile_and_stays_out_of_the_epochs():
    rows = [{"train_seconds": 41.0, "val_seconds": 1.0}] + [{"train_seconds": 0.5, "val_seconds": 0.1}] * 89
    report = gpurecipes.epochs_report(rows)
    assert report["first_epoch_extra_seconds"] == pytest.approx(41.4)
    assert report["epochs_seconds"] == pytest.approx(90 * 0.6) and report["epochs"] == 90


def test_the_fastest_runtime_becomes_the_training_flags():
    options = {**gpubench.BF16, "compile": True, "cuda_graphs": True, "lrn_impl": "triton", "conv_form": "auto"}
    assert " ".join(gpurecipes.runtime_flags(options)) == (
        "--precision bf16 --channels-last on --lrn-impl triton --conv-form auto "
        "--residency decoded --compile --cuda-graphs"
    )
    assert "--compile" not in gpurecipes.runtime_flags({**options, "compile": False, "cuda_graphs": False})


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


def test_bad_options_are_one_sentence_and_exit_2(tmp_path):
    from helpers import invoke

    bad = invoke("gpu-check", tmp_path / "out", "--mode", "fast")
    assert bad.returncode == 2 and "--mode fast is not one of auto, full, dry." in bad.stderr
    missing = invoke("gpu-check", tmp_path / "out", "--part", tmp_path / "nothing.tar")
    assert missing.returncode == 2 and "nothing.tar does not exist" in missing.stderr
    assert not (tmp_path / "out").exists()
    crops = invoke("stock-recipe", "eval", tmp_path, tmp_path / "run", "--crops", "5")
    assert crops.returncode == 2 and "--crops 5 is not 1 or 10." in crops.stderr


@pytest.mark.slow
def test_the_dry_gpu_check_runs_every_step_and_goes_on_from_its_out_folder(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    poison = tmp_path / "poison"
    poison.mkdir()
    (poison / "webdataset.py").write_text("raise ImportError('webdataset must not be imported at run time')\n")
    env = {**os.environ, "PYTHONPATH": f"{poison}:{ROOT}", "ALEXCTL_PROGRESS_SECONDS": "1000"}
    make = [
        "make",
        "-s",
        "-f",
        str(ROOT / "pipelines" / "gpu-check.mk"),
        f"PY={zygote.python()}",
        f"SITE={tmp_path}/site",
    ]
    make += [f"PART={SHARED_DATA / 'imagenette-224' / 'train-1of2.tar'}"]
    proc = subprocess.run([*make, f"OUT={out}", f"WORK={work}"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "gpu-check.json",
        "gpu-check.log",
        "gpu-check.md",
    ]
    doc = json.loads((out / "gpu-check.json").read_text())
    assert doc["scale"]["mode"] == "dry" and doc["scale"]["width"] == 0.125
    assert {name: r["status"] for name, r in doc["steps"].items()} == {name: "done" for name, *_ in gpucheck.PLAN}
    results = {name: r["result"] for name, r in doc["steps"].items()}

    assert all(c["ok"] for c in results["preflight"]["checks"].values()), results["preflight"]
    assert results["cuda-tests"]["tests"] >= 14 and results["cuda-tests"]["failed"] == 0  # collected, skipped here
    variants = {v["name"]: v for s in ("bench-eager", "bench-compiled", "bench-256") for v in results[s]["variants"]}
    assert len(variants) == 6 + 5 + 1
    for v in variants.values():
        assert "error" not in v and v["rows"] and v["tf32"] is False, v
        for row in v["rows"]:
            assert 0 < row["min"] <= row["median"] <= row["max"], row
    assert [v["residency_reason"].split(",")[0] for n, v in variants.items() if n.startswith("residency")] == [
        "disk",
        "jpeg",
        "decoded",
    ]
    assert sum(bool(v["stand_in"]) for v in variants.values()) == 3  # Triton LRN, compile, CUDA graphs
    assert results["bench-256"]["batch_size"] == 2 * results["bench-eager"]["batch_size"]
    ten = results["ten-crop"]["rows"][0]
    assert ten["crops_per_second"] > 0 and ten["images"] == results["prepare"]["train_images"] // 2 * 2  # whole batches
    paper = results["paper"]
    assert paper["epochs"] == 2 and paper["attempts"][-1]["exit"] == 0 and paper["epochs_seconds"] > 0
    assert paper["options"]["precision"] in ("bf16", "fp32") and not paper["options"]["compile"]
    for name in ("paper", "stock"):
        assert (results[name]["train_images"], results[name]["val_images"]) == (
            results["prepare"]["train_images"],
            results["prepare"]["val_images"],
        )
        assert 0 <= results[name]["errors_1crop"]["top1"] <= 1
    assert 0 <= paper["errors_10crop"]["top1"] <= 1 and results["stock"]["epochs"] == 1
    for figure in doc["figures"]:  # each judged from its own number
        assert figure["value"] is not None, figure
        if figure["target"] is not None:
            value, target = figure["value"], figure["target"]
            met = {">=": value >= target, "<=": value <= target, "<": value < target}[figure["comparison"]]
            assert figure["met"] == ("met" if met else "not met"), figure
    table = (out / "gpu-check.md").read_text()
    assert "Dry run" in table and doc["machine"]["torch"] in table and "budget 480 s" in table
    assert all(name in table for name in variants) and all(f["name"] in table for f in doc["figures"])
    assert table in proc.stdout

    # A fresh machine given OUT back: its work folder is gone, so prepare runs again; every other step is done.
    brought_back = tmp_path / "brought-back"
    shutil.copytree(out, brought_back)
    again = subprocess.run(
        [*make, f"OUT={brought_back}", f"WORK={tmp_path}/fresh"], capture_output=True, text=True, env=env, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    later = json.loads((brought_back / "gpu-check.json").read_text())
    assert len(later["calls"]) == 2 and (tmp_path / "fresh" / "data" / "val" / "manifest.json").exists()
    assert {n: r["attempts"] for n, r in later["steps"].items()} == {n: 1 + (n == "prepare") for n, *_ in gpucheck.PLAN}


@pytest.mark.slow
def test_the_stock_recipe_command_trains_and_evaluates_on_the_same_partition(slice_data, tmp_path):
    from helpers import invoke, json_output

    run = tmp_path / "stock"
    sizes = ("--crop", "64", "--resize", "73", "--workers", "0", "--batch-size", "32")
    trained = json_output(
        invoke("stock-recipe", "train", slice_data, run, "--epochs", "1", *sizes, "--json", check=True)
    )
    assert trained["epochs_completed"] == 1 and (trained["train_images"], trained["val_images"]) == (110, 10)
    assert (run / "train.json").exists() and (run / "final.pt").exists()
    evaluated = json_output(
        invoke("stock-recipe", "eval", slice_data, run, "--crops", "10", *sizes, "--json", check=True)
    )
    assert evaluated["num_images"] == 10 and 0 <= evaluated["top5_error"] <= evaluated["top1_error"] <= 1
