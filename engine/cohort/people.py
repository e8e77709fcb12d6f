"""Drawing the person: age, sex, weight, diagnosis and history, and what the scenario fixes."""
from __future__ import annotations

import itertools
import random

from .clinician import Clinician
from .model import Profile

BOUNDARY_WEIGHTS = {"weight-band-low": (19.5, 20.0), "weight-band-high": (20.1, 21.0)}  # either side of "> 20 kg"

# Median body weight (kg) by age (years), both sexes, roughly the WHO/CDC curves.
_GROWTH = ((0.5, 7.6), (1, 9.6), (1.5, 10.9), (2, 12.2), (3, 14.3), (4, 16.3), (5, 18.4), (6, 20.7), (7, 23.1),
           (8, 25.8), (9, 28.8), (10, 32.3), (11, 36.5), (12, 41.0), (13, 45.7), (14, 50.5), (15, 54.5),
           (16, 57.5), (17, 60.0), (18, 61.5), (19, 62.5), (20, 63.5))

_NEUROBLASTOMA = ("neuroblastoma", "neuroblastoma", "neuroblastoma (ICD-10-CM)")
_OTHER_DIAGNOSES = ("Hodgkin lymphoma", "medulloblastoma", "Ewing sarcoma")  # also treated with autologous HSCT


def draw_profile(scenario: str, rng: random.Random, clinician: Clinician) -> Profile:
    """Draw the person; the scenario fixes only what it is about, everything else is ordinary variation."""
    age_years = _age_years(scenario, rng)
    weight_fixed = scenario in BOUNDARY_WEIGHTS
    weight = rng.choice(BOUNDARY_WEIGHTS[scenario]) if weight_fixed else _weight_for_age(age_years, rng)
    treated = scenario.startswith("treated-") or scenario in ("hepatotoxicity", "late-transfusion") or weight_fixed
    return Profile(
        scenario=scenario,
        age_days=round(age_years * 365.25),
        sex=rng.choice(("male", "female")),
        weight_kg=weight,
        weight_fixed=weight_fixed,
        diagnosis=rng.choice(_OTHER_DIAGNOSES if scenario == "no-neuroblastoma" else _NEUROBLASTOMA),
        hsct_days=(-rng.randint(42, 70), 0) if scenario == "second-transplant" else (0,),
        history=_history(scenario, rng),
        ecog=None if scenario == "no-ecog" else 3 if scenario == "ecog" else rng.choice((0, 1, 1, 2)),
        alt={"liver": "high", "hepatotoxicity": "rising"}.get(scenario, "normal"),
        recovery=_recovery(scenario, rng),
        transfusion_threshold=rng.choice((0, 10, 15, 20)),
        late_transfusion=scenario == "late-transfusion",
        start_day=_start_day(scenario, rng, clinician) if treated else None,
    )


def _recovery(scenario: str, rng: random.Random) -> str:
    if scenario.startswith("treated-"):
        return scenario.removeprefix("treated-")
    if scenario == "late-transfusion":
        return "fast"
    if scenario == "hepatotoxicity":
        return rng.choice(("slow", "plateau"))  # still on therapy when the liver tests rise
    return rng.choice(("fast", "slow", "plateau"))


def _age_years(scenario: str, rng: random.Random) -> float:
    """Neuroblastoma is a disease of small children; a few infants and teenagers, and 18-19 for the age limit."""
    if scenario == "too-old":
        return rng.uniform(18.05, 19.9)
    if scenario in BOUNDARY_WEIGHTS:
        return rng.uniform(5.0, 7.0)
    band = rng.random()
    if band < 0.15:
        return rng.uniform(0.5, 1.0)
    if band < 0.75:
        return rng.uniform(1.0, 6.0)
    return rng.uniform(6.0, 17.8)  # still under 18 at the end of the timeline


def _weight_for_age(age_years: float, rng: random.Random) -> float:
    """Median weight for age, a little under (after intensive therapy), with noise."""
    for (a0, w0), (a1, w1) in itertools.pairwise(_GROWTH):
        if a0 <= age_years <= a1:
            median = w0 + (w1 - w0) * (age_years - a0) / (a1 - a0)
            break
    else:
        median = _GROWTH[-1][1]
    return round(median * 0.95 * min(max(rng.gauss(1, 0.12), 0.75), 1.35), 1)


def _history(scenario: str, rng: random.Random) -> tuple[str, ...]:
    if scenario == "cardiac":
        return (rng.choice(("heart-failure", "arrhythmia", "myocardial-infarction")),)
    if scenario == "thrombosis":
        return ("active-dvt",)
    return ("old-dvt",) if rng.random() < 0.1 else ()  # a resolved line thrombosis years ago does not exclude


def _start_day(scenario: str, rng: random.Random, clinician: Clinician) -> int:
    """Day +4 for most; a weight-band patient starts later so that day +4 shows the start-dose decision."""
    if scenario in BOUNDARY_WEIGHTS:
        return rng.randint(5, 7)
    return clinician.start_day if rng.random() < 0.65 else rng.randint(5, 7)

