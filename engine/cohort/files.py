"""A cohort on disk: one Bundle per patient and an index (`cohort.json`), written byte-stable and read back."""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from .model import INDEX_FILE, TEST_DATA_TAG, CohortCase, CohortPatient


def write_cohort(patients: list[CohortPatient], out_dir: Path, about: dict[str, Any] | None = None) -> Path:
    """One Bundle (type collection) per patient and the index; returns the index path. Files are byte-stable.

    `about` (e.g. n, seed, start) goes into the index so that a cohort says how to make it again.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    index = []
    for patient in patients:
        file = f"{patient.name}.json"
        _write_json(out_dir / file, _bundle(patient))
        index.append({"file": file, "scenario": patient.scenario, "description": patient.description,
                      "transplant_date": patient.transplant_date.isoformat(),
                      "evaluation_dates": [d.isoformat() for d in patient.evaluation_dates]})
    path = out_dir / INDEX_FILE
    _write_json(path, {"generator": "cdsrules cohort generate", **(about or {}), "patients": index})
    return path


def _bundle(patient: CohortPatient) -> dict[str, Any]:
    return {"resourceType": "Bundle", "id": patient.bundle_id, "meta": {"tag": [TEST_DATA_TAG]},
            "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in patient.resources]}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_cohort(folder: str | Path) -> list[CohortCase]:
    """Each patient of a written cohort: its resources (the whole timeline), evaluation dates and description.
    Evaluate a date on `fhir.resources_as_of(resources, date)`, not on the whole timeline."""
    folder = Path(folder)
    index = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))
    cases = []
    for entry in index["patients"]:
        bundle = json.loads((folder / entry["file"]).read_text(encoding="utf-8"))
        resources = [e["resource"] for e in bundle.get("entry", []) if isinstance(e.get("resource"), dict)]
        dates = [date.fromisoformat(d) for d in entry["evaluation_dates"]]
        cases.append(CohortCase(resources, dates, entry["description"]))
    return cases


