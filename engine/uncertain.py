"""Facts known only within bounds, and how a value stands for them in card texts.

FHIR lets a record say less than an exact value: a birthDate of `2016-10`, an onset in `2025`, a platelet count
written `<20`. Such a fact is a `Possible`: every value it may take (dates, whole numbers), or bounds on a number.
engine/certainty.py decides with it where the decision is the same for every value it may take, and treats it as
missing, with the reason, where it is not. While a decision is evaluated at one of those values, the value is
wrapped (`shown`) so that card texts and the trace show what the record said ("<20"), never the stand-in.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Possible:
    """What a record says of a fact that it does not give exactly."""

    shown: str  # as written, for texts: "<20", "2016-10", "9 or 10"
    why: str  # where it comes from: "birthDate '2016-10' is partial (Patient/p1)"
    values: tuple[Any, ...] = ()  # every value the fact may take (dates, whole numbers), in order
    low: float | None = None  # for a number: its bounds (None: unbounded)...
    high: float | None = None
    low_closed: bool = True  # ...and whether each bound itself is possible
    high_closed: bool = True

    @property
    def is_interval(self) -> bool:
        return not self.values


class ShownNumber(float):
    """A number standing for a Possible while one evaluation runs: computes as the number, prints as written."""

    text: str

    def __new__(cls, value: float, text: str) -> ShownNumber:
        made = super().__new__(cls, value)
        made.text = text
        return made

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[type[ShownNumber], tuple[float, str]]:
        return ShownNumber, (float(self), self.text)


class ShownInteger(int):
    text: str

    def __new__(cls, value: int, text: str) -> ShownInteger:
        made = super().__new__(cls, value)
        made.text = text
        return made

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[type[ShownInteger], tuple[int, str]]:
        return ShownInteger, (int(self), self.text)


class ShownDate(dt.date):
    text: str

    def __new__(cls, value: dt.date, text: str) -> ShownDate:
        made = super().__new__(cls, value.year, value.month, value.day)
        made.text = text
        return made

    def __str__(self) -> str:
        return self.text

    def isoformat(self) -> str:  # the trace and the audit write dates with isoformat()
        return self.text

    def __reduce__(self) -> tuple[type[ShownDate], tuple[dt.date, str]]:
        return ShownDate, (dt.date(self.year, self.month, self.day), self.text)


SHOWN_TYPES = (ShownNumber, ShownInteger, ShownDate)


def shown(value: Any, text: str) -> Any:
    """`value` wrapped to print as `text`."""
    if isinstance(value, dt.date):
        return ShownDate(value, text)
    if isinstance(value, int) and not isinstance(value, bool):
        return ShownInteger(value, text)
    return ShownNumber(value, text)


def days(first: dt.date, last: dt.date) -> tuple[dt.date, ...]:
    return tuple(first + dt.timedelta(days=n) for n in range((last - first).days + 1))
