"""`alexctl bench` on the CPU: a smoke test that every measurement runs and reports sane figures
(the figures themselves belong in docs/benchmarks.md, never in a test)."""

from __future__ import annotations

from helpers import invoke, json_output


def test_bench_measures_every_path_on_the_cpu(slice_data):
    result = json_output(
        invoke(
            "bench",
            "--data",
            slice_data,
            "--batch-size",
            "4",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--repeats",
            "2",
            "--workers",
            "1",
            "--json",
            check=True,
        )
    )
    names = [r["name"] for r in result["rows"]]
    assert len(names) == 7 and any("stock torchvision" in n for n in names) and any("ten-crop" in n for n in names)
    for row in result["rows"]:
        assert 0 < row["min"] <= row["median"] <= row["max"], row
    # width 0.125 on a CPU: no ratio against the full-size stock network
    assert set(result["ratios"]) == {"end_to_end_over_synthetic", "data_path_over_synthetic", "data_path_over_stock"}
    assert "bounds it" in result["reading"]
    assert result["timing"] == {"warmup_batches": 0, "steps_per_window": 1, "windows": 2}


def test_one_bench_measures_several_runtimes_and_builds_a_network_once_per_setting(slice_data):
    from alexctl import device
    from alexctl.benchmarking.bench import MEASURES, Bench
    from alexctl.config import RuntimeOptions

    decoded = device.resolve(RuntimeOptions(devices="cpu", residency="decoded", workers=0))
    jpeg = device.resolve(RuntimeOptions(devices="cpu", residency="jpeg", workers=0))
    split_form = device.resolve(RuntimeOptions(devices="cpu", residency="jpeg", workers=0, conv_form="split"))
    with Bench(slice_data, width=0.125, batch_size=2, steps=1, warmup=0, repeats=2) as bench:
        first = bench.measure(decoded)
        second = bench.measure(jpeg, ("data_path", "end_to_end"))
        assert bench.networks_built == 1  # only the way of reading changed: the same network, no rebuild
        third = bench.measure(split_form, ("synthetic",))
        assert bench.networks_built == 2
        stock = bench.measure_stock(jpeg, ("ten_crop",), crop=64)
    assert [r["measure"] for r in first["rows"]] == list(MEASURES)
    assert [r["measure"] for r in second["rows"]] == ["data_path", "end_to_end"]
    assert first["residency"].startswith("decoded") and second["residency"].startswith("jpeg")
    assert third["residency"] is None and third["implementations"]["conv"] == "split"
    assert stock["rows"][0]["unit"] == "crops/s" and "stock" in stock["rows"][0]["name"]
    for row in first["rows"] + second["rows"] + third["rows"] + stock["rows"]:
        assert 0 < row["min"] <= row["median"] <= row["max"], row
