"""The docs cannot rot: docs/cli.md matches the commands' --help, and the README's tour runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import zygote
from helpers import ROOT, invoke, json_output


def test_cli_reference_matches_help():
    from alexctl.cli import docgen

    assert docgen.render(docgen.DOC.read_text()) == docgen.DOC.read_text(), "docs/cli.md is stale: run `make docs`"


def readme_tour() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A five-minute tour", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("alexctl ")]


@pytest.mark.slow
def test_the_readme_tour_runs(tmp_path, monkeypatch):
    commands = readme_tour()
    assert [c[0] for c in commands][:3] == ["demo-data", "preprocess", "preprocess"] and len(commands) >= 9
    monkeypatch.chdir(tmp_path)
    for args in commands:
        invoke(*args, check=True)
    report = json_output(
        invoke("status", "tour/data", "tour/runs/a", "tour/runs/b", "tour/ensemble", "--json", check=True)
    )["directories"]
    states = {(e["path"], s["stage"]): s["state"] for e in report for s in e["stages"]}
    assert all(state == "done" for state in states.values()), states
    assert Path("tour/report/report.md").is_file()
    ensemble = json.loads(Path("tour/ensemble/eval/val-10crop.json").read_text())
    assert ensemble["members"] == 2
    # The tour learns: the ensemble is well below chance (83.33% for six classes), and so is each run.
    assert ensemble["top1_error"] < 0.6 < ensemble["chance_top1_error"], ensemble["top1_error"]
    for run in ("a", "b"):
        assert json.loads(Path(f"tour/runs/{run}/eval/val-10crop.json").read_text())["top1_error"] < 0.75
    readme_after_the_tour(Path.cwd())


def readme_after_the_tour(work: Path) -> None:
    """ "Using a trained model": predict, a pipe into predict, export, and evaluating on other labelled images,
    run as a shell runs them (PATH holding the virtualenv's alexctl, forked from the zygote: zygote.scripts()),
    on the tour's directories."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text.split("## Using a trained model", 1)[1], re.S).group(1)
    env = {
        **os.environ,
        "PATH": f"{zygote.scripts()}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "ALEXCTL_PROGRESS_SECONDS": "1000",
    }
    for line in block.strip().splitlines():
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", line], cwd=work, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (line, proc.stderr)
    rows = (work / "tour" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 6  # a header and one image of each of the six classes
    assert {p.name for p in (work / "tour" / "model").iterdir()} >= {"model.pt2", "model.onnx", "state_dict.pt"}
    other = list((work / "tour" / "runs" / "a" / "eval").glob("val-10crop@new-data-*.json"))
    assert len(other) == 1 and json.loads(other[0].read_text())["num_images"] == 30  # every image of the folder


def test_readme_and_docs_link_to_files_that_exist():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
