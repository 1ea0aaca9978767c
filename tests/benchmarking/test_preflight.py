"""alexctl.benchmarking.preflight: each check a row; one that breaks is a failed row naming why, never the end."""

from __future__ import annotations

import tarfile

import torch

from alexctl.benchmarking import preflight

from helpers import SHARED_DATA


def _photograph() -> bytes:
    with tarfile.open(SHARED_DATA / "imagenette-224" / "train-1of2.tar") as tar:
        member = next(m for m in tar if m.isfile() and m.name.endswith(".JPEG"))
        return tar.extractfile(member).read()


def test_a_broken_jpeg_fails_its_row_and_the_other_checks_still_run():
    result = preflight.check(image=b"\xff\xd8 not a photograph", dry=True)
    checks = result["checks"]
    assert list(checks) == ["gpu", "compiler", "python headers", "GPU JPEG decode vs CPU", "bf16", "small compile"]
    decode = checks["GPU JPEG decode vs CPU"]
    assert decode["ok"] is False and decode["detail"].split(":")[0] in ("RuntimeError", "ValueError")
    assert (
        checks["bf16"]["ok"] and checks["small compile"]["ok"] and "matches eager" in checks["small compile"]["detail"]
    )


def test_a_real_photograph_decodes_alike_on_both_decoders():
    decode = preflight.check(image=_photograph(), dry=not torch.cuda.is_available())["checks"]["GPU JPEG decode vs CPU"]
    assert decode["ok"], decode
    mean = float(decode["detail"].split("mean |diff| ")[1].split(" ")[0])
    assert mean <= preflight.DECODE_MEAN_LIMIT
