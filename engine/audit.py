"""What the decision audit keeps of a decision, and the replay of a past decision under the exact rules that made it.

A replay loads the version file the record names, refuses it when its sha256 is not the one recorded at the time,
evaluates the recorded facts (and the recorded reasons for missing ones) on the recorded date and hook, and compares
the decisions. A record that kept why its version decided (engine.choice) is chosen for again from the released
versions and the therapy start dates it recorded, so a replay also shows the choice is the one made at the time.
The records themselves live in the store (store.audit); `cdsrules audit` reads them there.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .choice import VersionChoice, choose_version
from .decide import decide, given_facts
from .errors import RulesetErrors
from .loader import load_ruleset, site_for
from .model import Decision
from .runtime import Engine
from .templates import format_number
from .versions import file_sha256, load_catalog


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
    choice: VersionChoice | None = None  # chosen again; None for a record that kept no choice

    @property
    def same_choice(self) -> bool:
        return self.choice is None or self.choice.ruleset.version == self.record["version"]

    @property
    def identical(self) -> bool:
        return bool(self.decisions == self.record["decisions"]) and self.same_choice


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
                  ruleset.medication.dose_unit if ruleset.medication else "", _choose_again(record, Path(rules_dir)))


def _choose_again(record: dict[str, Any], rules_dir: Path) -> VersionChoice | None:
    """The version the released versions choose now for the recorded date and therapy start dates."""
    kept = record.get("version_choice")
    if not kept:
        return None  # recorded before choices were kept: the version in effect on its date decided
    try:
        versions = load_catalog(rules_dir).rulesets.get(record["ruleset"])
    except RulesetErrors as exc:
        raise ReplayRefused(f"{rules_dir}: the released versions cannot be read to choose again: "
                            f"{exc.errors[0].file}: {exc.errors[0].message}") from None
    if versions is None:
        raise ReplayRefused(f"{rules_dir} holds no ruleset {record['ruleset']} to choose a version from")
    facts = given_facts({**record["facts"], **(kept.get("therapy_start") or {})}, record.get("missing"))
    choice = choose_version(versions, dt.date.fromisoformat(record["evaluation_date"]), facts)
    if choice is None:
        raise ReplayRefused(f"no released version of {record['ruleset']} is in effect on "
                            f"{record['evaluation_date']} in {rules_dir}")
    return choice
