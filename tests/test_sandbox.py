"""The engine in a child process: the same answers as in process, drafts never registered here, a bounded child,
and a child that dies costs one evaluation, not the server."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import diff, runtime
from engine.errors import EvaluationError
from engine.loader import load_ruleset
from engine.runtime import Engine
from engine.sandbox import CHILD_NICENESS, EACH_CHUNK, SandboxEngine
from engine.testing import case_facts, run_tests

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "rules"


@pytest.fixture(scope="module")
def hetrombopag():
    return load_ruleset(RULES / "hetrombopag" / "1.0.0.yaml")


@pytest.fixture
def sandbox():
    engine = SandboxEngine(versions_per_child=2)
    yield engine
    engine.close()


def draft(ruleset, n: int):
    """Another version of the same rules: only the text differs, which is what makes durable-rules keep it."""
    return dataclasses.replace(ruleset, source_text=f"{ruleset.source_text}\n# draft {n}\n")


def test_the_child_answers_as_the_engine_in_this_process_does(hetrombopag, sandbox):
    in_process = Engine()
    for case in hetrombopag.tests:
        given = case_facts(hetrombopag, case)
        args = (given.facts, str(case["date"]), case.get("hook"), given.problems)
        assert sandbox.evaluate(hetrombopag, *args) == in_process.evaluate(hetrombopag, *args), case["name"]
    assert all(r.passed for r in run_tests(hetrombopag, sandbox))


def test_a_batch_is_evaluated_in_the_child_chunk_by_chunk_as_this_process_would(hetrombopag, sandbox):
    """`each` (a version diff's evaluations): the same results in the same order, over more than one chunk, and
    neither version registered here; the child keeps both versions as it keeps evaluate's."""
    amended = draft(hetrombopag, 1)
    cases = diff.test_cases(hetrombopag, amended) * (EACH_CHUNK // 20 + 1)
    assert len(cases) > EACH_CHUNK
    expected = Engine().each(diff._signatures, (hetrombopag, amended), cases)
    before = set(runtime._REGISTERED)
    assert sandbox.each(diff._signatures, (hetrombopag, amended), cases, doing="comparing") == expected
    assert set(runtime._REGISTERED) == before
    child = sandbox.child_pid()
    sandbox.evaluate(amended, {}, "2026-12-02", "patient-view")
    assert sandbox.child_pid() == child, "the child holds the two versions it was sent, its share"


def test_drafts_are_never_registered_in_this_process(hetrombopag, sandbox):
    before = set(runtime._REGISTERED)
    for n in range(3):
        assert all(r.passed for r in run_tests(draft(hetrombopag, n), sandbox))
    assert set(runtime._REGISTERED) == before


def test_the_child_is_replaced_once_it_holds_its_share_of_versions(hetrombopag, sandbox):
    case = hetrombopag.tests[0]
    given = case_facts(hetrombopag, case)
    facts, reasons = given.facts, given.problems
    sandbox.evaluate(draft(hetrombopag, 1), facts, str(case["date"]), case.get("hook"), reasons)
    first = sandbox.child_pid()
    sandbox.evaluate(draft(hetrombopag, 2), facts, str(case["date"]), case.get("hook"), reasons)
    sandbox.evaluate(draft(hetrombopag, 1), facts, str(case["date"]), case.get("hook"), reasons)
    assert sandbox.child_pid() == first, "two versions fit in one child"
    sandbox.evaluate(draft(hetrombopag, 3), facts, str(case["date"]), case.get("hook"), reasons)
    second = sandbox.child_pid()
    assert second != first
    _wait_gone(first)


def test_a_child_that_dies_costs_one_evaluation_not_the_server(hetrombopag, sandbox):
    case = hetrombopag.tests[0]
    given = case_facts(hetrombopag, case)
    facts, reasons = given.facts, given.problems
    expected = Engine().evaluate(hetrombopag, facts, str(case["date"]), case.get("hook"), reasons)
    doomed = sandbox.child_pid()
    os.kill(doomed, signal.SIGKILL)
    _wait_gone(doomed)
    try:  # the pool may notice the death at once (a new child answers) or on this call (it fails, and says so)
        assert sandbox.evaluate(hetrombopag, facts, str(case["date"]), case.get("hook"), reasons) == expected
    except EvaluationError as error:
        assert "stopped" in str(error)
    assert sandbox.evaluate(hetrombopag, facts, str(case["date"]), case.get("hook"), reasons) == expected
    assert sandbox.child_pid() != doomed


def test_a_child_whose_parent_is_killed_outright_exits_too():
    """gunicorn SIGKILLs a worker past its timeout; the worker's child must not live on, holding memory."""
    code = ("import time; from engine.sandbox import SandboxEngine; "
            "print(SandboxEngine().child_pid(), flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    server = _parent_of(child)  # the fork server the child was forked by
    assert server != parent.pid
    parent.kill()
    parent.wait()
    _wait_gone(child)
    _wait_gone(server)


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(") ", 1)[1].split()[1])


def test_an_idle_child_is_stopped_and_the_next_evaluation_starts_another(hetrombopag):
    sandbox = SandboxEngine(idle_seconds=0.5)
    try:
        first = sandbox.child_pid()
        _wait_gone(first)
        assert all(r.passed for r in run_tests(hetrombopag, sandbox))
        assert sandbox.child_pid() != first
    finally:
        sandbox.close()


def _wait_gone(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(") ", 1)[1].startswith("Z"):  # exited, not yet reaped
                    return
        except (FileNotFoundError, ProcessLookupError):  # gone, or reaped (by its fork server) as it was read
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still running")


def test_a_call_past_the_time_limit_stops_the_child_and_the_next_call_gets_a_new_one(hetrombopag):
    sandbox = SandboxEngine(time_limit=1.0)
    try:
        first = sandbox.child_pid()
        started = time.monotonic()
        with pytest.raises(EvaluationError, match="sleeping took longer than 1 s"):
            sandbox.run(time.sleep, 60, doing="sleeping")
        assert time.monotonic() - started < 10
        _wait_gone(first)
        assert all(r.passed for r in run_tests(hetrombopag, sandbox))
        assert sandbox.child_pid() != first
    finally:
        sandbox.close()


def test_the_child_yields_the_cpu_to_the_server(sandbox):
    assert sandbox.run(os.nice, 0, doing="asking") == min(os.nice(0) + CHILD_NICENESS, 19)
