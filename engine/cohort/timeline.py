"""The timeline: platelet course, transfusions, weights and the simulated clinician's orders."""
from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..simulate import HELD  # the order status of a held drug, as the therapy simulation writes it
from .clinician import Clinician
from .model import Order, Profile, Timeline, mg
from .scenario import Scenarios


@dataclass(frozen=True)
class _Curve:
    """A platelet course: fall from `baseline` to `nadir` by `nadir_day`, then a logistic rise towards `level`."""

    baseline: float
    nadir: float
    nadir_day: int
    level: float
    midpoint: float
    width: float

    def at(self, day: int) -> float:
        if day <= self.nadir_day:
            return float(self.baseline * (self.nadir / self.baseline) ** (max(day, 0) / self.nadir_day))
        rise = (_logistic(day, self.midpoint, self.width) - _logistic(self.nadir_day, self.midpoint, self.width))
        rise /= 1 - _logistic(self.nadir_day, self.midpoint, self.width)
        return self.nadir + (self.level - self.nadir) * rise


def _logistic(x: float, midpoint: float, width: float) -> float:
    return 1 / (1 + math.exp(-(x - midpoint) / width))



def draw_timeline(profile: Profile, rng: random.Random, clinician: Clinician, scenarios: Scenarios,
                  weight_units: Mapping[str, float]) -> Timeline:
    """The patient's course from day 0 to the scenario file's last day."""
    end_day = scenarios.days
    timeline = Timeline()
    if profile.response is not None:  # counts that follow the dose: drawn with the clinician's decisions
        _respond(profile, rng, timeline, clinician, scenarios.data["response"], end_day)
        if profile.weight_kg is not None:
            _weights(profile, rng, timeline, end_day, weight_units)
        return timeline
    _platelet_course(profile, rng, timeline, clinician, scenarios.data["recovery"], end_day,
                     scenarios.data["transfusions"])
    _weights(profile, rng, timeline, end_day, weight_units)
    if profile.start_day is not None:
        _treat(profile.start_day, timeline, clinician, end_day)
    return timeline


def _curve(recovery: str, rng: random.Random, spec: dict[str, Any]) -> _Curve:
    """The course named `recovery` in the scenario file's `recovery`, drawn in a fixed order."""
    baseline, nadir = rng.uniform(*spec["baseline"]), rng.uniform(*spec["nadir"])
    course = spec["courses"][recovery]
    day = rng.randint(*course["nadir_day"])
    level = rng.uniform(*course["level"])
    if "midpoint_day" in course:
        midpoint = rng.uniform(*course["midpoint_day"])
    else:
        midpoint = day + rng.uniform(*course["midpoint_after_nadir"])
    return _Curve(baseline, nadir, day, level, midpoint, rng.uniform(*course["width"]))


def _platelet_days(rng: random.Random, end_day: int) -> list[int]:
    """Daily until day +28 (now and then a day missed, never two), then every other day."""
    days, skipped = [], False
    for day in range(-1, 29):
        skipped = not skipped and day > 1 and rng.random() < 0.08
        if not skipped:
            days.append(day)
    return days + list(range(30, end_day + 1, 2))


def _platelet_course(profile: Profile, rng: random.Random, timeline: Timeline, clinician: Clinician,
                     recovery: dict[str, Any], end_day: int, transfusions: dict[str, Any]) -> None:
    """Measured counts: the patient's own course with noise, plus the transfused platelets of recent transfusions."""
    assert profile.recovery is not None, "a recovery course is drawn for everyone without a response course"
    curve = _curve(profile.recovery, rng, recovery)
    boost: dict[int, float] = {}
    for day in _platelet_days(rng, end_day):
        own = curve.at(day) * min(max(rng.gauss(1, 0.05), 0.88), 1.12)
        count = max(1, round(own + boost.get(day, 0)))
        timeline.platelets[day] = count
        if _transfuse(profile, timeline, day, count, transfusions):
            timeline.transfusions.append(day)
            added = [rng.uniform(*between) for between in transfusions["added_counts"]]
            for after, extra in enumerate(added, 1):
                boost[day + after] = boost.get(day + after, 0) + extra
    if profile.late_transfusion:
        _late_transfusion(timeline, clinician, transfusions["late"])


def _transfuse(profile: Profile, timeline: Timeline, day: int, count: int, spec: dict[str, Any]) -> bool:
    """Below the patient's threshold on the transfusion days, at most once in the minimum interval."""
    recent = timeline.transfusions and day - timeline.transfusions[-1] < spec["min_interval_days"]
    first, last = spec["days"]
    return bool(first <= day <= last and count < profile.transfusion_threshold and not recent)


