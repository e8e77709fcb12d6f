"""Every FHIR fixture shipped with the rules and the examples is valid FHIR (R4B models: R4 plus additions)."""
import json

import pytest
from fhir.resources.R4B import get_fhir_model_class

from tests.helpers import ROOT

BUNDLES = sorted((ROOT / "rules").glob("*/tests/*.json"))
REQUESTS = sorted((ROOT / "examples").glob("*-request.json"))


def resources_in(node):
    if isinstance(node, dict):
        if isinstance(node.get("resourceType"), str):
            yield node
            for entry in node.get("entry", []) if node["resourceType"] == "Bundle" else []:
                yield from resources_in(entry.get("resource"))
            return
        for value in node.values():
            yield from resources_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from resources_in(value)


@pytest.mark.parametrize("path", BUNDLES + REQUESTS, ids=lambda p: p.name)
def test_fixture_resources_validate(path):
    found = list(resources_in(json.loads(path.read_text())))
    assert found
    for resource in found:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
