"""The cohort's types: what a generated patient is, what the generator draws, and the shared constants."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

Json = dict[str, Any]  # a FHIR resource or element as parsed JSON

TEST_DATA_TAG = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST",
                 "display": "test health data"}
PATIENT_ID_SYSTEM = "https://cdsrules.example.org/fhir/sid/synthetic-patient"

DEFAULT_START = date(2026, 1, 5)
INDEX_FILE = "cohort.json"


# --- the public types -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CohortPatient:
    """One synthetic patient: the FHIR resources of the whole timeline and the dates worth evaluating."""

    name: str  # the file stem, also the Patient identifier: patient-0001
    scenario: str
    description: str
    transplant_date: date
    evaluation_dates: list[date]
    resources: list[dict[str, Any]]
    bundle_id: str


class CohortCase(NamedTuple):
    """A patient as read back from disk: unpacks as (resources, evaluation_dates, description)."""

    resources: list[dict[str, Any]]
    evaluation_dates: list[date]
    description: str

    @property
    def name(self) -> str:
        """The Patient's synthetic identifier (the file stem), for reports."""
        patient = next((r for r in self.resources if r.get("resourceType") == "Patient"), {})
        ids = [i.get("value") for i in patient.get("identifier", []) if i.get("system") == PATIENT_ID_SYSTEM]
        return ids[0] if ids else str(patient.get("id", "?"))



@dataclass(frozen=True)
class Profile:
    """Who the patient is and what the scenario asks of the timeline; every random draw about the person is here."""

    scenario: str
    age_days: int  # at day 0
    sex: str
    weight_kg: float | None  # None: the scenario file draws no weight
    weight_fixed: bool  # boundary patients keep one exact weight so the dose band is the one intended
    diagnosis: str  # a key of _DIAGNOSES
    procedure_days: tuple[int, ...]  # the index procedures (day 0 and any earlier), relative to day 0
    history: tuple[str, ...]  # heart-failure | arrhythmia | myocardial-infarction | active-dvt | old-dvt
    performance_score: int | None  # None: never recorded
    alt: str  # normal | high | rising
    recovery: str | None  # a course of the file's recovery section; None: the course follows the dose
    transfusion_threshold: int  # transfuse below this count in the first two weeks; 0: never
    late_transfusion: bool
    start_day: int | None  # None: never treated
    ancestry: str | None = None  # a group of codings.ancestry written on the Patient; None: not recorded
    response: str | None = None  # a course of the file's response section (counts that follow the dose)
    start_dose: str | None = None  # the parameter of this person's start dose; None: the clinician's own
    draft_dose: float | None = None  # the first order as drafted, when not the start dose


@dataclass(frozen=True)
class Order:
    start: int
    dose: float
    end: int | None  # last day taken; None while the order is still active at the end of the timeline
    status: str  # active | completed (replaced by a new dose) | stopped (protocol stop) | on-hold
    reason: str | None


@dataclass
class Timeline:
    """What happened: measured platelet counts (incl. transfused platelets), transfusions, weights, orders."""

    platelets: dict[int, int] = field(default_factory=dict)
    transfusions: list[int] = field(default_factory=list)
    weights: dict[int, float] = field(default_factory=dict)  # day -> kg as recorded and read back
    weight_units: dict[int, str] = field(default_factory=dict)
    orders: list[Order] = field(default_factory=list)
    decision_days: set[int] = field(default_factory=set)
    events: list[str] = field(default_factory=list)



def mg(dose: float) -> str:
    return f"{dose:g}"