def _late_transfusion(timeline: Timeline, clinician: Clinician, spec: dict[str, Any]) -> None:
    """A transfusion just before the count first reaches the stop: that count and the next days' are not the
    patient's own, so they must not stop the drug."""
    first = next(d for d in sorted(timeline.platelets)
                 if d > spec["after_day"] and clinician.stops_at(timeline.platelets[d]))
    day = first - spec["days_before"]
    if day not in timeline.transfusions:
        timeline.transfusions.append(day)
    timeline.decision_days.add(first)
    stop = f"{clinician.stop_from:g}"
    timeline.events.append(f"transfusion day +{day} before the first count >= {stop} (day +{first})")


def _weights(profile: Profile, rng: random.Random, timeline: Timeline, end_day: int,
             factors: Mapping[str, float]) -> None:
    """Every third day; a slow loss during aplasia; recorded mostly in kg, some in g or pounds."""
    assert profile.weight_kg is not None, "weights are recorded only for a person with a weight"
    loss = 0 if profile.weight_fixed else rng.uniform(0, 0.05)
    for day in range(-2, end_day + 1, 3):
        kg: float = profile.weight_kg
        if not profile.weight_fixed:
            kg = round(kg * (1 - loss * max(day, 0) / end_day) + rng.gauss(0, 0.004 * kg), 1)
        unit = _weight_unit(rng)
        if profile.weight_fixed and unit == "[lb_av]":
            unit = "g"  # a weight fixed on a band boundary must not be rounded across it in pounds
        timeline.weights[day] = _weight_read_back(kg, unit, factors)
        timeline.weight_units[day] = unit


def _weight_unit(rng: random.Random) -> str:
    draw = rng.random()
    return "kg" if draw < 0.8 else "g" if draw < 0.9 else "[lb_av]"


def weight_value(kg: float, unit: str, factors: Mapping[str, float]) -> float | int:
    """The number a scale in that unit would record; `factors` (the site mapping's) turn a unit into kilograms."""
    if unit == "g":
        return round(kg * (1 / factors[unit]))
    if unit == "[lb_av]":
        return round(kg / factors[unit], 1)
    return kg


def _weight_read_back(kg: float, unit: str, factors: Mapping[str, float]) -> float:
    """The kilograms a reader gets back from the recorded number: what the clinician's dose must be based on."""
    return round(weight_value(kg, unit, factors) * factors[unit], 6)


def _latest(values: dict[int, Any], day: int) -> tuple[int, Any]:
    """The last value recorded on or before `day` (the timeline records one before day 0)."""
    known = max(d for d in values if d <= day)
    return known, values[known]


def _stop_reason(timeline: Timeline, clinician: Clinician, days_on_therapy: int, count_day: int,
                 count: int) -> str | None:
    """The longest course, or an own count to stop at (not one soon after a transfusion: those are donated)."""
    if clinician.max_days is not None and days_on_therapy >= clinician.max_days:
        return clinician.course_complete
    own = not any(0 <= count_day - t <= clinician.donated_days for t in timeline.transfusions)
    return f"platelets {count}" if clinician.stops_at(count) and own else None


def _treat(start: int, timeline: Timeline, clinician: Clinician, end_day: int) -> None:
    """The protocol as a careful clinician follows it, acting the day after each criterion is met."""
    _, weight = _latest(timeline.weights, start)
    dose = clinician.start_dose(weight)
    assert clinician.step is not None and clinician.max_days is not None, "a stepped course needs a step and a length"
    began, last_change, reviewed = start, start, False
    timeline.decision_days.add(start + clinician.review_days)
    for day in range(start, end_day + 1):
        count_day, count = _latest(timeline.platelets, day)
        stop = _stop_reason(timeline, clinician, day - start, count_day, count)
        if stop:
            timeline.orders.append(Order(began, dose, day, "stopped", f"Protocol stop: {stop}"))
            timeline.decision_days.add(day)
            timeline.events.append(f"stop day +{day + 1} ({stop} on day +{day})")
            return
        reviewing = day - last_change >= clinician.review_days
        if reviewing and clinician.increases_at(count) and dose < clinician.max_dose:
            timeline.orders.append(Order(began, dose, day, "completed", "Dose increased at titration review"))
            timeline.decision_days.add(day)
            dose, began, last_change, reviewed = dose + clinician.step, day + 1, day + 1, False
            timeline.events.append(f"{mg(dose)} mg from day +{day + 1} (platelets {count} on day +{day})")
        elif reviewing and not reviewed:
            timeline.decision_days.add(day)  # a review that keeps the dose
            reviewed = True
    timeline.orders.append(Order(began, dose, None, "active", None))




