"""Synthetic FHIR R4 cohorts for impact analysis, the workbench and benchmarks.

The names callers use, whichever module of the package holds them.
"""
from __future__ import annotations

from .clinician import Clinician
from .command import add_cohort_command, cmd_cohort_generate
from .files import read_cohort, write_cohort
from .generator import generate_cohort
from .model import DEFAULT_START, INDEX_FILE, PATIENT_ID_SYSTEM, CohortCase, CohortPatient
from .scenario import SCENARIO_FILE, Protocol, Scenarios, load_scenarios, resolve

__all__ = ["DEFAULT_START", "INDEX_FILE", "PATIENT_ID_SYSTEM", "SCENARIO_FILE", "Clinician", "CohortCase",
           "CohortPatient", "Protocol", "Scenarios", "add_cohort_command", "cmd_cohort_generate", "generate_cohort",
           "load_scenarios", "read_cohort", "resolve", "write_cohort"]
