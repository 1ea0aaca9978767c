"""alexctl/benchmarking/gpuclaims.py: pipelines/gpu-claims.mk's steps, parsed and planned against the budget
(the whole command in miniature: tests/test_claims_pipelines.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alexctl.benchmarking import gpuclaims


def test_a_step_spec_makes_its_targets_and_counts_them_as_its_products():
    step = gpuclaims.parse_step("no-conv3:80:150:data,recipe:/w/a.json,/w/b.json", ["make", "-j3"])
    assert step.argv == ["make", "-j3", "/w/a.json", "/w/b.json"]
    assert (step.value, step.estimate_s, step.cap_s) == (80.0, 150.0, 450.0)  # stopped at 3x its estimate
    assert step.needs == ("data", "recipe") and step.produces == (Path("/w/a.json"), Path("/w/b.json"))
    assert gpuclaims.parse_step("data:0:60:-:/w/m.json", ["make"]).needs == ()


@pytest.mark.parametrize("spec", ["no-targets:1:2:-:", "a:1:2:-", "a:high:2:-:/x", ":1:2:-:/x"])
def test_a_malformed_step_is_refused_naming_it(spec, tmp_path, capsys):
    assert gpuclaims.main([str(tmp_path), "--make", "true", spec]) == 2
    assert f"gpu-claims: step {spec!r}" in capsys.readouterr().err
    assert not (tmp_path / "plan.json").exists()


def test_what_does_not_fit_is_owed_and_a_failed_step_fails_the_call(tmp_path, capsys):
    # "b" is worth more than "a" but needs it; "c" does not fit what is left of 100 s after a and b.
    specs = ["a:1:10:-:/x/a", "b:5:60:a:/x/b", "c:3:40:-:/x/c"]
    assert gpuclaims.main([str(tmp_path), "--make", "true", "--budget", "100", "--stem", "p", *specs]) == 0
    steps = json.loads((tmp_path / "p.json").read_text())["steps"]
    assert {n: s["status"] for n, s in steps.items()} == {"a": "done", "b": "done", "c": "owed"}
    assert steps["b"]["argv"] == ["true", "/x/b"]
    assert "owed (the next call goes on from here): c (does not fit: estimate 40 s, 30 s" in capsys.readouterr().out
    assert gpuclaims.main([str(tmp_path), "--make", "false", "--stem", "q", "a:1:10:-:/x/a"]) == 1
    assert "not done: a: failed" in capsys.readouterr().err
