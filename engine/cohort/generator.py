"""Synthetic FHIR R4 cohorts: plausible patients along a timeline from an index day, for impact analysis and benchmarks.

`cdsrules cohort generate` writes one Bundle per patient and an index (`cohort.json`) naming, for each patient, the
dates where protocol decisions change. A cohort is a pure function of (n, seed, start) and the protocol: one
`random.Random` per patient, drawn from one seeded generator, no clock and no global random state, so a seed gives
byte-identical files.

Who is drawn, and their courses, come from the ruleset's scenario file (rules/<id>/scenarios.yaml). The generator
plays the clinician who follows the ruleset version given (start day, start dose by weight, a level up at a review
when the count calls for it, stop at the count or the longest course), acting the day after each criterion is met,
so that on the criterion day the record still shows the situation the rules must react to. A Bundle is a snapshot of
the whole timeline; `engine.fhir.resources_as_of` gives the record as it stood on an evaluation date.
"""
from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

from ..fhir import SiteMapping
from ..model import Ruleset
from .model import DEFAULT_START, CohortPatient, Profile, Timeline, mg
from .people import draw_profile
from .resources import Ids, patient_resources
from .scenario import DEFAULT_RULES, Protocol, Scenarios, resolve
from .timeline import draw_timeline


def generate_cohort(n: int, seed: int, start: date = DEFAULT_START, ruleset: Ruleset | None = None,
                    scenarios: Scenarios | None = None, mapping: SiteMapping | None = None,
                    rules_dir: Path = DEFAULT_RULES) -> list[CohortPatient]:
    """n patients whose day 0 falls on or after `start` (the first patient's on it); deterministic per seed.

    The clinician follows `ruleset` (default: the latest release beside the scenario file) as `scenarios` (default:
    the file beside the ruleset; with neither, the ruleset of `rules_dir` that has one) maps its roles. Units convert as
    `mapping` (default: the site mapping of the ruleset's rules directory) says."""
    if n < 1:
        raise ValueError(f"a cohort needs at least one patient, not {n}")
    protocol = resolve(ruleset, scenarios, mapping, rules_dir)
    rng = random.Random(seed)
    plan = _scenario_plan(n, rng, protocol.scenarios.block)
    seeds = [rng.getrandbits(64) for _ in range(n)]
    return [_patient(i + 1, scenario, random.Random(s), start, protocol)
            for i, (scenario, s) in enumerate(zip(plan, seeds, strict=True))]


def _scenario_plan(n: int, rng: random.Random, scenarios: tuple[str, ...]) -> list[str]:
    """Whole shuffled blocks, so that every scenario appears once n reaches a block, whatever the seed."""
    plan: list[str] = []
    while len(plan) < n:
        block = list(scenarios)
        rng.shuffle(block)
        plan.extend(block)
    return plan[:n]


def _patient(index: int, scenario: str, rng: random.Random, start: date, protocol: Protocol) -> CohortPatient:
    name = f"patient-{index:04d}"
    day0 = start + timedelta(days=0 if index == 1 else rng.randint(0, 120))
    profile = draw_profile(scenario, rng, protocol.clinician, protocol.scenarios.person(scenario))
    timeline = draw_timeline(profile, rng, protocol.clinician, protocol.scenarios, protocol.weight_units.factors)
    ids = Ids(rng)
    resources = patient_resources(name, profile, timeline, day0, rng, ids, protocol)
    scenarios = protocol.scenarios
    days = sorted({d for d in scenarios.evaluation_days + tuple(timeline.decision_days) if 0 <= d <= scenarios.days})
    return CohortPatient(name, scenario, _description(profile, timeline, day0, protocol), day0,
                         [day0 + timedelta(days=d) for d in days], resources, ids.next())


def _description(profile: Profile, timeline: Timeline, day0: date, protocol: Protocol) -> str:
    """One line a reader of an impact report can picture the patient from."""
    years, months = divmod(int(profile.age_days / 30.4375), 12)
    age = f"{years} y {months} mo" if years else f"{months} mo"
    day0_text = protocol.scenarios.data["timeline"]["day0_text"]
    person = f"{age}, {profile.weight_kg:g} kg" if profile.weight_kg is not None else age
    parts = [person, profile.diagnosis, f"{day0_text} {day0.isoformat()}"]
    if profile.ancestry is not None:
        parts.append(profile.ancestry)
    parts += [h.replace("-", " ") for h in profile.history]
    if timeline.orders:
        parts.append(f"{protocol.drug} {mg(timeline.orders[0].dose)} mg from day +{timeline.orders[0].start}")
    parts += timeline.events
    if timeline.transfusions:
        parts.append(f"{len(timeline.transfusions)} platelet transfusion(s)")
    return f"{protocol.scenarios.text(profile.scenario)}: " + "; ".join(parts)


