"""What the decision audit keeps of a decision, and the replay of a past decision under the exact rules that made it.

A replay loads the version file the record names, refuses it when its sha256 is not the one recorded at the time,
evaluates the recorded facts (and the recorded reasons for missing ones) on the recorded date and hook, and compares
the decisions. The records themselves live in the store (store.audit); `cdsrules audit` reads them there.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .decide import decide, given_facts
from .loader import load_ruleset, site_for
from .model import Decision
from .runtime import Engine
from .templates import format_number
from .versions import file_sha256


def decision_summary(decision: Decision) -> dict[str, Any]:
    """What the audit keeps of a decision, and what a replay compares."""
    suggestion = decision.suggestion
    return {
        "rule_id": decision.rule_id,
        "topic": decision.topic,
        "indicator": decision.indicator,
        "summary": decision.summary,
        "action": suggestion.action if suggestion else None,
        "daily_dose": suggestion.daily_dose if suggestion else None,
    }


def describe(decision: dict[str, Any], dose_unit: str) -> str:
    """One decision summary as a line: topic (indicator), the suggestion and dose (in `dose_unit`), and the rule."""
    action = f" {decision['action']}" if decision.get("action") else ""
    dose = f" {format_number(decision['daily_dose'])} {dose_unit}" if decision.get("daily_dose") is not None else ""
    return f"{decision['topic']} ({decision['indicator']}){action}{dose} [rule {decision['rule_id']}]"


class ReplayRefused(Exception):
    """The record cannot be replayed faithfully (the version file is gone or changed, or nothing was evaluated)."""


@dataclass
class Replay:
    record: dict[str, Any]
    decisions: list[dict[str, Any]]  # as replayed now
    fired_rules: list[str]
    dose_unit: str  # of the ruleset's medication, in which both the recorded and the replayed doses are

    @property
    def identical(self) -> bool:
        return bool(self.decisions == self.record["decisions"])


def replay(record: dict[str, Any], rules_dir: str | Path, engine: Engine | None = None) -> Replay:
    """Evaluate a stored record again under the version file it names; raises ReplayRefused."""
    if record.get("facts") is None:
        raise ReplayRefused(f"decision {record['decision_id']}: nothing was evaluated for this call "
                            f"({record['ruleset']}: {record['version']}), so there is nothing to replay")
    file = Path(rules_dir) / record["ruleset"] / f"{record['version']}.yaml"
    if not file.is_file():
        raise ReplayRefused(f"{file}: the version file of {record['ruleset']}@{record['version']} is not there")
    recorded, actual = record.get("manifest_sha256"), file_sha256(file)
    if recorded != actual:
        raise ReplayRefused(f"{file} is not the file that decided: its sha256 is {actual}, the audit recorded "
                            f"{recorded or '(none)'}")
    ruleset = load_ruleset(file, site=site_for(file.resolve().parent))
    facts = given_facts(record["facts"], record.get("missing"))
    evaluation = decide(engine or Engine(), ruleset, facts, record["evaluation_date"],
                        record.get("evaluated_hook") or record.get("hook"))
    return Replay(record, [decision_summary(d) for d in evaluation.decisions], evaluation.fired_rules,
                  ruleset.medication.dose_unit if ruleset.medication else "")
