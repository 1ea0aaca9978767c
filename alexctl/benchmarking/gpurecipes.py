"""The GPU check's recipes (issue 17, step 5), on the part prepared in WORK/data.

    paper  `alexctl train` with its defaults for 90 epochs on the fastest runtime bench found, timed as a
           command; the time the first epoch took beyond a typical one (compiling, cudnn's choices) is reported
           apart from the epochs; then `alexctl eval`'s ten-crop evaluation of the last checkpoint
    stock  torchvision's recipe (alexctl.benchmarking.stock) for a few epochs on the same files: its rate, to set
           beside its known 90-epoch anchors (393 s and 83.4% top-1 on an H100, issue 17)

Both leave their result through plan.write_result (the paper's as its training goes, so a step stopped at its
cap keeps the epochs it finished).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from alexctl import rundir
from alexctl.benchmarking import stock as stock_recipe
from alexctl.benchmarking.gpubench import BF16, stand_in_for
from alexctl.benchmarking.plan import write_result
from alexctl.config import RuntimeOptions
from alexctl.console import log
from alexctl.device import resolve
from alexctl.errors import WorkFailed
from alexctl.inference.evaluate import evaluate


def paper(data: Path, run: Path, scale, fastest: dict | None) -> None:
    """The paper's recipe on `fastest`'s runtime options (bench's fastest network; bf16 + channels-last without
    one). If the compiled runtime fails, the run starts again without compile, and both attempts are recorded."""
    wanted = dict((fastest or {}).get("options") or BF16)
    options, stand_in = stand_in_for(wanted)
    result: dict = {"runtime_from": (fastest or {}).get("name") or "bf16 + channels-last (no bench result)"}
    result.update(options=options, stand_in=stand_in, attempts=[])
    width = ["--width", str(scale.width)] if scale.width != 1.0 else []
    while True:
        command = [
            sys.executable,
            "-m",
            "alexctl",
            "train",
            str(run),
            "--data",
            str(data),
            "--epochs",
            str(scale.epochs),
        ]
        # epoch-end checkpoints every 10 epochs, as the stock recipe's: an epoch here is about a second on a GPU
        command += ["--checkpoint-epochs", "10", *width, *runtime_flags(options), "--json"]
        log(f"gpu-check: {' '.join(command[2:])}")
        tick = time.monotonic()
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)  # its stderr goes to the step's log
        seconds = round(time.monotonic() - tick, 1)
        result["attempts"].append({"command": command[2:], "exit": proc.returncode, "seconds": seconds})
        write_result(result)
        if proc.returncode == 0:
            break
        if not options.get("compile"):
            raise WorkFailed(f"alexctl train failed (exit {proc.returncode}); its output is in the step's log.")
        log("gpu-check: training with compile failed; starting again without compile")
        rundir.RunDir(run).manifest.unlink(missing_ok=True)
        run = run.with_name(run.name + "-eager")
        options = {**options, "compile": False, "cuda_graphs": False}
        result["options"] = options
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(epochs_report(rundir.read_jsonl(Path(summary["metrics"]))))
    data_record = rundir.read_json(rundir.RunDir(run).config, "run configuration")["data"]
    result.update(
        wall_seconds=seconds,
        train_images=data_record["train_images"],
        val_images=data_record["val_images"],
        images_per_second=summary["images_per_second"],
        errors_1crop={"top1": summary["last_val_top1_error"], "top5": summary["last_val_top5_error"]},
    )
    write_result(result)
    evaluated = evaluate(
        run,
        crops=10,
        checkpoint_name="last",
        batch_size=64,
        runtime=resolve(RuntimeOptions(**{**options, "compile": False, "cuda_graphs": False})),
    )
    result["errors_10crop"] = {"top1": evaluated["top1_error"], "top5": evaluated["top5_error"]}
    result["eval_crops_per_second"] = evaluated.get("crops_per_second")
    write_result(result)


def epochs_report(rows: list[dict]) -> dict:
    """The epochs' seconds (training and validation), with what the first epoch took beyond the median of the
    others (compiling, cudnn's choices, warming up) shown apart and left out of `epochs_seconds`."""
    per_epoch = [r["train_seconds"] + r.get("val_seconds", 0.0) for r in rows]
    typical = statistics.median(per_epoch[1:]) if len(per_epoch) > 1 else per_epoch[0] if per_epoch else 0.0
    first_extra = max(0.0, per_epoch[0] - typical) if per_epoch else 0.0
    return {
        "epochs": len(rows),
        "train_seconds": round(sum(r["train_seconds"] for r in rows), 2),
        "val_seconds": round(sum(r.get("val_seconds", 0.0) for r in rows), 2),
        "first_epoch_extra_seconds": round(first_extra, 2),
        "epochs_seconds": round(sum(per_epoch) - first_extra, 2),
    }


def stock(data: Path, run: Path, scale) -> None:
    """torchvision's recipe for `scale.stock_epochs` epochs on the files of the same partition, in this process."""
    workers = max(1, (os.cpu_count() or 2) - 1)  # as alexctl's loaders: all cores but one
    summary = stock_recipe.train(
        data, run, epochs=scale.stock_epochs, workers=workers, crop=scale.stock_crop, resize=scale.stock_resize
    )
    rows = summary["rows"]
    per_epoch = [r["seconds"] for r in rows]
    write_result(
        {
            "epochs": summary["epochs_completed"],
            "train_images": summary["train_images"],
            "val_images": summary["val_images"],
            "settings": summary["settings"],
            "epoch_seconds": per_epoch,
            # the first epoch starts the workers and warms cudnn: the rate is the later epochs' when there are some
            "typical_epoch_seconds": round(statistics.median(per_epoch[1:] or per_epoch), 2),
            "errors_1crop": {"top1": summary["last_val_top1_error"], "top5": summary["last_val_top5_error"]},
        }
    )


def runtime_flags(options: dict) -> list[str]:
    """alexctl's runtime options as command-line flags (the ones a bench variant sets)."""
    flags = []
    for name in ("precision", "channels_last", "lrn_impl", "conv_form", "residency"):
        if name in options:
            flags += [f"--{name.replace('_', '-')}", str(options[name])]
    flags += ["--compile"] if options.get("compile") else []
    return flags + (["--cuda-graphs"] if options.get("cuda_graphs") else [])
