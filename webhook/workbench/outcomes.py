"""Alert outcomes: every card the service showed (the audit) and what became of it (CDS Hooks feedback), per topic,
per deciding rule and over time, from `Store.outcome_summary`. A topic or rule overridden most of the time is
noise to the prescriber: this is where a pharmacist sees it."""
from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict

from flask import render_template, request

from webhook.workbench import svg
from webhook.workbench.views import parse_date, workbench

SERIES = {"accepted": "accepted", "overridden": "overridden", "no_feedback": "no feedback"}


def counts(entry: dict) -> dict[str, int]:
    """A summary entry's outcomes under the chart's series names."""
    return {name: int(entry.get(key, 0)) for key, name in SERIES.items()}


def override_rate(entry: dict) -> float:
    return entry.get("overridden", 0) / entry["shown"] if entry.get("shown") else 0.0


def by_rate(entries: list[dict]) -> list[dict]:
    """Noisiest first: highest override rate, then most shown."""
    return sorted(entries, key=lambda e: (-override_rate(e), -e.get("shown", 0)))


def per_day(entries: list[dict]) -> list[tuple[dt.date, dict[str, int]]]:
    """The summary's (day, topic) rows added up per day."""
    days: dict[str, Counter] = defaultdict(Counter)
    for entry in entries:
        days[entry["day"]].update(counts(entry))
    return [(dt.date.fromisoformat(day), dict(found)) for day, found in sorted(days.items())]


def charts(summary: dict) -> dict:
    topics = by_rate(summary["by_topic"])
    rules = by_rate(summary["by_rule"])
    return {
        "topics": svg.outcome_bars([(e["topic"], counts(e)) for e in topics], "Cards per topic"),
        "rules": svg.outcome_bars([(f"{e['rule_id'] or '(rule not recorded)'}", counts(e)) for e in rules],
                                  "Cards per deciding rule"),
        "days": svg.outcome_timeline(per_day(summary["by_day"]), "Cards per day"),
    }


def outcomes() -> str:
    ruleset = request.args.get("ruleset", "")
    since = parse_date(request.args.get("since"), None)
    until = parse_date(request.args.get("until"), None)
    summary = workbench().store.outcome_summary(since, until, ruleset or None)
    return render_template("outcomes.html", summary=summary, charts=charts(summary), ruleset=ruleset, since=since,
                           until=until, rulesets=workbench().ruleset_ids(), rate=override_rate)
