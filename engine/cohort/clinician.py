"""The simulated clinician's protocol: its numbers, read from a ruleset version through the scenario file's roles."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..model import Band, ParamRef, Ruleset, Table

_Output = TypeVar("_Output")


@dataclass(frozen=True)
class Clinician:
    """What the clinician who follows the protocol needs: when to start, review and stop, and which dose.

    A protocol titrates either in fixed steps (`step`, up only, with a stop count) or on dose levels (`levels_up`
    and `levels_down`, the ruleset's level tables), where the review table's outputs may also mean one level down,
    keep, or hold (restarted one level down once the count is below `restart_below`)."""

    start_day: int | None  # the earliest day of the course
    review_days: int  # days between titration reviews
    max_days: int | None  # the longest course
    step: float | None  # one dose level, for a protocol that titrates in fixed steps
    max_dose: float
    donated_days: int  # a count this many days after a transfusion or fewer is not the patient's own
    start_doses: tuple[tuple[Band, float], ...]  # by body weight; empty when the start dose is a parameter
    actions: tuple[tuple[Band, str], ...]  # at a review, by the latest count
    increase: str  # the action meaning one level up
    stop: str | None  # the action meaning stop the drug
    course_complete: str | None  # the stop reason at the longest course
    decrease: str | None = None  # the action meaning one level down
    maintain: str | None = None  # the action meaning keep the dose
    hold: str | None = None  # the action meaning hold the drug
    start_param: str | None = None  # the parameter of everyone's start dose (a person may name another)
    params: dict[str, float] = field(default_factory=dict)  # the ruleset's numeric parameters, for start doses
    levels_up: tuple[tuple[Band, float], ...] = ()
    levels_down: tuple[tuple[Band, float], ...] = ()
    increase_after_days: int | None = None  # days on a dose before an increase (default: the review interval)
    decrease_wait_days: int | None = None  # days after a change before a decrease; the start dose goes down at once
    restart_below: float | None = None
    no_response_days: int | None = None
    no_response_below: float | None = None

    def start_dose(self, weight_kg: float | None, param: str | None = None) -> float:
        """By the weight in the start-dose table, else the parameter the person or the clinician names."""
        if self.start_doses and param is None:
            if weight_kg is None:
                raise ValueError("a start dose by weight needs a weight")
            return _lookup(self.start_doses, weight_kg)
        name = param or self.start_param
        if name is None or name not in self.params:
            raise ValueError(f"no start dose parameter {name!r} in the ruleset")
        return self.params[name]

    def action(self, count: float) -> str:
        return _lookup(self.actions, count)

    @property
    def stop_from(self) -> float:
        """The lowest count the action is to stop at."""
        return min(band.low or 0.0 for band, action in self.actions if action == self.stop)

    def stops_at(self, count: float) -> bool:
        return self.stop is not None and self.action(count) == self.stop

    def increases_at(self, count: float) -> bool:
        return self.action(count) == self.increase

    @property
    def by_levels(self) -> bool:
        """Titration on the ruleset's dose levels rather than in fixed steps."""
        return bool(self.levels_up or self.levels_down)

    def level_above(self, dose: float) -> float | None:
        return _find(self.levels_up, dose)

    def level_below(self, dose: float) -> float | None:
        return _find(self.levels_down, dose)


def table_rows(ruleset: Ruleset, table: Table) -> tuple[tuple[Band, Any], ...]:
    """Each row of a table with its output resolved (a parameter reference becomes the parameter's value)."""
    return tuple((band, ruleset.param(band.output.name) if isinstance(band.output, ParamRef) else band.output)
                 for band in table.bands)


def _lookup(rows: tuple[tuple[Band, _Output], ...], x: float) -> _Output:
    for band, output in rows:
        if band.contains(x):
            return output
    raise ValueError(f"{x} is outside every row of the table")


def _find(rows: tuple[tuple[Band, float], ...], x: float) -> float | None:
    """The row's output, or None outside every row (no level there)."""
    return next((float(output) for band, output in rows if band.contains(x)), None)
