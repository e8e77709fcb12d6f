"""CDS services generated from ruleset metadata: one per (ruleset, hook) the ruleset declares.

A second protocol is a second ruleset (and site mapping entries), never new code here. The service id is
`<ruleset id>-<hook>`; title and description come from the ruleset's `services` metadata when given; prefetch
templates come from what the site mapping needs. Only released rulesets have services (drafts are never served);
which version answers a call is chosen by the call's date (engine.versions).
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.evidence import source_attributes
from engine.model import Ruleset
from engine.versions import Catalog
from webhook.prefetch import resource_type

EVIDENCE_EXTENSION = "cdsrules.evidence"  # discovery: the source attributes of the version in effect

_HOOK_MOMENTS = {
    "patient-view": "when a patient's chart is opened",
    "order-select": "when an order is selected",
    "order-sign": "before orders are signed",
    "medication-prescribe": "while a medication is prescribed (deprecated hook)",
}


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    ruleset: Ruleset  # the newest release, for discovery; calls use the version in effect on their date
    title: str
    description: str
    prefetch: dict[str, str]
    usage_requirements: str

    def discovery(self, in_effect: Ruleset | None = None) -> dict:
        """This service's entry in the discovery response; with the version in effect, its source attributes
        (HTI-1) under a namespaced extension, as cards carry theirs under `cdsrules.provenance`."""
        entry = {"hook": self.hook, "id": self.id, "title": self.title, "description": self.description,
                 "prefetch": dict(self.prefetch), "usageRequirements": self.usage_requirements,
                 "extension": {EVIDENCE_EXTENSION: source_attributes(in_effect)} if in_effect else None}
        return {k: v for k, v in entry.items() if v}


def build_services(catalog: Catalog, templates: dict[str, str]) -> dict[str, Service]:
    """Services of every released ruleset; discovery shows the newest release, and the ids never change."""
    services = {}
    for ruleset_id in catalog.served_ids():
        ruleset = catalog.latest_released(ruleset_id)
        for hook in ruleset.hooks:
            service = _service(ruleset, hook, templates)
            services[service.id] = service
    return services


def released_rulesets(catalog: Catalog) -> list[Ruleset]:
    """Every released version (drafts are never served), for compiling once at start."""
    return [versions.rulesets[v] for versions in catalog.rulesets.values() for v in versions.releases]


def _service(ruleset: Ruleset, hook: str, templates: dict[str, str]) -> Service:
    configured = (ruleset.metadata.get("services") or {}).get(hook) or {}
    drug = ruleset.medication.display if ruleset.medication else ruleset.id
    moment = _HOOK_MOMENTS.get(hook, f"on the {hook} hook")
    return Service(
        id=f"{ruleset.id}-{hook}",
        hook=hook,
        ruleset=ruleset,
        title=configured.get("title") or f"{ruleset.title} ({hook})",
        description=configured.get("description")
        or f"Checks {drug} therapy against {ruleset.title} (ruleset {ruleset.version}) {moment}. "
        + ruleset.description.strip(),
        prefetch=dict(templates),
        usage_requirements=usage_requirements(templates),
    )


def usage_requirements(templates: dict[str, str]) -> str:
    types = sorted({resource_type(t) for t in templates.values()})
    if not types:
        return ""
    return (f"Reads {', '.join(types)} of the patient in context. Send them as prefetch, or send fhirServer and "
            "fhirAuthorization with read access to them; without either the service answers 412.")
