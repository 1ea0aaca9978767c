"""alexctl.benchmarking.plan: planning against a budget, and steps that fail, crash or hang costing one row each."""

from __future__ import annotations

import json
import sys

from alexctl.benchmarking import plan
from alexctl.benchmarking.plan import Step


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", "import os, sys, time, signal\n" + code]


def _step(name, estimate=1.0, value=1.0, cap=10.0, code="pass", **kw) -> Step:
    return Step(name, _py(code), estimate_s=estimate, value=value, cap_s=cap, **kw)


def test_the_plan_runs_the_most_valuable_first_and_owes_what_does_not_fit():
    steps = [
        _step("cheap", estimate=10, value=1),
        _step("big", estimate=300, value=5),
        _step("top", estimate=100, value=9),
        _step("huge", estimate=200, value=3),
        _step("after-huge", estimate=5, value=8, needs=("huge",)),
    ]
    planned = plan.plan(steps, 420, {})
    # huge is worth after-huge's 8 (after-huge needs it) and runs before it: 100 + 200 + 5 of 420; big (300)
    # cannot fit then, cheap can
    assert [s.name for s in planned.run] == ["top", "huge", "after-huge", "cheap"]
    assert planned.owed == {"big": "does not fit: estimate 300 s, 115 s of the budget left"}
    # what is done costs nothing
    rerun = plan.plan(steps, 420, {"huge": {"status": "done"}})
    assert [s.name for s in rerun.run] == ["top", "after-huge", "big", "cheap"] and rerun.owed == {}
    assert rerun.done == ["huge"]
    # a need that cannot fit makes its dependents owed too
    tight = plan.plan(steps, 150, {})
    assert [s.name for s in tight.run] == ["top", "cheap"]
    assert tight.owed["huge"].startswith("does not fit") and tight.owed["after-huge"] == "needs huge"


def test_a_done_step_whose_products_are_gone_runs_again(tmp_path):
    product = tmp_path / "data" / "manifest.json"
    steps = [_step("prepare", produces=(product,))]
    assert [s.name for s in plan.plan(steps, 100, {"prepare": {"status": "done"}}).run] == ["prepare"]
    product.parent.mkdir()
    product.write_text("{}")
    assert plan.plan(steps, 100, {"prepare": {"status": "done"}}).run == []


def test_a_crash_a_hang_and_a_failure_cost_one_row_each_and_a_rerun_skips_what_is_done(tmp_path):
    out = tmp_path / "out"
    marker = tmp_path / "ran"
    steps = [
        _step(
            "measure",
            value=9,
            code=(
                "from alexctl.benchmarking.plan import write_result\n"
                "write_result({'images_per_s': 123.0})\n"
                f"open({str(marker)!r}, 'a').write('m')"
            ),
        ),
        _step("segfault", value=8, code="os.kill(os.getpid(), signal.SIGSEGV)"),
        _step("hang", value=7, cap=1.0, code="print('partial', flush=True); time.sleep(60)"),
        _step("bad", value=6, code="print('the real JPEG differs by 40', file=sys.stderr); sys.exit(3)"),
        _step(
            "reads-earlier",
            value=5,
            needs=("measure",),
            code=(
                "from alexctl.benchmarking.plan import earlier_result, write_result\n"
                "write_result({'seen': earlier_result('measure')['images_per_s']})"
            ),
        ),
        _step("too-long", estimate=1000, value=4),
    ]
    doc = plan.run_plan(steps, out, budget_s=60, title="check")
    records = doc["steps"]
    assert records["measure"]["status"] == "done" and records["measure"]["result"] == {"images_per_s": 123.0}
    assert records["segfault"]["status"] == "crashed" and records["segfault"]["error"] == "killed by SIGSEGV"
    assert records["hang"]["status"] == "timed out" and 1.0 <= records["hang"]["seconds"] < 5
    assert records["bad"]["status"] == "failed" and records["bad"]["error"] == "exit 3: the real JPEG differs by 40"
    assert records["reads-earlier"]["status"] == "done" and records["reads-earlier"]["result"] == {"seen": 123.0}
    assert records["too-long"]["status"] == "owed" and "does not fit" in records["too-long"]["why"]
    assert json.loads((out / "plan.json").read_text()) == doc
    assert "partial" in (out / "plan.log").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["plan.json", "plan.log", "plan.md"]  # a device call brings back 8

    table = (out / "plan.md").read_text()
    assert "budget 60 s of command time" in table
    assert "| hang | 7 | 1 | 1 | " in table and "| timed out |" in table
    assert f"| measure | 9 | 1 | 10 | {records['measure']['seconds']} | done |" in table

    again = plan.run_plan(steps, out, budget_s=60, title="check")
    assert marker.read_text() == "m"  # done: not run again
    assert again["steps"]["segfault"]["attempts"] == 1  # failed: its row stands, not tried again
    assert len(again["calls"]) == 2
    retried = plan.run_plan(steps[1:2], out, budget_s=60, title="check", retry=True)
    assert retried["steps"]["segfault"]["attempts"] == 2


def test_a_step_whose_call_was_cut_short_is_tried_again_but_not_forever(tmp_path):
    out = tmp_path / "out"
    steps = [_step("cut")]
    cut = {
        "title": "check",
        "calls": [{"started": "x", "budget_s": 60}],
        "steps": {"cut": {"status": "attempted", "attempts": 1}},
    }
    plan.rundir.write_json(out / "plan.json", cut)
    doc = plan.run_plan(steps, out, budget_s=60, title="check")
    assert doc["steps"]["cut"]["status"] == "done" and doc["steps"]["cut"]["attempts"] == 2
    assert "(running, or cut short)" in (out / "plan.md").read_text()  # the first call never finished

    cut["steps"]["cut"]["attempts"] = plan.MAX_ATTEMPTS
    assert plan.plan(steps, 60, cut["steps"]).run == []


def test_the_budget_left_caps_a_step_at_run_time(tmp_path):
    # the first step overruns its estimate; the second is then owed, not started with no time to finish
    steps = [_step("slow", estimate=0.1, value=2, code="time.sleep(1.5)"), _step("next", estimate=1.0, value=1)]
    doc = plan.run_plan(steps, tmp_path, budget_s=2.0, title="check")
    assert doc["steps"]["slow"]["status"] == "done"
    assert doc["steps"]["next"]["status"] == "owed" and "left of the budget" in doc["steps"]["next"]["why"]
