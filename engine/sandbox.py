"""An engine in a child process, for rulesets that are still being written (the workbench's drafts).

durable-rules cannot unregister a ruleset: every version it has seen stays in the process (about 1.4 MB each for
hetrombopag), so a pharmacist checking draft after draft would grow the server without bound. A draft is also
untrusted input to a C core, and if it ever crashed that core, the worker serving order-sign would go down with it.
So these evaluations run in a child process, started with spawn (the parent may run threads), which is replaced
once it has held `versions_per_child` versions, and stopped after `idle_seconds` without use. A child that dies
fails the one evaluation it was running with an EvaluationError that says so; the next evaluation starts a new
child.

`SandboxEngine.evaluate` has `Engine.evaluate`'s signature, so run_tests, simulate and behavioural_impact take it
as they take an Engine. Spawn imports the parent's main module in the child: entry points keep their work under
`if __name__ == "__main__":` (ours do).
"""
from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from .compiler import engine_name
from .errors import EvaluationError
from .model import Evaluation, Ruleset
from .runtime import Engine

VERSIONS_PER_CHILD = 32  # about 45 MB of registered versions at most, before the child is replaced
IDLE_SECONDS = 600.0  # a child unused this long is stopped: the workbench is used now and then, not all day
PARENT_CHECK_SECONDS = 1.0


class SandboxEngine:
    def __init__(self, versions_per_child: int = VERSIONS_PER_CHILD, idle_seconds: float = IDLE_SECONDS) -> None:
        self.versions_per_child = versions_per_child
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._sent: set[str] = set()  # the versions sent to the current child, which keeps them
        self._last_used = 0.0
        self._reaper: threading.Thread | None = None  # stops an idle child

    def evaluate(self, ruleset: Ruleset, facts: dict[str, Any], evaluation_date: dt.date | str,
                 hook: str | None = None, reasons: dict[str, str] | None = None) -> Evaluation:
        name = engine_name(ruleset)
        executor, future = self._submit(name, lambda first_time: (
            # The child keeps each version it is sent; the ruleset travels only the first time (137 KB pickled).
            _evaluate, name, ruleset if first_time else None, facts, evaluation_date, hook, reasons))
        return self._result(executor, future, f"evaluating {ruleset.ref}")

    def child_pid(self) -> int:
        """The process id of the child that evaluates now (starting one if there is none)."""
        return self._result(*self._submit(None, lambda _first_time: (os.getpid,)), "starting")

    def _result(self, executor: ProcessPoolExecutor, future: Future, doing: str) -> Any:
        try:
            return future.result()
        except BrokenProcessPool:
            self._forget(executor)
            raise EvaluationError(f"the engine process stopped while {doing}; the next evaluation starts a new "
                                  "one") from None

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._executor, self._sent = None, set()

    def _submit(self, name: str | None, call: Callable[[bool], tuple]) -> tuple[ProcessPoolExecutor, Future]:
        """Submit call(first_time) to the child; a child found dead is replaced first (its pool refuses work)."""
        with self._lock:
            self._last_used = time.monotonic()
            for _attempt in range(2):
                executor, first_time = self._executor_for(name)
                if self._reaper is None:
                    self._reaper = threading.Thread(target=self._reap_when_idle, name="sandbox-idle", daemon=True)
                    self._reaper.start()
                try:
                    return executor, executor.submit(*call(first_time))
                except BrokenProcessPool:
                    self._executor, self._sent = None, set()
            raise EvaluationError("the engine process could not be started")

    def _reap_when_idle(self) -> None:
        """Stop the child once it has gone `idle_seconds` without use: its memory goes back to the system, and the
        next evaluation starts a new child."""
        while True:
            with self._lock:
                if self._executor is None:
                    self._reaper = None
                    return
                idle = time.monotonic() - self._last_used
                if idle >= self.idle_seconds:
                    self._executor.shutdown(wait=False)  # anything still queued completes first
                    self._executor, self._sent, self._reaper = None, set(), None
                    return
            time.sleep(self.idle_seconds - idle)

    def _executor_for(self, name: str | None) -> tuple[ProcessPoolExecutor, bool]:
        """The child's pool, replaced first if `name` would be one version too many; and whether the child has
        yet to be sent `name` (None: not a version, e.g. child_pid)."""
        new_version = name is not None and name not in self._sent
        if self._executor is not None and new_version and len(self._sent) >= self.versions_per_child:
            self._executor.shutdown(wait=False)  # what it was given still completes; then its child exits
            self._executor = None
        if self._executor is None:
            self._executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_exit_with_parent, initargs=(os.getpid(),))
            self._sent = set()
        if new_version:
            self._sent.add(name)
        return self._executor, new_version

    def _forget(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is broken:
                self._executor, self._sent = None, set()


# --- in the child ---------------------------------------------------------------------------

_ENGINE: Engine | None = None
_RULESETS: dict[str, Ruleset] = {}


def _exit_with_parent(parent: int) -> None:
    """A parent killed outright (gunicorn's SIGKILL of a worker past its timeout) cannot stop its child; the child
    then sees itself handed to another parent and exits, so that none is left behind holding memory."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _evaluate(name: str, ruleset: Ruleset | None, facts: dict[str, Any], evaluation_date: dt.date | str,
              hook: str | None, reasons: dict[str, str] | None) -> Evaluation:
    global _ENGINE
    if ruleset is not None:
        _RULESETS[name] = ruleset
    if _ENGINE is None:
        _ENGINE = Engine()
    return _ENGINE.evaluate(_RULESETS[name], facts, evaluation_date, hook, reasons)
