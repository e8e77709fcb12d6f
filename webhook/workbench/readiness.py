"""What governance approves besides the text, read off a proposal for its review page: what the proposed text's tests
cover against the ruleset's threshold (engine/coverage.py, the same measure `cdsrules release` refuses on), and how
many cohort patients each choice of whom it applies to would affect (engine/diff.py's choice counts, as
`cdsrules diff --cohort` prints them).

An approval of a text whose tests cover less than the threshold is refused here, before it is recorded: the release
it would complete is refused for it anyway, and an approval that can never lead to a release only misleads.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from engine.coverage import Coverage, Threshold, coverage_of, shortfalls
from engine.diff import Case, ChoiceImpact, Impact, choice_impact
from engine.model import Ruleset
from engine.testing import CaseResult
from engine.versions import APPLIES_TO_ALL, APPLIES_TO_NEW_THERAPIES
from webhook.workbench.rulesets import ruleset_threshold
from webhook.workbench.views import workbench

APPLIES_TO_CHOICES = {APPLIES_TO_ALL: "all patients", APPLIES_TO_NEW_THERAPIES: "new therapies only"}


@dataclass
class ProposedCoverage:
    """The proposed text's coverage against its ruleset's threshold; `below` names what is short, one sentence a
    kind (empty when met). No threshold: the manifest is invalid, and the release would be refused for that."""

    coverage: Coverage | None
    threshold: Threshold | None
    below: list[str] = field(default_factory=list)

    @property
    def meets_threshold(self) -> bool:
        return self.coverage is not None and self.threshold is not None and not self.below

    @property
    def refusal(self) -> str:
        """Why an approval is refused, or "" when the coverage allows one."""
        if self.coverage is None:
            return "the proposed text does not load or its tests did not run, so what they cover is not known"
        if self.threshold is None:
            return "the ruleset's manifest is invalid, so its coverage threshold cannot be read"
        if self.below:
            return ("the proposed text's tests cover less than the ruleset's threshold (`coverage` in "
                    "releases.yaml), so it could not be released: " + "; ".join(self.below)
                    + ". Add the missing cases to its tests file and propose it again")
        return ""


def proposed_coverage(ruleset_id: str, ruleset: Ruleset | None, results: list[CaseResult]) -> ProposedCoverage:
    threshold = ruleset_threshold(workbench().rules_dir / ruleset_id)
    if ruleset is None or not results:
        return ProposedCoverage(None, threshold)
    coverage = coverage_of(ruleset, results)
    return ProposedCoverage(coverage, threshold, shortfalls(coverage, threshold) if threshold else [])


def whom_it_changes(new: Ruleset, cohort: list[Case], impact: Impact, effective_from: dt.date) -> ChoiceImpact | None:
    """The cohort patients whose decisions change under each choice of whom `new` applies to, from its proposed
    effective date; None without a cohort."""
    return choice_impact(new, cohort, impact, effective_from) if cohort else None
