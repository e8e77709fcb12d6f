"""A ruleset's scenario file (rules/<id>/scenarios.yaml): loaded, schema-checked and tied to a ruleset version.

Errors are located at file, line and path like a ruleset's. The clinician's roles name ruleset parameters and tables,
so the numbers come from whichever version is given.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .. import versions
from ..document import Document, read_document, schema_errors
from ..errors import RulesetError, RulesetErrors
from ..fhir import SiteMapping, load_site_mapping
from ..loader import find_site_mapping, load_ruleset
from ..model import Medication, Ruleset
from ..units import UnitTable
from .clinician import Clinician, table_rows

SCHEMA = "scenarios.schema.json"
SCENARIO_FILE = "scenarios.yaml"
_NOT_PERSON = frozenset({"count", "text", "eligible"})  # about the scenario, not the person
DEFAULT_RULES = Path("rules")  # as every command has it: the rules folder in the working directory


@dataclass(frozen=True)
class Scenarios:
    """A validated scenario file; `doc` keeps where each value was written, for errors found later."""

    doc: Document

    @property
    def data(self) -> dict[str, Any]:
        data = self.doc.data
        assert isinstance(data, dict)  # the schema requires a mapping
        return data

    @property
    def folder(self) -> Path:
        return Path(self.doc.file).parent

    @property
    def block(self) -> tuple[str, ...]:
        """One block of scenario names, each as many times as its count, in the file's order."""
        return tuple(name for name, spec in self.data["scenarios"].items() for _ in range(spec["count"]))

    @property
    def ineligible(self) -> frozenset[str]:
        return frozenset(name for name, spec in self.data["scenarios"].items() if not spec.get("eligible", True))

    def person(self, scenario: str) -> dict[str, Any]:
        """What a patient of `scenario` is drawn from: the population, with what the scenario fixes."""
        fixed = {k: v for k, v in self.data["scenarios"][scenario].items() if k not in _NOT_PERSON}
        return {**self.data["population"], **fixed}

    def text(self, scenario: str) -> str:
        return str(self.data["scenarios"][scenario]["text"])

    @property
    def days(self) -> int:
        """The timeline's last day after day 0."""
        return int(self.data["timeline"]["days"])

    @property
    def time_zone(self) -> str:
        return str(self.data["timeline"]["time_zone"])

    @property
    def evaluation_days(self) -> tuple[int, ...]:
        return tuple(self.data["timeline"]["evaluation_days"])

    def clinician(self, ruleset: Ruleset) -> Clinician:
        """The roles resolved in `ruleset`; a role naming what the ruleset lacks is reported at its line."""
        roles = self.data["clinician"]
        errors = [self.doc.error(("ruleset",), f"this file is for ruleset '{self.data['ruleset']}', not {ruleset.ref}")
                  ] if self.data["ruleset"] != ruleset.id else []
        errors += [self.doc.error(("clinician", role), f"ruleset {ruleset.ref} has no parameter '{spec['param']}'")
                  for role, spec in roles.items() if "param" in spec and spec["param"] not in ruleset.parameters]
        errors += [self.doc.error(("clinician", role), f"ruleset {ruleset.ref} has no table '{spec['table']}'")
                   for role, spec in roles.items() if "table" in spec and spec["table"] not in ruleset.tables]
        if errors:
            raise RulesetErrors(errors)
        number = {role: ruleset.param(spec["param"]) for role, spec in roles.items() if "param" in spec}
        review, start = roles["review_action"], roles["start_dose"]
        levels = {role: table_rows(ruleset, ruleset.tables[roles[role]["table"]])
                  for role in ("level_above", "level_below") if role in roles}
        return Clinician(
            start_day=number.get("start_day"), review_days=number["review_interval_days"],
            max_days=number.get("max_therapy_days"), step=number.get("dose_step"), max_dose=number["max_dose"],
            donated_days=number.get("donated_count_days", 0),
            start_doses=tuple((band, float(dose)) for band, dose in
                              table_rows(ruleset, ruleset.tables[start["table"]])) if "table" in start else (),
            actions=table_rows(ruleset, ruleset.tables[review["table"]]),
            increase=review["increase"], stop=review.get("stop"),
            course_complete=self.data["timeline"].get("course_complete_text"),
            decrease=review.get("decrease"), maintain=review.get("maintain"), hold=review.get("hold"),
            start_param=start.get("param"),
            params={name: float(p.value) for name, p in ruleset.parameters.items()
                    if isinstance(p.value, (int, float)) and not isinstance(p.value, bool)},
            levels_up=levels.get("level_above", ()), levels_down=levels.get("level_below", ()),
            increase_after_days=number.get("increase_after_days"), decrease_wait_days=number.get("decrease_wait_days"),
            restart_below=number.get("restart_below"), no_response_days=number.get("no_response_days"),
            no_response_below=number.get("no_response_below"))


def load_scenarios(path: str | Path, text: str | None = None) -> Scenarios:
    """Read and schema-check a scenario file; raises RulesetErrors listing every problem with its line."""
    doc = read_document(path, text)
    errors = schema_errors(doc, SCHEMA) or _unknown_names(doc)
    if errors:
        raise RulesetErrors(errors)
    return Scenarios(doc)


