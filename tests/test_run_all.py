"""benchmarks/run_all.py: the step table covers every benchmark script and every command parses; the resume logic
(skip finished steps, restart a killed one cleanly, rerun a changed one) on fake steps."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))

from benchmarks import run_all  # noqa: E402
from benchmarks.run_all import EXCLUDED, NOT_REPRODUCED, STEPS, Paths, State, Step  # noqa: E402

BENCH = REPO_ROOT / "benchmarks"


def scripts_of_steps() -> set[str]:
    return {Path(s.args[0]).name for s in STEPS if s.args[0].startswith("benchmarks/")}


def test_every_benchmark_script_is_a_step_or_excluded_with_a_reason() -> None:
    scripts = {p.name for p in BENCH.glob("*.py") if p.name != "__init__.py"}
    missing = scripts - scripts_of_steps() - set(EXCLUDED)
    assert not missing, f"benchmarks/{sorted(missing)}: add a Step to run_all.STEPS or a reason to run_all.EXCLUDED"
    assert set(EXCLUDED) <= scripts, "EXCLUDED names a script that is gone"
    assert all(reason.strip() for reason in EXCLUDED.values())


def test_every_results_file_comes_from_a_step() -> None:
    produced = {r for s in STEPS if s.full for r in s.results}
    present = {p.name for p in (BENCH / "results").glob("*.json")}
    missing = present - produced - set(NOT_REPRODUCED)
    assert not missing, f"results {sorted(missing)} come from no step of run_all.STEPS (nor NOT_REPRODUCED)"


def test_the_order_is_fixed_and_dependencies_come_first() -> None:
    names = [s.name for s in STEPS]
    assert len(names) == len(set(names))
    for i, step in enumerate(STEPS):
        assert set(step.needs) <= set(names[:i]), f"{step.name} needs a later or unknown step"
        assert step.results or step.outputs, f"{step.name}: no results file and no output to check completion by"
        if step.full:
            assert step.minutes > 0 and step.basis.startswith(("measured", "estimated")), step.name
    for budget in run_all.BUDGETS:
        chosen = run_all.select(STEPS, budget)
        assert chosen == [s for s in STEPS if run_all.in_budget(s, budget)]  # run in table order, none reordered
        assert run_all.select(STEPS, budget, only=[chosen[-1].name, chosen[0].name]) == [chosen[0], chosen[-1]]
    assert STEPS[0].name == "smoke_fixtures" and not STEPS[0].full


def test_smoke_runs_write_apart_from_the_figures() -> None:
    full, smoke = Paths(REPO_ROOT, "full"), Paths(REPO_ROOT, "smoke")
    assert smoke.results == full.results / "smoke" and smoke.rendered().parent == smoke.results
    for step in STEPS:
        assert not any("{smoke}" in a for a in step.args), f"{step.name}: the full command names a smoke path"
        if run_all.in_budget(step, "smoke"):
            args = run_all.step_args(step, smoke)
            assert not any(a.startswith(("benchmarks/results/", "runs/")) and not a.startswith("benchmarks/results/smoke")
                           for a in args), f"{step.name}: a smoke command writes among the real figures: {args}"


def test_smoke_options_go_before_a_pass_through_option() -> None:
    step = Step("x", ("s.py", "--a", "{work}/w", "--export_args", "--b"), 1, "estimated", smoke=("--smoke",))
    assert run_all.step_args(step, Paths(REPO_ROOT, "smoke")) == ["s.py", "--a", "benchmarks/work/smoke/w", "--smoke",
                                                                  "--export_args", "--b"]
    assert run_all.step_args(step, Paths(REPO_ROOT, "full")) == ["s.py", "--a", "benchmarks/work/w", "--export_args", "--b"]
    dropped = Step("x", ("s.py", "--a", "1", "--export_args", "--b", "2", "3"), 1, "estimated", smoke=(), smoke_drop=("--b",))
    assert run_all.step_args(dropped, Paths(REPO_ROOT, "smoke")) == ["s.py", "--a", "1"]
    assert run_all.step_args(dropped, Paths(REPO_ROOT, "full"))[-3:] == ["--b", "2", "3"]


class Parsed(Exception):
    pass


def parsed_by_script(script: Path, args: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """The namespace the script's own parser makes of ``args``; the script stops right after parsing."""
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self: argparse.ArgumentParser, argv=None, namespace=None):  # noqa: ANN001, ANN202
        raise Parsed(original(self, argv, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    spec = importlib.util.spec_from_file_location(f"_run_all_check_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    with pytest.raises(Parsed) as info:
        module.main()
    return info.value.args[0]


@pytest.mark.parametrize("budget", run_all.BUDGETS)
def test_every_command_parses(budget: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from fenlei.commands import COMMANDS

    paths = Paths(REPO_ROOT, budget)
    for step in run_all.select(STEPS, budget):
        args = run_all.step_args(step, paths)
        if args[0] == "cli.py":
            assert args[1] in COMMANDS, step.name
            if args[1] == "export":
                from fenlei.deploy.export import parse_options

                parse_options(args[2:])
            else:
                configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
                assert configs and all((REPO_ROOT / c).is_file() for c in configs), step.name
            continue
        script = REPO_ROOT / args[0]
        assert script.is_file(), step.name
        if script.name == "common.py":
            continue  # no options
        with monkeypatch.context() as m:
            ns = parsed_by_script(script, args[1:], m)
        assert getattr(ns, "smoke", budget == "smoke") == (budget == "smoke"), f"{step.name}: --smoke not passed on"


def test_plan_lists_every_step_with_its_duration() -> None:
    text = run_all.plan(STEPS, Paths(REPO_ROOT, "full"))
    for step in STEPS:
        if step.full:
            assert f"{step.name} [" in text and f"~{step.minutes:g} min" in text


# ---------------------------------------------------------------------------------------------------- resume logic


FAKE = '''
import json, os, subprocess, sys, time
from pathlib import Path
out, counter, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
with counter.open("a") as f:
    f.write(mode + "\\n")
if mode == "hang":
    Path(str(counter) + ".started").write_text(str(os.getpid()))
    # A grandchild that outlives its parent, as a fit started by a benchmark script would.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    Path(str(counter) + ".grandchild").write_text(str(child.pid))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"partial": True}))
    time.sleep(120)
if mode == "fail":
    sys.exit(3)
if mode != "no_write":
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": out.stem, "mode": mode}))
'''


def fake_steps(tmp: Path, mode_a: str = "ok", mode_b: str = "ok") -> tuple[Step, ...]:
    (tmp / "fake.py").write_text(FAKE)
    return (Step("a", ("fake.py", "{results}/a.json", "a.count", mode_a), 1, "estimated", results=("a.json",),
                 smoke=(), clean=("{work}/a_partial",)),
            Step("b", ("fake.py", "{results}/b.json", "b.count", mode_b), 1, "estimated", results=("b.json",), smoke=(),
                 needs=("a",)))


def runs_of(tmp: Path, name: str) -> list[str]:
    path = tmp / f"{name}.count"
    return path.read_text().split() if path.is_file() else []


def test_finished_steps_are_skipped_and_stamped(tmp_path: Path) -> None:
    paths = Paths(tmp_path, "smoke")
    steps = fake_steps(tmp_path)
    assert run_all.run(steps, paths, render=False) == 0
    assert run_all.run(steps, paths, render=False) == 0
    assert runs_of(tmp_path, "a") == ["ok"] and runs_of(tmp_path, "b") == ["ok"]
    stamp = json.loads((paths.results / "a.json").read_text())["run_all"]
    assert stamp["step"] == "a" and stamp["budget"] == "smoke" and stamp["command"].endswith("a.count ok")
    assert "model" in stamp["cpu"] and State(paths.state_dir / "state.json").step("a")["status"] == "done"
    assert run_all.run(steps, paths, redo=["b"], render=False) == 0
    assert runs_of(tmp_path, "b") == ["ok", "ok"] and runs_of(tmp_path, "a") == ["ok"]
    # A changed command is another step: it runs again.
    assert run_all.run(fake_steps(tmp_path, mode_a="ok2"), paths, render=False) == 0
    assert runs_of(tmp_path, "a") == ["ok", "ok2"] and runs_of(tmp_path, "b") == ["ok", "ok"]
    # The full budget keeps its own files and state.
    assert not (tmp_path / "benchmarks" / "results" / "a.json").exists()


def test_a_failed_step_blocks_what_needs_it(tmp_path: Path) -> None:
    paths = Paths(tmp_path, "smoke")
    assert run_all.run(fake_steps(tmp_path, mode_a="fail"), paths, render=False) == 1
    assert runs_of(tmp_path, "b") == []
    state = State(paths.state_dir / "state.json")
    assert state.step("a")["status"] == "failed" and state.step("a")["returncode"] == 3
    assert run_all.run(fake_steps(tmp_path, mode_a="no_write"), paths, render=False) == 1  # exit 0, no results file
    assert state.__class__(paths.state_dir / "state.json").step("a")["status"] == "failed"
    assert run_all.run(fake_steps(tmp_path), paths, render=False) == 0
    assert runs_of(tmp_path, "b") == ["ok"]


def test_a_killed_run_restarts_the_step_cleanly(tmp_path: Path) -> None:
    paths = Paths(tmp_path, "smoke")
    fake_steps(tmp_path)
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from pathlib import Path\n"
        "from benchmarks import run_all\n"
        "from benchmarks.run_all import Step, Paths\n"
        "steps = (Step('a', ('fake.py', '{results}/a.json', 'a.count', 'hang'), 1, 'estimated', results=('a.json',),"
        " smoke=(), clean=('{work}/a_partial',)),)\n"
        f"sys.exit(run_all.run(steps, Paths(Path({str(tmp_path)!r}), 'smoke'), render=False))\n")
    proc = subprocess.Popen([sys.executable, str(driver)], cwd=tmp_path, stdout=subprocess.DEVNULL)
    started = tmp_path / "a.count.started"
    deadline = time.monotonic() + 60
    while not (tmp_path / "a.count.grandchild").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchild = int((tmp_path / "a.count.grandchild").read_text())
    os.kill(proc.pid, signal.SIGKILL)  # run_all dies without cleaning up
    proc.wait()
    assert started.is_file()
    (paths.work / "a_partial").mkdir(parents=True)  # what the attempt left half made
    assert State(paths.state_dir / "state.json").step("a")["status"] == "running"
    assert os.path.exists(f"/proc/{grandchild}")  # still running: nothing ended it yet

    assert run_all.run(fake_steps(tmp_path), paths, render=False) == 0
    assert not os.path.exists(f"/proc/{grandchild}") or Path(f"/proc/{grandchild}/status").read_text().find(
        "State:\tZ") >= 0, "the killed attempt's leftover process still runs"
    assert not (paths.work / "a_partial").exists()
    assert runs_of(tmp_path, "a") == ["hang", "ok"]
    assert json.loads((paths.results / "a.json").read_text())["mode"] == "ok"
    assert State(paths.state_dir / "state.json").step("a")["attempt"] == 2


def kernel_result(**extra: object) -> dict:
    return {"benchmark": "kernel_costs", "command": "python benchmarks/kernel_costs.py --smoke", "date": "2026-12-02",
            "machine": {"cpu": {"model": "Test CPU", "cores": 2, "flags": ["avx2", "avx512_vnni"]}}, "onnxruntime": "1.0",
            "tokens": 20, "chain": 12, "runs": 50, "us_per_op": {"threads=1": {"A (fused)": 2.0, "B (folded)": 1.0}},
            **extra}


def test_smoke_figures_are_marked_everywhere_they_show(tmp_path: Path) -> None:
    from benchmarks import render

    folder = tmp_path / "smoke"
    folder.mkdir()
    (folder / "kernel_costs.json").write_text(json.dumps(kernel_result(smoke=True)))
    render.main(["--results", str(folder), "--out", str(tmp_path / "out.md")])
    text = (tmp_path / "out.md").read_text()
    assert text.startswith("# Benchmarks: SMOKE RUN")
    assert "### The small kernels the CPU rewrites swap [SMOKE" in text
    row = next(line for line in text.splitlines() if "per-op cost" in line and line.startswith("| ["))
    assert "[SMOKE]" in row and "2026-12-02 (smoke)" in row and "Test CPU; avx2, avx512_vnni" in row
    assert "Test CPU" in text.split("### The small kernels")[1]  # the CPU beside the section's figures too
    assert "## Reproducing" not in text

    # A smoke file among real ones (a run_all stamp of the smoke budget) is marked, the rest is not.
    real = tmp_path / "real"
    real.mkdir()
    (real / "kernel_costs.json").write_text(json.dumps(kernel_result(run_all={"budget": "smoke"})))
    render.main(["--results", str(real), "--out", str(tmp_path / "real.md")])
    text = (tmp_path / "real.md").read_text()
    assert text.startswith("# Benchmarks: SMOKE RUN")  # every file of the folder is a smoke run's
    (real / "kernel_costs_2.json").write_text(json.dumps(kernel_result(benchmark="kernel_costs_2")))
    render.main(["--results", str(real), "--out", str(tmp_path / "real.md")])
    text = (tmp_path / "real.md").read_text()
    assert text.startswith("# Benchmarks\n") and "[SMOKE" in text and "## Reproducing" in text
