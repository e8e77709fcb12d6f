"""The protocols the bench measures: the rulesets the server serves, their services, and what each one's own data
can send them.

A ruleset is served once it has a release (`engine.versions.Catalog.served_ids`), and each of its hooks is the
service `<ruleset id>-<hook>`. Request bodies come from the ruleset's scenario file (rules/<id>/scenarios.yaml):
the cohort generated from it. A served ruleset without one has nothing to send; the sections that need requests
name it as skipped, so it is measured as soon as its scenario file exists.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from bench.common import RULES

COHORT_PATIENTS, COHORT_SEED = 24, 7  # one block of the generator's scenarios: every one at least once


def service_id(ruleset_id: str, hook: str) -> str:
    """The service a ruleset's hook is answered by, as discovery lists it."""
    return f"{ruleset_id}-{hook}"


def service_path(ruleset_id: str, hook: str) -> str:
    return f"/cds-services/{service_id(ruleset_id, hook)}"


@lru_cache(maxsize=1)
def catalog():
    """Every ruleset under the rules folder, loaded and verified as the server loads them."""
    from engine.versions import load_catalog

    return load_catalog(RULES)


def served() -> tuple[str, ...]:
    """The ruleset ids the server answers for (those with a release), sorted."""
    return tuple(catalog().served_ids())


def scenario_file(ruleset_id: str) -> Path | None:
    from engine.cohort import SCENARIO_FILE

    path = RULES / ruleset_id / SCENARIO_FILE
    return path if path.exists() else None


def with_cohort() -> tuple[str, ...]:
    """The served rulesets that have a scenario file, so a cohort to send."""
    return tuple(i for i in served() if scenario_file(i) is not None)


def skipped() -> dict[str, str]:
    """The served rulesets without request data, each with why."""
    return {i: f"no rules/{i}/scenarios.yaml, so no records to send" for i in served() if scenario_file(i) is None}


@lru_cache(maxsize=8)
def protocol(ruleset_id: str):
    """The ruleset's latest release, the site mapping and its scenario file, as the cohort generator resolves
    them (`engine.cohort.Protocol`)."""
    from engine.cohort import load_scenarios, resolve

    path = scenario_file(ruleset_id)
    if path is None:
        raise LookupError(f"ruleset {ruleset_id} has no scenario file")
    return resolve(scenarios=load_scenarios(path), rules_dir=RULES)


@lru_cache(maxsize=8)
def cohort(ruleset_id: str, patients: int = COHORT_PATIENTS) -> tuple:
    """The ruleset's generated cohort (`engine.cohort.CohortPatient`s); deterministic for the seed."""
    from engine.cohort import generate_cohort

    chosen = protocol(ruleset_id)
    return tuple(generate_cohort(patients, COHORT_SEED, ruleset=chosen.ruleset, scenarios=chosen.scenarios,
                                 mapping=chosen.mapping, rules_dir=RULES))
