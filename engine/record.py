"""A patient's record as a decision may use it: each resource once, and only the patient's own.

The same resource (type and id) can arrive in two prefetch keys, twice in one Bundle, or in prefetch and again from
the FHIR server; counted twice, one transplant would become two. And a prefetch filled for the wrong patient, or a
Bundle that mixes patients, must never decide for this one. So before any fact is read, `own_record` keeps one copy
of each resource and drops every resource whose subject is not the patient in context.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# A literal reference to a Patient, relative or absolute, with or without a version: Patient/123, .../Patient/123,
# Patient/123/_history/2 (the id part follows FHIR R4's id pattern).
_PATIENT_REFERENCE = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")
_SUBJECT_ELEMENTS = ("subject", "patient")  # where R4 resources name their patient


class OtherPatientError(ValueError):
    """The Patient resource itself is another patient's: nothing in the record can be trusted to be this one's."""


@dataclass
class Record:
    resources: list[dict[str, Any]]
    other_patients: list[str] = field(default_factory=list)  # "Type/id" dropped: about someone else, or no one
    conflicting: list[str] = field(default_factory=list)  # "Type/id" dropped: copies differ and none is newer


def own_record(resources: Iterable[dict[str, Any]], patient_id: str) -> Record:
    """The patient's own resources, each once; raises OtherPatientError if the Patient resource is another's."""
    record = Record([])
    own: list[dict[str, Any]] = []
    patients: dict[str, str | None] = {}  # reference -> patient id: every resource of a record names the same one
    for resource in resources:
        whose = _patient_of(resource, patients)
        if whose == patient_id:
            own.append(resource)
        elif resource.get("resourceType") == "Patient":
            raise OtherPatientError(f"the Patient resource sent is Patient/{resource.get('id')}, "
                                    f"not the patient in context (Patient/{patient_id})")
        else:
            record.other_patients.append(_ref(resource))
    record.resources, record.conflicting = _one_copy_each(own)
    return record


def _patient_of(resource: dict[str, Any], patients: dict[str, str | None]) -> str | None:
    """The id of the patient a resource is about, if it names one by a literal reference; `patients` keeps the
    references already read, so the pattern is searched once per distinct reference rather than once per resource."""
    if resource.get("resourceType") == "Patient":
        return _text(resource.get("id"))
    for element in _SUBJECT_ELEMENTS:
        value = resource.get(element)
        reference = _text(value.get("reference")) if isinstance(value, dict) else None
        if reference:
            if reference not in patients:
                match = _PATIENT_REFERENCE.search(reference)
                patients[reference] = match.group(1) if match else None
            return patients[reference]
    return None


def _one_copy_each(resources: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """One copy per type and id, in first-seen order: the newer by meta.lastUpdated or versionId wins; copies that
    differ with nothing to tell which is newer are both dropped (a guess between them would be silent)."""
    chosen: dict[tuple[Any, Any], dict[str, Any] | None] = {}  # by (resourceType, id) as the JSON has them
    conflicting: list[str] = []
    for resource in resources:
        key = (resource.get("resourceType"), resource.get("id"))
        if not isinstance(key[1], str):
            chosen[(key[0], f"#{len(chosen)}")] = resource  # no id: nothing to be a copy of
            continue
        if key not in chosen:
            chosen[key] = resource
            continue
        kept = chosen[key]
        if kept is None or kept == resource:
            continue
        newer = _newer(kept, resource)
        if newer is None:
            chosen[key] = None
            conflicting.append(_ref(resource))
        else:
            chosen[key] = newer
    return [r for r in chosen.values() if r is not None], conflicting


def _newer(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    ta, tb = _last_updated(a), _last_updated(b)
    if ta is not None and tb is not None and ta != tb:
        return a if ta > tb else b
    va, vb = _version_id(a), _version_id(b)
    if va is not None and vb is not None and va != vb:
        return a if va > vb else b
    return None


def _last_updated(resource: dict[str, Any]) -> datetime | None:
    """meta.lastUpdated as an instant (FHIR requires its time zone); anything unreadable tells nothing."""
    text = _text(_meta(resource).get("lastUpdated"))
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None
    return instant if instant is not None and instant.tzinfo is not None else None


def _version_id(resource: dict[str, Any]) -> int | None:
    version = _text(_meta(resource).get("versionId"))
    return int(version) if version is not None and version.isdigit() else None


def _meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = resource.get("meta")
    return meta if isinstance(meta, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _ref(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType', '?')}/{resource.get('id', '?')}"
