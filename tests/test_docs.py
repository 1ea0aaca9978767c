"""The docs cannot rot: docs/cli.md matches the commands' --help, and the README's tour runs."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from helpers import ROOT, invoke, json_output


def test_cli_reference_matches_help():
    from alexctl import docgen

    assert docgen.render(docgen.DOC.read_text()) == docgen.DOC.read_text(), "docs/cli.md is stale: run `make docs`"


def readme_tour() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A five-minute tour", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("alexctl ")]


def test_the_readme_tour_runs(tmp_path, monkeypatch):
    commands = readme_tour()
    assert [c[0] for c in commands][:3] == ["demo-data", "preprocess", "preprocess"] and len(commands) >= 9
    monkeypatch.chdir(tmp_path)
    for args in commands:
        invoke(*args, check=True)
    report = json_output(invoke("status", "tour/data", "tour/runs/a", "tour/runs/b", "tour/ensemble", "--json",
                                check=True))["directories"]
    states = {(e["path"], s["stage"]): s["state"] for e in report for s in e["stages"]}
    assert all(state == "done" for state in states.values()), states
    assert Path("tour/report/report.md").is_file()
    ensemble = json.loads(Path("tour/ensemble/eval/val-10crop.json").read_text())
    assert ensemble["members"] == 2
    # The tour learns: the ensemble is well below chance (83.33% for six classes), and so is each run.
    assert ensemble["top1_error"] < 0.6 < ensemble["chance_top1_error"], ensemble["top1_error"]
    for run in ("a", "b"):
        assert json.loads(Path(f"tour/runs/{run}/eval/val-10crop.json").read_text())["top1_error"] < 0.75


def test_readme_and_docs_link_to_files_that_exist():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
