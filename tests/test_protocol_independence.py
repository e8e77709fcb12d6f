"""The engine is generic: no code names a protocol, and a protocol is a folder that serves as it is copied.

The terms are read from the rules tree itself (each ruleset's id, drug and thresholds, the site mapping's codes and
name patterns), so a third protocol is covered the day its folder lands. Numbers are looked for with their unit
("7.5 mg", "400 x 10^9/L"): bare integers such as 50 or 200 are also HTTP statuses, pixels and time-outs."""
from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from engine import versions
from engine.loader import SITE_MAPPING, load_ruleset, ruleset_files
from tests.conftest import REPO, RULES_DIR, running_server
from tests.fhir_server import FhirData
from tests.records import prefetch_for

CODE_FOLDERS = ["engine", "webhook", "bench", "store", "cdsrules", "schemas"]
TEXT_SUFFIXES = {".py", ".html", ".js", ".css", ".json", ".ini", ".mako", ".md", ".txt"}
UNIT_WORDS = {"mg/day": r"mg", "mg": r"mg", "10^9/L": r"(x|×)\s*10(\^9|⁹|\*9)", "x ULN": r"(x|×)\s*ULN", "kg": r"kg"}


def rulesets():
    return [load_ruleset(file) for file in ruleset_files([RULES_DIR])]


def site_mapping() -> dict:
    import yaml
    return yaml.safe_load((RULES_DIR / SITE_MAPPING).read_text())


def protocol_names() -> set[str]:
    """Ruleset ids, drug concepts and displays, the name patterns orders are recognised by."""
    names = {folder.name for folder in RULES_DIR.iterdir() if folder.is_dir() and folder.name != "site"}
    for ruleset in rulesets():
        medication = ruleset.metadata["medication"]
        names |= {medication["concept"], medication["display"]}
    for medication in site_mapping()["medications"].values():
        names |= set(medication.get("name_patterns", []))
    return {name.lower() for name in names if name}


def protocol_codes() -> set[str]:
    """Every code the site mapping lists for an observation, condition, procedure, medication or attribute."""
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("codes"), list) and "system" in node:
                found.update(str(code) for code in node["codes"])
            if "code" in node and "system" in node:
                found.add(str(node["code"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    mapping = site_mapping()
    for section in ("patient", "observations", "conditions", "procedures", "medications"):
        walk(mapping[section])
    return {code for code in found if len(code) >= 4}  # "UNK"-like null flavours are not a protocol's


def protocol_quantities() -> set[str]:
    """Every threshold and dose with its unit, as a regular expression ("7\\.5 ?mg")."""
    patterns = set()
    for ruleset in rulesets():
        quantities = [(p.value, p.unit) for p in ruleset.parameters.values()
                      if isinstance(p.value, (int, float)) and not isinstance(p.value, bool)]
        for table in ruleset.tables.values():
            quantities += [(bound, table.input_unit) for band in table.bands for bound in (band.low, band.high)
                           if bound is not None]
            quantities += [(band.output, table.output_unit) for band in table.bands
                           if isinstance(band.output, (int, float)) and not isinstance(band.output, bool)]
        for value, unit in quantities:
            if unit in UNIT_WORDS and value:
                number = re.escape(f"{value:g}")
                patterns.add(rf"(?<![\w.]){number}\s*{UNIT_WORDS[unit]}\b")
    return patterns


def source_files() -> list[Path]:
    """The project's own files under the code folders: tracked or new, never what git ignores (a bench's results)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *CODE_FOLDERS],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return sorted(REPO / name for name in listed if Path(name).suffix in TEXT_SUFFIXES and (REPO / name).is_file())


def test_the_terms_are_read_from_the_rules():
    """The scan below would pass vacuously on empty term lists."""
    names, codes, quantities = protocol_names(), protocol_codes(), protocol_quantities()
    assert len(names) >= 4 and len(codes) >= 20 and len(quantities) >= 10
    assert any(re.search(pattern, "up to 7.5 mg a day") for pattern in quantities)
    assert not any(re.search(pattern, "HTTP 400 after 75 ms") for pattern in quantities)


def test_no_code_names_a_protocol_its_codes_or_its_thresholds():
    names, codes = protocol_names(), protocol_codes()
    words = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(names | codes, key=len, reverse=True)))
                       + r")(?![\w-])", re.IGNORECASE)
    names_inside = re.compile("|".join(map(re.escape, sorted(names, key=len, reverse=True))), re.IGNORECASE)
    quantities = re.compile("|".join(protocol_quantities()), re.IGNORECASE)
    found = []
    for path in source_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if match := words.search(line) or names_inside.search(line) or quantities.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {match.group(0)!r} in {line.strip()[:100]}")
    assert not found, "protocol terms in code:\n" + "\n".join(found)


# --- a protocol is a folder ----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("protocol", sorted(f.name for f in RULES_DIR.iterdir() if (f / "releases.yaml").exists()))
def test_a_protocol_folder_copied_into_a_fresh_rules_tree_is_served_as_it_is(protocol, tmp_path):
    fresh = tmp_path / "rules"
    shutil.copytree(RULES_DIR / "site", fresh / "site")
    shutil.copytree(RULES_DIR / protocol, fresh / protocol)
    today = dt.date.today()
    in_effect = versions.load_catalog(fresh).select(protocol, today)
    assert in_effect is not None, f"{protocol} has no release in effect today"
    with running_server(tmp_path, "--rules", str(fresh), "--no-auth", "--workers", "1") as server:
        services = requests.get(server.base_url + "/cds-services", timeout=10).json()["services"]
        assert {s["id"] for s in services} == {f"{protocol}-{hook}" for hook in in_effect.metadata["hooks"]}
        ready = requests.get(server.base_url + "/readyz", timeout=10).json()
        assert ready["rulesets"] == [f"{protocol}@{in_effect.version}"]
        for service in services:  # a patient with nothing the protocol is about: each service answers, quietly
            body = {"hook": service["hook"], "hookInstance": f"copy-{service['hook']}",
                    "context": _context(service["hook"], today),
                    "prefetch": prefetch_for(service["prefetch"], FhirData([PATIENT]), "p-other")}
            answer = requests.post(f"{server.base_url}/cds-services/{service['id']}", json=body, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"cards": []}


PATIENT = {"resourceType": "Patient", "id": "p-other", "birthDate": "1980-05-01", "gender": "female"}


def _context(hook: str, today: dt.date) -> dict:
    context = {"userId": "Practitioner/dr1", "patientId": PATIENT["id"]}
    if hook in ("order-select", "order-sign"):  # a draft for another medicine only
        draft = {"resourceType": "MedicationRequest", "id": "other-1", "status": "draft", "intent": "order",
                 "medicationCodeableConcept": {"text": "Paracetamol 500 mg tablets"},
                 "subject": {"reference": "Patient/p-other"}, "authoredOn": today.isoformat(),
                 "dosageInstruction": [{"text": "500 mg orally four times daily"}]}
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}
        if hook == "order-select":
            context["selections"] = ["MedicationRequest/other-1"]
    return context
