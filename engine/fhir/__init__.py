"""FHIR R4 resources -> ruleset facts, driven entirely by a site mapping (rules/site/*.yaml).

The names callers use, whichever module of the package holds them.
"""
from __future__ import annotations

from .checks import RESERVED_PREFETCH_KEYS
from .extract import PATIENT_TOKEN, draft_orders_mention, extract_facts, prefetch_templates, resources_from
from .load import SCHEMA, MappingError, load_site_mapping
from .mapping import (
                      AgeBand,
                      CodedConcept,
                      CodeIndex,
                      Extraction,
                      MedicationConcept,
                      ObservationConcept,
                      Score,
                      SiteMapping,
                      UlnSpec,
)
from .record import resources_as_of
from .values import When, is_fhir_id

__all__ = ["PATIENT_TOKEN", "RESERVED_PREFETCH_KEYS", "SCHEMA", "AgeBand", "CodeIndex", "CodedConcept", "Extraction",
           "MappingError", "MedicationConcept", "ObservationConcept", "Score", "SiteMapping", "UlnSpec", "When",
           "draft_orders_mention", "extract_facts", "is_fhir_id", "load_site_mapping", "prefetch_templates",
           "resources_as_of", "resources_from"]
