"""`alexctl ensemble`: the average of the members' saved probabilities, checks on members, chaining."""

from __future__ import annotations

import json
import shutil

import numpy as np

from alexctl.metrics import topk_errors

from helpers import invoke, json_output


def test_ensemble_is_the_plain_average_of_the_members(two_runs, tmp_path):
    out = tmp_path / "ens"
    summary = json_output(invoke("ensemble", *two_runs, "--out", out, "--json", check=True))
    for key in ("members", "top1_error", "top5_error", "member_top1_errors", "seconds"):
        assert key in summary, key
    members = [np.load(r / "eval" / "val-10crop.npz") for r in two_runs]  # evaluated on the way if missing
    average = (members[0]["probs"].astype(np.float64) + members[1]["probs"]) / 2
    mine = np.load(out / "eval" / "val-10crop.npz")
    assert np.allclose(mine["probs"], average, atol=1e-7)
    assert mine["keys"].tolist() == members[0]["keys"].tolist()
    errors = topk_errors(average, members[0]["labels"])
    assert summary["top1_error"] == errors[1] and summary["top5_error"] == errors[5]
    assert summary["members"] == 2
    assert summary["member_top1_errors"] == [topk_errors(m["probs"], m["labels"])[1] for m in members]
    assert json.loads((out / "run.json").read_text())["kind"] == "ensemble"
    # An ensemble stands for its members: every model weighs the same, and one reached twice is refused.
    third = tmp_path / "third"
    shutil.copytree(two_runs[1], third, ignore=shutil.ignore_patterns(".lock", "eval"))
    chained = json_output(invoke("ensemble", out, third, "--out", tmp_path / "chained", "--json", check=True))
    probs = np.load(tmp_path / "chained" / "eval" / "val-10crop.npz")["probs"]
    assert np.allclose(probs, (members[0]["probs"] + 2.0 * members[1]["probs"]) / 3, atol=1e-6)
    assert chained["members"] == 3 and chained["member_dirs"][2] == str(third.resolve())
    twice = invoke("ensemble", out, two_runs[0], "--out", tmp_path / "twice")
    assert twice.returncode == 2 and "among the members twice" in twice.stderr
    # Asked again for the same members and predictions, it does nothing; --force redoes it.
    again = json_output(invoke("ensemble", *two_runs, "--out", out, "--json", check=True))
    assert again["already_done"] and again["top1_error"] == summary["top1_error"]
    assert not json_output(invoke("ensemble", *two_runs, "--out", out, "--force", "--json", check=True))["already_done"]


def test_mismatched_members_are_refused_by_name(two_runs, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(two_runs[1], odd, ignore=shutil.ignore_patterns(".lock"))
    invoke("eval", odd, check=True)
    z = dict(np.load(odd / "eval" / "val-10crop.npz"))
    np.savez(
        odd / "eval" / "val-10crop.npz",
        **{**z, "keys": z["keys"][::-1], "labels": z["labels"][::-1], "probs": z["probs"][::-1]},
    )
    refused = invoke("ensemble", two_runs[0], odd, "--out", tmp_path / "e")
    assert refused.returncode == 2 and str(odd) in refused.stderr and "other samples" in refused.stderr
    np.savez(odd / "eval" / "val-10crop.npz", **{**z, "classes": z["classes"][::-1]})
    refused = invoke("ensemble", two_runs[0], odd, "--out", tmp_path / "e")
    assert refused.returncode == 2 and "class list" in refused.stderr
    one = invoke("ensemble", two_runs[0], "--out", tmp_path / "e")
    assert one.returncode == 2 and "at least two" in one.stderr
    missing = invoke("ensemble", two_runs[0], tmp_path / "nothing", "--out", tmp_path / "e")
    assert missing.returncode == 2 and "nothing" in missing.stderr
