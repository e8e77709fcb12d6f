"""Drawing the person: age, sex, weight, diagnosis and history, and what the scenario fixes."""
from __future__ import annotations

import itertools
import random
from typing import Any

from .clinician import Clinician
from .model import Profile


def draw_profile(scenario: str, rng: random.Random, clinician: Clinician, person: dict[str, Any]) -> Profile:
    """Draw the person from `person` (the population with what the scenario fixes), in a fixed order of draws."""
    age_years = _age_years(person["age_years"], rng)
    weight_fixed = "weight_kg" in person
    weight = (rng.choice(person["weight_kg"]) if weight_fixed
              else _weight_for_age(age_years, rng, person["weight_for_age"]) if "weight_for_age" in person else None)
    earlier = person.get("earlier_procedure_days")
    return Profile(
        scenario=scenario,
        age_days=round(age_years * 365.25),
        sex=rng.choice(person["sex"]),
        weight_kg=weight,
        weight_fixed=weight_fixed,
        diagnosis=rng.choice(person["diagnosis"]),
        procedure_days=(-rng.randint(*earlier), 0) if earlier else (0,),
        history=_history(person["history"], rng),
        performance_score=_fixed_or_drawn(person.get("performance_score"), rng),
        alt=person["liver"],
        recovery=_fixed_or_drawn(person.get("recovery"), rng),
        transfusion_threshold=rng.choice(person["transfusion_below"]) if "transfusion_below" in person else 0,
        late_transfusion=person.get("late_transfusion", False),
        start_day=_start_day(person["start"], rng, clinician) if person["treated"] else None,
        ancestry=_fixed_or_drawn(person.get("ancestry"), rng),
        response=_fixed_or_drawn(person.get("response"), rng),
        start_dose=person.get("start_dose"),
        draft_dose=person.get("draft_dose"),
    )


def _fixed_or_drawn(spec: Any, rng: random.Random) -> Any:
    """A list is drawn from; anything else (a value, or null for never recorded) is fixed, with no draw."""
    return rng.choice(spec) if isinstance(spec, list) else spec


def _age_years(spec: list[Any], rng: random.Random) -> float:
    """A [low, high] pair is drawn uniformly; bands are picked by one draw under their `below`."""
    if all(isinstance(x, (int, float)) for x in spec):
        return rng.uniform(*spec)
    band = rng.random()
    chosen = next((b for b in spec if "below" not in b or band < b["below"]), spec[-1])
    return rng.uniform(*chosen["years"])


def _weight_for_age(age_years: float, rng: random.Random, growth: list[list[float]]) -> float:
    """Median weight for age, a little under (after intensive therapy), with noise."""
    for (a0, w0), (a1, w1) in itertools.pairwise(growth):
        if a0 <= age_years <= a1:
            median = w0 + (w1 - w0) * (age_years - a0) / (a1 - a0)
            break
    else:
        median = growth[-1][1]
    return round(median * 0.95 * min(max(rng.gauss(1, 0.12), 0.75), 1.35), 1)


def _history(spec: dict[str, Any], rng: random.Random) -> tuple[str, ...]:
    """All of a list, one of a list, or maybe one item (drawn with its share)."""
    if "all" in spec:
        return tuple(spec["all"])
    if "one_of" in spec:
        return (rng.choice(spec["one_of"]),)
    return (spec["maybe"],) if rng.random() < spec["share"] else ()


def _start_day(spec: dict[str, Any], rng: random.Random, clinician: Clinician) -> int:
    """On the clinician's start day (drawn with its share), else a later day; without a share, always later."""
    if "on_time" not in spec or clinician.start_day is None:
        return rng.randint(*spec["late_days"])
    return clinician.start_day if rng.random() < spec["on_time"] else rng.randint(*spec["late_days"])
