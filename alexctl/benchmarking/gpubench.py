"""The GPU check's speed steps (issue 17, steps 3 and 4): images/s and crops/s of the paper's net.

    bench-eager     batch 128: fp32; bf16 + channels-last; the Triton LRN; the grouped convolutions' forms
    bench-compiled  batch 128: + compile (the faster LRN in eager mode), + CUDA graphs; then each residency
                    (disk, jpeg, decoded) on the fastest network measured so far
    bench-256       the fastest network at batch 256
    ten-crop        crops/s through `alexctl eval`'s inference (alexctl.inference.core.predict), compile apart

Each switch is compared in one process (alexctl.benchmarking.bench.Bench: one data directory, the network built
once per setting); every variant records whether TF32 was on. The result grows after every measurement
(plan.write_result), so a step stopped at its cap keeps what it measured. Without CUDA a variant that needs
it (Triton, compile, CUDA graphs) runs a stand-in, named in its row: the same code path, eager and torch LRN.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import numpy as np
import torch

from alexctl import rundir
from alexctl.benchmarking.bench import Bench, model_for
from alexctl.benchmarking.plan import write_result
from alexctl.config import RuntimeOptions
from alexctl.console import log
from alexctl.data.augment import mean_image_tensor
from alexctl.data.loader import load_split
from alexctl.data.resident import open_source
from alexctl.device import configure, forward_of, reading, resolve, synchronize
from alexctl.inference.core import predict
from alexctl.nets.build import runtime_model

EAGER = dict(
    precision="fp32",
    channels_last="off",
    compile=False,
    cuda_graphs=False,
    lrn_impl="torch",
    conv_form="groups",
    residency="decoded",
)
BF16 = {**EAGER, "precision": "bf16", "channels_last": "on"}
BOTH = ("synthetic", "end_to_end")


def bench_step(name: str, data: Path, scale, earlier: dict[str, dict]) -> None:
    """One of the bench steps; `earlier`: the results of bench-eager and bench-compiled so far (for the choices)."""
    batch = scale.batch_size * (2 if name == "bench-256" else 1)
    result = {"batch_size": batch, "width": scale.width, "variants": []}
    timing = dict(steps=scale.steps, warmup=scale.warmup, repeats=scale.repeats)
    result["timing"] = timing
    # Each batch shape compiles its own static graph, as a training run would, not one with a dynamic batch.
    torch._dynamo.config.automatic_dynamic_shapes = False
    with Bench(data, width=scale.width, batch_size=batch, **timing) as bench:
        done: list[dict] = []
        for variant_name, options, measures in variants(name, earlier, done):
            variant = measure(bench, variant_name, options, measures)
            done.append(variant)
            result["variants"].append(variant)
            write_result(result)
    result["fastest"] = fastest(result["variants"] + all_variants(earlier))
    write_result(result)


def variants(step: str, earlier: dict[str, dict], done: list[dict]):
    """(name, runtime options, measures) of a step, in order; later choices read what was measured (`done`)."""
    if step == "bench-eager":
        yield "fp32, eager", EAGER, BOTH
        yield "bf16 + channels-last", BF16, BOTH
        yield "bf16 + channels-last, Triton LRN", {**BF16, "lrn_impl": "triton"}, ("synthetic",)
        for form in ("split", "blockdiag", "auto"):
            yield f"bf16 + channels-last, conv {form}", {**BF16, "conv_form": form}, ("synthetic",)
    elif step == "bench-compiled":
        eager = {v["name"]: v for v in earlier.get("bench-eager", {}).get("variants", [])}
        torch_lrn = median(eager.get("bf16 + channels-last", {}), "synthetic") or 0
        triton_lrn = median(eager.get("bf16 + channels-last, Triton LRN", {}), "synthetic") or 0
        lrn = "triton" if triton_lrn > torch_lrn else "torch"  # the faster in eager mode
        compiled = {**BF16, "compile": True, "lrn_impl": lrn, "conv_form": "auto"}
        yield f"bf16 + channels-last + compile ({lrn} LRN)", compiled, BOTH
        yield f"bf16 + channels-last + compile + CUDA graphs ({lrn} LRN)", {**compiled, "cuda_graphs": True}, BOTH
        best = fastest(done + all_variants(earlier), group="network")
        for residency in ("disk", "jpeg", "decoded"):
            options = {**(best or {}).get("options", BF16), "residency": residency}
            yield f"residency {residency}", options, ("data_path", "end_to_end")
    elif step == "bench-256":
        best = fastest(all_variants(earlier), group="network")
        yield f"batch 256: {(best or {}).get('name', 'bf16 + channels-last')}", (best or {}).get("options", BF16), BOTH


def measure(bench: Bench, name: str, options: dict, measures: tuple[str, ...]) -> dict:
    """One variant: its rows (or its error), whether TF32 was on, and the stand-in used without CUDA."""
    wanted = dict(options)
    options, stand_in = stand_in_for(options)
    variant = {"name": name, "options": wanted, "rows": [], "stand_in": stand_in}
    variant["group"] = "residency" if name.startswith("residency") else "network"
    log(f"gpu-check: {name}" + (f" (stand-in: {stand_in})" if stand_in else ""))
    tick = time.monotonic()
    try:
        runtime = resolve(RuntimeOptions(**options))
        for m in measures:
            result = bench.measure(runtime, (m,))
            variant["rows"] += result["rows"]
            variant["implementations"] = result["implementations"]
            variant["residency_reason"] = result["residency"] or variant.get("residency_reason")
    except Exception as e:  # one switch that fails (a kernel, memory) must not cost the others' figures
        traceback.print_exc()
        variant["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    variant["tf32"] = tf32()
    # building, compiling and every batch run, warm-up included: where a lease's minutes go
    variant["seconds"] = round(time.monotonic() - tick, 1)
    return variant


def stand_in_for(options: dict) -> tuple[dict, str | None]:
    """Without CUDA: the options a CPU can run in place of Triton, compile and CUDA graphs, and what was replaced."""
    if torch.cuda.is_available():
        return options, None
    replaced = [k for k in ("compile", "cuda_graphs") if options.get(k)]
    replaced += ["Triton LRN"] if options.get("lrn_impl") == "triton" else []
    if not replaced:
        return options, None
    cpu = {**options, "compile": False, "cuda_graphs": False}
    cpu["lrn_impl"] = "torch" if options.get("lrn_impl") == "triton" else options.get("lrn_impl", "torch")
    return cpu, f"eager, torch LRN in place of {', '.join(replaced)} (no CUDA)"


def tf32() -> bool:
    """Whether float32 matrix products and convolutions may use TF32 (alexctl.device.configure turns it on)."""
    return bool(torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32)


def ten_crop(data: Path, scale) -> dict:
    """Crops/s of `alexctl eval`'s inference (predict: decode once, ten crops on the device, softmax averaged)
    on the train split, with eval's default runtime and then compiled; a first pass over a few batches is
    timed apart (building, compiling, cudnn's choices)."""
    split = load_split(Path(data), "train")
    stats = rundir.load_npz(rundir.DataDir(Path(data)).stats, "statistics file")
    config = model_for(split.image_size, scale.width, data)
    batch = max(2, scale.batch_size // 2)  # 64 images x 10 crops on a GPU: eval's --batch-size default
    rows = []
    # without CUDA the compiled row's stand-in would repeat the first row: one row runs the code
    for name, compile in (("eval defaults", False), ("eval --compile", True))[: 2 if torch.cuda.is_available() else 1]:
        runtime = resolve(RuntimeOptions(compile=compile))
        configure(runtime)
        net = runtime_model(config, split.num_classes, runtime)
        forward = forward_of(net, runtime)
        mean_image = mean_image_tensor(stats["mean_image"], runtime.primary)
        with open_source(split, **reading(runtime)) as source:
            first = np.arange(min(len(split), batch * 2))
            tick = time.monotonic()
            predict(
                forward, source, first, mean_image, crops=10, crop=net.input_size, runtime=runtime, batch_size=batch
            )
            synchronize(runtime)
            warm = time.monotonic() - tick
            # whole batches only: a short last batch would compile another graph inside the timed pass
            everything = np.arange(len(split) // batch * batch or len(split))
            tick = time.monotonic()
            predict(
                forward,
                source,
                everything,
                mean_image,
                crops=10,
                crop=net.input_size,
                runtime=runtime,
                batch_size=batch,
            )
            synchronize(runtime)
            seconds = time.monotonic() - tick
        rows.append(
            {
                "name": name,
                "crops_per_second": round(len(everything) * 10 / seconds, 1),
                "images": len(everything),
                "batch_size": batch,
                "first_pass_seconds": round(warm, 2),
                "runtime": runtime.describe(),
                "tf32": tf32(),
            }
        )
        write_result({"rows": rows})
        del net, forward
        torch._dynamo.reset()
    return {"rows": rows}


# ---------------------------------------------------------------- reading the results


def all_variants(results: dict[str, dict]) -> list[dict]:
    return [v for r in results.values() for v in (r or {}).get("variants", [])]


def fastest(variants: list[dict], group: str | None = None) -> dict | None:
    """The measured variant with the highest end-to-end median (of `group`, or of all, batch 256 apart): its name,
    options, end-to-end and synthetic medians (a residency's synthetic is the fastest network's)."""
    candidates = [
        v
        for v in variants
        if v.get("group") in ((group,) if group else ("network", "residency"))
        and not v["name"].startswith("batch 256")
        and not v.get("stand_in")
        and median(v, "end_to_end") is not None
    ] or [
        v  # a dry run: stand-ins only
        for v in variants
        if v.get("group") in ((group,) if group else ("network", "residency")) and median(v, "end_to_end") is not None
    ]
    if not candidates:
        return None
    best = max(candidates, key=lambda v: median(v, "end_to_end"))
    network = fastest(variants, "network") if best["group"] == "residency" else None
    return {
        "name": best["name"],
        "options": best["options"],
        "end_to_end": median(best, "end_to_end"),
        "synthetic": median(best, "synthetic") or (network or {}).get("synthetic"),
        "network": (network or best)["name"],
        "tf32": best.get("tf32"),
    }


def median(variant: dict, measure: str) -> float | None:
    return next((r["median"] for r in variant.get("rows", []) if r["measure"] == measure), None)
