"""alexctl.benchmarking.preprocess_bench (`alexctl bench --preprocess`): it runs and reports sane figures."""

from __future__ import annotations

from helpers import invoke, json_output


def test_preprocess_bench_against_a_naive_pil_loop(tmp_path, imagenet_samples):
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(imagenet_samples.iterdir())[:12]:
        (few / p.name).write_bytes(p.read_bytes())
    result = json_output(invoke("bench", "--preprocess", few, "--repeats", "3", "--json", check=True))
    assert result["images"] == 12 and [r["name"] for r in result["rows"]] == ["alexctl", "naive PIL loop"]
    assert result["speedup"] > 0 and result["psnr_db_vs_full_decode"]["min"] >= 35
