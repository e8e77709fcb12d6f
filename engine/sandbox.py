"""An engine in a child process, for rulesets that are still being written (the workbench's drafts).

durable-rules cannot unregister a ruleset: every version it has seen stays in the process (about 1.4 MB each, as
measured for the first protocol shipped), so a pharmacist checking draft after draft would grow the server without
bound. A draft is also untrusted input to a C core, and if it ever crashed that core, the worker serving order-sign
would go down with it. So these evaluations run in a child process, which is replaced once it has held
`versions_per_child` versions, and stopped after `idle_seconds` without use. A child that dies fails the one
evaluation it was running with an EvaluationError that says so; the next evaluation starts a new child. A draft's
templates can loop for as long as they like, so each call has `time_limit` seconds: past it the child is killed and
the caller gets an EvaluationError that says so. Calls are made one at a time, so the limit counts a call's own
running time, and the child runs at a lower priority than the server that answers the EHR. `run` runs any function
in the child, within the same limit.

Children are forked by multiprocessing's fork server, a single-threaded process started once per parent with the
engine already imported: forking the parent itself is unsafe (it may run threads), and a freshly spawned child
imported the whole engine again before its first evaluation; a fork of the server is ready in about 10 ms.
The server exits when its parent does, and its children then see themselves handed to another parent and exit too.

`SandboxEngine.evaluate` has `Engine.evaluate`'s signature, so run_tests, simulate and behavioural_impact take it
as they take an Engine.
"""
from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from .compiler import engine_name
from .errors import EvaluationError
from .model import Evaluation, Ruleset
from .runtime import Engine

VERSIONS_PER_CHILD = 32  # about 45 MB of registered versions at most, before the child is replaced
IDLE_SECONDS = 600.0  # a child unused this long is stopped: the workbench is used now and then, not all day
TIME_LIMIT_SECONDS = 10.0  # per call: checking a shipped ruleset (load, checks, charts, 50 tests) takes about 1 s
START_SECONDS = 60.0  # for a new child to start, on a busy machine
CHILD_NICENESS = 10  # the child yields the CPU to the workers answering the EHR
PARENT_CHECK_SECONDS = 1.0
EACH_CHUNK = 100  # items of `each` a call: about 0.1 s of evaluations here, far within a call's time limit
T = TypeVar("T")
# What a call sends to the child, given the versions the child has yet to be sent: a function and its arguments.
_Job = Callable[[frozenset[str]], tuple[Callable[..., T], *tuple[Any, ...]]]


