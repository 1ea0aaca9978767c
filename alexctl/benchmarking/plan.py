"""A budget planner for work on borrowed machines (issue 17; `alexctl gpu-check`, `make gpu-claims`).

GPU time comes in small pieces (one command of at most 10 minutes), so a batch of measurements is planned
against a time budget before it starts, runs the most valuable steps first, and survives its own failures:

    steps = [Step("preflight", [sys.executable, "-m", ...], estimate_s=20, value=100, cap_s=40), ...]
    report = run_plan(steps, Path("out/gpu-check"), budget_s=480, title="GPU check")

- `Step`: a name, the child command (argv, run in its own process and process group), an estimate (s), a value
  (higher runs first, a step's needs with it; ties keep the list's order), a time cap (s), the names of
  earlier-listed steps it `needs`, and the
  `produces` paths a done step must still have to count as done (work left on another machine does not).
- `plan(steps, budget_s, records)`: the steps to run, in order, and those owed (with why), before anything runs:
  the most valuable first (a step's needs count as valuable as it), each taken while its estimate fits what is
  left of the budget; a step that cannot fit, or whose need is neither done nor planned, is owed. Done steps
  cost nothing.
- `run_plan(steps, out, budget_s, title)`: plans, then runs each step with cap min(its cap, the budget left),
  and keeps ONE record file, OUT/plan.json (`stem` names it) (written atomically through alexctl.rundir): a step's record says
  "attempted" before it starts and gets its result (done / failed / timed out / crashed) right after, so a
  segfault, a hang or a sticky CUDA error costs one row, never the rest. A step given no time left at run
  time (estimates are estimates) is owed. OUT/plan.md is the table: the budget and, per step, the planned
  and measured seconds. Children's output is appended to OUT/plan.log. Three files: a device call brings
  back at most eight.
- A rerun (the same OUT, on this machine or a fresh one that was given the OUT folder back) skips what is
  done; a failed step is not tried again (its row says why), and one whose call was cut short while it ran
  ("attempted", no result) is tried again, at most `MAX_ATTEMPTS` times in all.
- A child reads `ALEXCTL_PLAN` (the path of plan.json: earlier steps' results) and may leave its result, a
  JSON object, in `ALEXCTL_STEP_RESULT` (use `write_result`); the planner stores it in the step's record as
  "result", also after a failure or a timeout (what the step measured before it stopped).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexctl import rundir

MAX_ATTEMPTS = 2  # a step that took the whole call down twice is not tried a third time
KILL_GRACE_S = 5.0  # between SIGTERM and SIGKILL when a step outlives its cap
PLAN_ENV, RESULT_ENV = "ALEXCTL_PLAN", "ALEXCTL_STEP_RESULT"
DONE, FAILED, TIMED_OUT, CRASHED, ATTEMPTED, OWED = "done", "failed", "timed out", "crashed", "attempted", "owed"


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]  # the child process's command
    estimate_s: float  # what planning counts for it
    value: float  # higher runs first
    cap_s: float  # the child is stopped after this many seconds
    needs: tuple[str, ...] = ()  # steps that must be done before it
    produces: tuple[Path, ...] = ()  # a done step whose products are missing here runs again
    env: dict[str, str] = field(default_factory=dict)  # added to the environment


@dataclass(frozen=True)
class Planned:
    run: list[Step]  # in order
    owed: dict[str, str]  # name -> why it does not run in this call
    done: list[str]


@dataclass(frozen=True)
class Files:
    out: Path
    stem: str = "plan"

    @property
    def records(self) -> Path:
        return self.out / f"{self.stem}.json"

    @property
    def table(self) -> Path:
        return self.out / f"{self.stem}.md"

    @property
    def log(self) -> Path:
        return self.out / f"{self.stem}.log"


def run_plan(
    steps: list[Step], out: Path, *, budget_s: float, title: str, retry: bool = False, stem: str = "plan"
) -> dict:
    """Plan `steps` against `budget_s` seconds of this call, run them, and return the records (plan.json).
    `retry`: try again the steps that failed, timed out or crashed in an earlier call. `stem`: the three files'
    name (OUT/STEM.json, .md, .log)."""
    _check(steps)
    files = Files(Path(out), stem)
    started = time.monotonic()
    doc = _load(files, title)
    doc["calls"].append({"started": rundir.now(), "budget_s": budget_s})
    records = doc["steps"]
    planned = plan(steps, budget_s, records, retry=retry)
    for name, why in planned.owed.items():
        records[name] = {**records.get(name, {}), "status": OWED, "why": why}
    _save(files, doc, steps)
    for step in planned.run:
        left = budget_s - (time.monotonic() - started)
        missing = [n for n in step.needs if records.get(n, {}).get("status") != DONE]
        if missing or step.estimate_s > left:
            why = (
                f"needs {', '.join(missing)}"
                if missing
                else f"{left:.0f} s left of the budget, estimate {step.estimate_s:.0f} s"
            )
            records[step.name] = {**records.get(step.name, {}), "status": OWED, "why": why}
            _save(files, doc, steps)
            continue
        _run_step(files, doc, steps, step, cap_s=min(step.cap_s, left))
    doc["calls"][-1]["seconds"] = round(time.monotonic() - started, 1)
    _save(files, doc, steps)
    return doc


def plan(steps: list[Step], budget_s: float, records: dict[str, dict], *, retry: bool = False) -> Planned:
    """What runs in this call, in order, and what is owed (see the module's docstring)."""
    done = [s.name for s in steps if is_done(s, records.get(s.name, {}))]
    taken: list[Step] = []
    owed: dict[str, str] = {}
    left = budget_s
    for step in sorted((s for s in steps if s.name not in done), key=lambda s: -worth(s, steps)):
        record = records.get(step.name, {})
        if record.get("status") in (FAILED, TIMED_OUT, CRASHED) and not retry:
            continue  # its row says why; not tried again
        if record.get("status") == ATTEMPTED and record.get("attempts", 0) >= MAX_ATTEMPTS and not retry:
            continue
        blocked = [n for n in step.needs if n not in done and n not in {t.name for t in taken}]
        if blocked:
            owed[step.name] = f"needs {', '.join(blocked)}"
        elif step.estimate_s > left:
            owed[step.name] = f"does not fit: estimate {step.estimate_s:.0f} s, {left:.0f} s of the budget left"
        else:
            taken.append(step)
            left -= step.estimate_s
    return Planned(taken, owed, done)


def worth(step: Step, steps: list[Step]) -> float:
    """A step's value, or the highest value of a step that needs it (directly or not): a need runs first."""
    dependents = [s for s in steps if step.name in s.needs]
    return max([step.value] + [worth(s, steps) for s in dependents])


def is_done(step: Step, record: dict) -> bool:
    return record.get("status") == DONE and all(Path(p).exists() for p in step.produces)


def write_result(result: dict[str, Any]) -> None:
    """For a step's child: leave `result` (JSON-able) for the planner; call again to replace it as it grows."""
    path = os.environ.get(RESULT_ENV)
    if path:
        rundir.write_json(Path(path), result)


def earlier_result(name: str) -> dict:
    """For a step's child: the result an earlier step left ({} when there is none, or no plan)."""
    path = os.environ.get(PLAN_ENV)
    if not path or not Path(path).exists():
        return {}
    return rundir.read_json(Path(path), "plan records").get("steps", {}).get(name, {}).get("result") or {}


# ---------------------------------------------------------------- one step


def _run_step(files: Files, doc: dict, steps: list[Step], step: Step, *, cap_s: float) -> None:
    records = doc["steps"]
    record = records.setdefault(step.name, {})
    record.update(
        status=ATTEMPTED,
        started=rundir.now(),
        attempts=record.get("attempts", 0) + 1,
        estimate_s=step.estimate_s,
        cap_s=round(cap_s, 1),
        argv=step.argv,
    )
    for stale in ("why", "error", "exit", "seconds"):
        record.pop(stale, None)
    _save(files, doc, steps)  # before it starts: a call cut short leaves "attempted"
    result_path = files.out / f".{step.name}.result.json"
    result_path.unlink(missing_ok=True)
    env = {**os.environ, **step.env, PLAN_ENV: str(files.records), RESULT_ENV: str(result_path)}
    tick = time.monotonic()
    with open(files.log, "a") as log:
        log.write(f"\n===== {step.name} ({rundir.now()}): {' '.join(step.argv)}\n")
        log.flush()
        proc = subprocess.Popen(step.argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=cap_s)
        except subprocess.TimeoutExpired:
            code = None
            _stop(proc)
    seconds = round(time.monotonic() - tick, 1)
    if code == 0:
        status, error = DONE, None
    elif code is None:
        status, error = TIMED_OUT, f"stopped after its cap of {cap_s:.0f} s"
    elif code < 0:
        status, error = CRASHED, f"killed by {signal.Signals(-code).name}"
    else:
        status, error = FAILED, f"exit {code}: {_last_line(files.log)}"
    record.update(status=status, seconds=seconds, exit=code, finished=rundir.now())
    if error:
        record["error"] = error
    if result_path.exists():
        try:
            record["result"] = json.loads(result_path.read_text())
        except ValueError:
            pass  # a result file cut short: the step's status says what happened
        result_path.unlink(missing_ok=True)
    _save(files, doc, steps)
    print(
        f"alexctl: {doc['title']}: {step.name}: {status} in {seconds} s" + (f" ({error})" if error else ""),
        file=sys.stderr,
        flush=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    """The step's whole process group (its own session): SIGTERM, then SIGKILL after a grace period."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_line(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines()[-50:] if ln.strip()]
    return lines[-1].strip()[:300] if lines else "no output"


# ---------------------------------------------------------------- the records and the table


def _check(steps: list[Step]) -> None:
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"step names repeat: {names}")
    for s in steps:
        earlier = names[: names.index(s.name)]
        if any(n not in earlier for n in s.needs):
            raise ValueError(f"step {s.name} needs {s.needs}: each must be a step listed before it")


def _load(files: Files, title: str) -> dict:
    doc = rundir.read_json(files.records, "plan records") if files.records.exists() else {}
    doc.setdefault("title", title)
    doc.setdefault("calls", [])
    doc.setdefault("steps", {})
    return doc


def _save(files: Files, doc: dict, steps: list[Step]) -> None:
    doc["updated"] = rundir.now()
    rundir.write_json(files.records, doc)
    rundir.atomic_write_bytes(files.table, markdown(doc, steps).encode())


def markdown(doc: dict, steps: list[Step]) -> str:
    """The budget of each call and, per step, planned and measured seconds, status and why."""
    lines = [f"# {doc['title']}", ""]
    for i, call in enumerate(doc["calls"], 1):
        used = f", {call['seconds']} s used" if "seconds" in call else " (running, or cut short)"
        lines.append(f"- call {i}, {call['started']}: budget {call['budget_s']:.0f} s of command time{used}")
    lines += [
        "",
        "| step | value | planned s | cap s | measured s | status | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in sorted(steps, key=lambda s: -worth(s, steps)):
        r = doc["steps"].get(s.name, {})
        note = r.get("error") or r.get("why") or ""
        measured = r.get("seconds", "")
        lines.append(
            f"| {s.name} | {s.value:g} | {s.estimate_s:.0f} | {r.get('cap_s', s.cap_s):.0f} | {measured} "
            f"| {r.get('status', 'not run')} | {note} |"
        )
    return "\n".join(lines) + "\n"
