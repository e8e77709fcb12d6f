"""The simulated clinician's protocol: its numbers, read from a ruleset version through the scenario file's roles."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from ..model import Band, ParamRef, Ruleset, Table

_Output = TypeVar("_Output")


@dataclass(frozen=True)
class Clinician:
    """What the clinician who follows the protocol needs: when to start, review and stop, and which dose."""

    start_day: int  # the earliest day of the course
    review_days: int  # days between titration reviews
    max_days: int  # the longest course
    step: float  # one dose level
    max_dose: float
    donated_days: int  # a count this many days after a transfusion or fewer is not the patient's own
    start_doses: tuple[tuple[Band, float], ...]  # by body weight
    actions: tuple[tuple[Band, str], ...]  # at a review, by the latest count
    increase: str  # the action meaning one level up
    stop: str  # the action meaning stop the drug
    course_complete: str  # the stop reason at the longest course

    def start_dose(self, weight_kg: float) -> float:
        return _lookup(self.start_doses, weight_kg)

    def action(self, count: float) -> str:
        return _lookup(self.actions, count)

    @property
    def stop_from(self) -> float:
        """The lowest count the action is to stop at."""
        return min(band.low or 0.0 for band, action in self.actions if action == self.stop)

    def stops_at(self, count: float) -> bool:
        return self.action(count) == self.stop

    def increases_at(self, count: float) -> bool:
        return self.action(count) == self.increase


def table_rows(ruleset: Ruleset, table: Table) -> tuple[tuple[Band, Any], ...]:
    """Each row of a table with its output resolved (a parameter reference becomes the parameter's value)."""
    return tuple((band, ruleset.param(band.output.name) if isinstance(band.output, ParamRef) else band.output)
                 for band in table.bands)


def _lookup(rows: tuple[tuple[Band, _Output], ...], x: float) -> _Output:
    for band, output in rows:
        if band.contains(x):
            return output
    raise ValueError(f"{x} is outside every row of the table")