# --- counts that follow the dose, and the clinician who titrates on dose levels --------------------------------


@dataclass
class _Course:
    """The drug as taken so far: the order in effect, when its dose began, and whether it is held or stopped."""

    dose: float
    began: int  # the start of the order in effect
    changed: int  # the day the dose last changed (the start, if never)
    never_changed: bool = True
    held: bool = False
    stopped: bool = False

    def taken(self) -> float:
        return 0.0 if self.held or self.stopped else self.dose


def _respond(profile: Profile, rng: random.Random, timeline: Timeline, clinician: Clinician, spec: dict[str, Any],
             end_day: int) -> None:
    """Counts of `baseline + per_mg x the dose taken`, the dose smoothed over `lag_days` (the count follows a
    change over days); measured every `every_days` from `first_day` with noise. The clinician acts on the latest
    count the day after a criterion is met, so that on the criterion day the record still shows the situation."""
    course_spec = spec["courses"][profile.response]
    baseline = rng.uniform(*course_spec.get("baseline", spec["baseline"]))
    per_mg = rng.uniform(*course_spec["per_mg"])
    lag = max(rng.uniform(*course_spec["lag_days"]), 1.0)
    every = spec["count_days"]
    count_days = set(range(every["first_day"], end_day + 1, every["every_days"]))
    start = profile.start_day
    course: _Course | None = None
    effective = 0.0
    for day in range(min(count_days), end_day + 1):
        if course is None and start is not None and day >= start:
            dose = clinician.start_dose(profile.weight_kg, profile.start_dose)
            course = _Course(dose, start, start)
            timeline.decision_days.add(start + clinician.review_days)
        taken = course.taken() if course else 0.0
        effective += (taken - effective) / lag
        if day in count_days:
            noise = min(max(rng.gauss(1, 0.06), 0.85), 1.15)
            timeline.platelets[day] = max(1, round((baseline + per_mg * effective) * noise))
        if course is not None and not course.stopped:
            _review(day, timeline, clinician, course)
    if course is not None and not course.stopped:
        timeline.orders.append(Order(course.began, course.dose, None, HELD if course.held else "active", None))


def _review(day: int, timeline: Timeline, clinician: Clinician, course: _Course) -> None:
    """One day's decision on the latest count: restart a held drug, stop for no response, hold, or a level up or
    down; otherwise a review day that keeps the dose."""
    count_day, count = _latest(timeline.platelets, day)
    days_on = day - course.changed
    if course.held:
        if clinician.restart_below is not None and count_day >= course.began and count < clinician.restart_below:
            lower = clinician.level_below(course.dose)
            if lower is not None:
                timeline.orders.append(Order(course.began, course.dose, day, HELD, f"Held: platelets {count}"))
                _new_dose(timeline, course, day, lower, f"restart at {mg(lower)} mg", count)
        return
    action = clinician.action(count)
    if (clinician.no_response_days is not None and clinician.no_response_below is not None
            and course.dose >= clinician.max_dose and days_on >= clinician.no_response_days
            and count < clinician.no_response_below):
        timeline.orders.append(Order(course.began, course.dose, day, "stopped", f"Protocol stop: platelets {count}"))
        timeline.decision_days.add(day)
        timeline.events.append(f"stop day +{day + 1} (no response: platelets {count} on day +{day})")
        course.stopped = True
        return
    if clinician.hold is not None and action == clinician.hold:
        timeline.orders.append(Order(course.began, course.dose, day, "completed", f"Held: platelets {count}"))
        timeline.decision_days.add(day)
        timeline.events.append(f"held from day +{day + 1} (platelets {count} on day +{day})")
        course.began, course.held = day + 1, True
        return
    increase_after = clinician.increase_after_days or clinician.review_days
    level = None
    if action == clinician.increase and days_on >= increase_after:
        level = clinician.level_above(course.dose)
    elif action == clinician.decrease and (course.never_changed or days_on >= (clinician.decrease_wait_days or 0)):
        level = clinician.level_below(course.dose)
    if level is not None:
        timeline.orders.append(Order(course.began, course.dose, day, "completed", "Dose changed at review"))
        _new_dose(timeline, course, day, level, f"{mg(level)} mg", count)
    elif days_on > 0 and days_on % clinician.review_days == 0:
        timeline.decision_days.add(day)  # a review that keeps the dose


def _new_dose(timeline: Timeline, course: _Course, day: int, dose: float, what: str, count: int) -> None:
    timeline.decision_days.add(day)
    timeline.events.append(f"{what} from day +{day + 1} (platelets {count} on day +{day})")
    course.dose, course.began, course.changed = dose, day + 1, day + 1
    course.never_changed, course.held = False, False