def _unknown_names(doc: Document) -> list[RulesetError]:
    """A recovery course, diagnosis or history item drawn but not described is reported where it is named."""
    data = doc.data
    assert isinstance(data, dict)
    known = {"recovery": set(data.get("recovery", {}).get("courses", {})),
             "response": set(data.get("response", {}).get("courses", {})),
             "ancestry": set(data["codings"].get("ancestry", {}).get("groups", {})),
             "diagnosis": set(data["codings"]["diagnoses"]), "history": set(data["codings"]["history"])}
    people: list[tuple[tuple[str, ...], dict[str, Any]]] = [(("population",), data["population"])]
    people += [(("scenarios", name), spec) for name, spec in data["scenarios"].items()]
    errors = []
    for where, person in people:
        for key, names in known.items():
            for path, name in _names(person.get(key)):
                if name not in names:
                    errors.append(doc.error((*where, key, *path), f"no {key} '{name}' is described in this file"))
    return sorted(errors, key=lambda e: (e.line, e.column))


def _names(value: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """The names a person's value draws from, each with its path under the value."""
    if isinstance(value, str):
        return [((), value)]
    if isinstance(value, list):
        return [((i,), v) for i, v in enumerate(value) if isinstance(v, str)]
    if isinstance(value, dict):
        return [((key, *path), name) for key, item in value.items() for path, name in _names(item)]
    return []


def latest_released(folder: Path) -> Ruleset:
    """The newest released version in a ruleset folder: what a cohort is drawn for unless told otherwise."""
    releases = versions.read_manifest(folder)
    if not releases:
        raise OSError(f"no released version in {folder}")
    return load_ruleset(folder / f"{max(releases, key=versions.version_key)}.yaml")


@lru_cache(maxsize=4)
def shipped(rules_dir: Path = DEFAULT_RULES) -> tuple[Ruleset, Scenarios]:
    """The ruleset of `rules_dir` that has a scenario file, at its latest release, with that file; of several, the
    one in service longest (the earliest first release; a tie goes to the folder name)."""
    files = sorted(rules_dir.resolve().glob(f"*/{SCENARIO_FILE}"))
    if not files:
        raise OSError(f"no {SCENARIO_FILE} under {rules_dir}")
    return for_folder(min(files, key=_first_in_service).parent)


def for_folder(folder: Path) -> tuple[Ruleset, Scenarios]:
    """A ruleset folder's latest release with its scenario file."""
    return latest_released(folder), load_scenarios(folder / SCENARIO_FILE)


def _first_in_service(file: Path) -> tuple[str, str]:
    releases = versions.read_manifest(file.parent)
    first = min((str(r.effective_from) for r in releases.values()), default="9999-12-31")
    return first, file.parent.name


@dataclass(frozen=True)
class Protocol:
    """A ruleset version, its site mapping and the scenario file a cohort is drawn with, and the clinician they
    make."""

    ruleset: Ruleset
    mapping: SiteMapping
    scenarios: Scenarios
    clinician: Clinician

    @property
    def weight_units(self) -> UnitTable:
        return self._units("weight")

    @property
    def bilirubin_units(self) -> UnitTable:
        return self._units("bilirubin")

    def _units(self, concept: str) -> UnitTable:
        """The site mapping's units of an observation concept: what a recorded value converts with."""
        units = self.mapping.observations[concept].units
        if units is None:
            raise ValueError(f"the site mapping {self.mapping.file} gives {concept} no units")
        return units

    @property
    def medication(self) -> Medication:
        """The drug the clinician orders, as the ruleset describes it."""
        medication = self.ruleset.medication
        if medication is None:
            raise ValueError(f"ruleset {self.ruleset.ref} names no medication for the clinician to order")
        return medication

    @property
    def drug(self) -> str:
        """The drug as descriptions name it: the site mapping's medication concept."""
        return self.medication.concept


def resolve(ruleset: Ruleset | None = None, scenarios: Scenarios | None = None,
            mapping: SiteMapping | None = None, rules_dir: Path = DEFAULT_RULES) -> Protocol:
    """Fill in what is not given: the scenario file beside the ruleset, the latest release beside the file, the site
    mapping of the rules directory the ruleset is in."""
    if ruleset is None and scenarios is None:
        ruleset, scenarios = shipped(rules_dir)
    elif scenarios is None:
        assert ruleset is not None
        scenarios = load_scenarios(Path(ruleset.source_file).parent / SCENARIO_FILE)
    elif ruleset is None:
        ruleset = latest_released(scenarios.folder)
    if mapping is None:
        mapping = _site_mapping(find_site_mapping(Path(ruleset.source_file).resolve().parent))
    return Protocol(ruleset, mapping, scenarios, scenarios.clinician(ruleset))


@lru_cache(maxsize=8)
def _site_mapping(path: Path) -> SiteMapping:
    return load_site_mapping(path)