class SandboxEngine:
    def __init__(self, versions_per_child: int = VERSIONS_PER_CHILD, idle_seconds: float = IDLE_SECONDS,
                 time_limit: float = TIME_LIMIT_SECONDS) -> None:
        self.versions_per_child = versions_per_child
        self.idle_seconds = idle_seconds
        self.time_limit = time_limit
        self._lock = threading.Lock()
        self._one_call = threading.Lock()  # held for a whole call, so that its time limit is its own
        self._executor: ProcessPoolExecutor | None = None
        self._sent: set[str] = set()  # the versions sent to the current child, which keeps them
        self._last_used = 0.0
        self._reaper: threading.Thread | None = None  # stops an idle child

    def evaluate(self, ruleset: Ruleset, facts: dict[str, Any], evaluation_date: dt.date | str,
                 hook: str | None = None, reasons: dict[str, str] | None = None) -> Evaluation:
        name = engine_name(ruleset)
        return self._call((name,), lambda new: (
            # The child keeps each version it is sent; the ruleset travels only the first time (137 KB pickled).
            _evaluate, name, ruleset if name in new else None, facts, evaluation_date, hook, reasons),
            f"evaluating {ruleset.ref}")

    def each(self, function: Callable[..., T], rulesets: Sequence[Ruleset], items: Sequence[Any],
             doing: str) -> list[T]:
        """[function(engine, *rulesets, item) for item in items], run in the child with its engine, EACH_CHUNK
        items a call: one call per evaluation cost a millisecond of round trip each, more than most evaluations.
        `function` is a module-level function (it travels by name); the rulesets travel once, as evaluate's do."""
        names = tuple(engine_name(r) for r in rulesets)

        def job(chunk: list[Any]) -> _Job[list[T]]:
            return lambda new: (_each, function, names,
                                [r if n in new else None for n, r in zip(names, rulesets, strict=True)], chunk)

        done: list[T] = []
        for start in range(0, len(items), EACH_CHUNK):
            done += self._call(names, job(list(items[start:start + EACH_CHUNK])), doing)
        return done

    def run(self, function: Callable[..., T], *args: Any, doing: str, version: str | None = None) -> T:
        """function(*args) in the child (a module-level function: it travels by name), within the time limit; `doing`
        says what for errors ("checking the draft"). `version` names a ruleset version the call may register in the
        child, which counts toward `versions_per_child`; functions use the child's engine through child_engine()."""
        return self._call((version,) if version else (), lambda _new: (function, *args), doing)

    def child_pid(self) -> int:
        """The process id of the child that evaluates now (starting one if there is none)."""
        return self._call((), lambda _new: (os.getpid,), "starting")

    def _call(self, names: tuple[str, ...], call: _Job[T], doing: str) -> T:
        with self._one_call:
            executor, future = self._submit(names, call)
            try:
                return future.result(timeout=self.time_limit)
            except TimeoutError:
                self._forget(executor)
                _kill(executor)
                raise EvaluationError(f"{doing} took longer than {self.time_limit:g} s, so it was stopped") from None
            except BrokenProcessPool:
                self._forget(executor)
                raise EvaluationError(f"the engine process stopped while {doing}; the next evaluation starts a "
                                      "new one") from None
            finally:
                self._last_used = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._executor, self._sent = None, set()

    def _submit(self, names: tuple[str, ...], call: _Job[T]) -> tuple[ProcessPoolExecutor, Future[T]]:
        """Submit call(new versions) to the child; a child found dead is replaced first (its pool refuses work)."""
        with self._lock:
            self._last_used = time.monotonic()
            for _attempt in range(2):
                executor, new = self._executor_for(names)
                if self._reaper is None:
                    self._reaper = threading.Thread(target=self._reap_when_idle, name="sandbox-idle", daemon=True)
                    self._reaper.start()
                function, *args = call(new)
                try:
                    return executor, executor.submit(function, *args)
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
                idle = 0.0 if self._one_call.locked() else time.monotonic() - self._last_used  # not while in use
                if idle >= self.idle_seconds:
                    self._executor.shutdown(wait=False)
                    self._executor, self._sent, self._reaper = None, set(), None
                    return
            time.sleep(self.idle_seconds - idle)

    def _executor_for(self, names: tuple[str, ...]) -> tuple[ProcessPoolExecutor, frozenset[str]]:
        """The child's pool, replaced first if `names` would be versions too many; and which of them the child has
        yet to be sent."""
        new = frozenset(names) - self._sent
        if self._executor is not None and new and len(self._sent) + len(new) > self.versions_per_child:
            self._executor.shutdown(wait=False)  # what it was given still completes; then its child exits
            self._executor = None
        if self._executor is None:
            self._executor, self._sent = _started_pool(), set()
            new = frozenset(names)
        self._sent |= new
        return self._executor, new

    def _forget(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is broken:
                self._executor, self._sent = None, set()


def _started_pool() -> ProcessPoolExecutor:
    """A pool whose child has started (the fork server's first start takes a second or more on a busy machine), so
    that no call's time limit is spent on it."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # before the server's first start; later calls change nothing
    executor = ProcessPoolExecutor(1, mp_context=context, initializer=_start_child, initargs=(os.getpid(),))
    try:
        executor.submit(os.getpid).result(timeout=START_SECONDS)
    except (TimeoutError, BrokenProcessPool):
        _kill(executor)
        raise EvaluationError("the engine process could not be started") from None
    return executor


def _kill(executor: ProcessPoolExecutor) -> None:
    """Stop the pool's child at once: a running call cannot be cancelled, and the pool has no public way to kill
    its process before Python 3.14."""
    for process in list((executor._processes or {}).values()):
        process.kill()
    executor.shutdown(wait=False, cancel_futures=True)


# --- in the child ---------------------------------------------------------------------------

_ENGINE: Engine | None = None
_RULESETS: dict[str, Ruleset] = {}


def _start_child(parent: int) -> None:
    os.nice(CHILD_NICENESS)
    _exit_with_parent(parent)


def child_engine() -> Engine:
    """The child's own engine, for functions given to SandboxEngine.run."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Engine()
    return _ENGINE


def _exit_with_parent(parent: int) -> None:
    """A parent killed outright (gunicorn's SIGKILL of a worker past its timeout) cannot stop its child. Its fork
    server then exits, so the child sees itself handed to another parent and exits, and so it does once the parent
    itself is gone: none is left behind holding memory."""
    server = os.getppid()

    def watch() -> None:
        while os.getppid() == server and _running(parent):
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _running(pid: int) -> bool:
    """Whether the process exists (an exited one not yet reaped still does: its fork server has exited by then)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        pass
    return True


def _each(function: Callable[..., T], names: tuple[str, ...], rulesets: list[Ruleset | None],
          items: list[Any]) -> list[T]:
    for name, ruleset in zip(names, rulesets, strict=True):
        if ruleset is not None:
            _RULESETS[name] = ruleset
    kept = [_RULESETS[name] for name in names]
    return [function(child_engine(), *kept, item) for item in items]


def _evaluate(name: str, ruleset: Ruleset | None, facts: dict[str, Any], evaluation_date: dt.date | str,
              hook: str | None, reasons: dict[str, str] | None) -> Evaluation:
    if ruleset is not None:
        _RULESETS[name] = ruleset
    return child_engine().evaluate(_RULESETS[name], facts, evaluation_date, hook, reasons)
