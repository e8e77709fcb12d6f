"""Stages: where one order-sign call spends its time, step by step, in one process (`python -m bench stages`).

For each served ruleset with request data (`bench.protocols`), the steps are the ones `webhook.hooks` runs, called in
the same order on the same request the service section sends to its order-sign service, each timed on its own, with
discovery in the same process as the framework floor. What is left between the steps' sum and the whole request through
the Flask test client is Flask's own work (routing, hooks, the JSON response). The audit write goes to a fresh SQLite
file with the production settings (WAL, synchronous=NORMAL).
"""
from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

from bench import protocols
from bench.common import RULES, BodyTemplate, hook_body, percentile
from tests.helpers import without_uuids

HOOK = "order-sign"
STEPS = ("parse", "prefetch", "extract", "evaluate", "cards", "audit")


def run(quick: bool = False) -> dict:
    from webhook import create_app

    calls = 200 if quick else 3000
    found: dict = {"calls": calls, "rulesets": {}, "skipped": protocols.skipped()}
    folder = Path(tempfile.mkdtemp(prefix="cdsrules-stages-"))
    try:
        app = create_app({"RULES_DIR": str(RULES), "DB_URL": f"sqlite:///{folder / 'store.db'}"})
        for ruleset_id in protocols.with_cohort():
            found["rulesets"][ruleset_id] = _run_one(app, ruleset_id, calls)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return found


def _run_one(app, ruleset_id: str, calls: int) -> dict:
    service_id = protocols.service_id(ruleset_id, HOOK)
    template = BodyTemplate(hook_body(ruleset_id, HOOK, dt.date.today()))
    with app.app_context():
        steps, stepped_cards = _time_steps(app, service_id, template, calls)
    whole, floor, answered_cards = _time_requests(app, service_id, template, calls)
    step_p50 = {name: _us(percentile(sorted(times), 0.5)) for name, times in steps.items()}
    whole_p50, floor_p50 = _us(percentile(whole, 0.5)), _us(percentile(floor, 0.5))
    return {"steps_p50_us": step_p50, "steps_sum_us": round(sum(step_p50.values()), 1),
            "whole_request_p50_us": whole_p50, "discovery_p50_us": floor_p50,
            "flask_and_rest_us": round(whole_p50 - sum(step_p50.values()), 1),
            # The steps timed are the request's own only if they reach the same cards.
            "steps_give_the_requests_cards": without_uuids(stepped_cards) == without_uuids(answered_cards)}


def _time_steps(app, service_id: str, template: BodyTemplate, calls: int) -> tuple[dict[str, list[float]], list[dict]]:
    """The steps of webhook.hooks.call, each timed; the app context stands in for the request's."""
    from engine import fhir
    from engine.choice import choose_version
    from webhook import hooks
    from webhook.cards import build_cards
    from webhook.prefetch import gather
    from webhook.request import normalise_resource, parse_hook_request

    state = app.extensions["cdsrules"]
    service = state.service(service_id)
    today = dt.date.today()
    versions = state.catalog.rulesets[service.ruleset.id]
    times: dict[str, list[float]] = {name: [] for name in STEPS}
    for n in range(calls + calls // 10):
        body, clock = template.render(), _Clock()
        request = parse_hook_request(body, service.hook)
        clock.lap("parse")
        orders = list(request.draft_orders)
        gathered = gather(service.prefetch, request, state.fetcher, lambda url: False)
        resources = [normalise_resource(r) for payload in gathered.payloads.values()
                     for r in fhir.resources_from(payload)]
        clock.lap("prefetch")
        extraction = fhir.extract_facts(state.mapping, resources, today, draft_orders=orders,
                                        supplied=gathered.supplied)
        clock.lap("extract")
        choice = choose_version(versions, today, extraction)  # the version that decides, as webhook.hooks asks
        assert choice is not None, f"no version of {service.ruleset.id} is in effect on {today}"
        evaluation = state.engine.evaluate(choice.ruleset, extraction.facts, today, hook=request.hook,
                                           reasons=extraction.problems)
        clock.lap("evaluate")
        known = [r for r in resources if r.get("resourceType") == "MedicationRequest"]
        cards = build_cards(evaluation, choice.ruleset, request.patient_id, orders, known, choice=choice)
        clock.lap("cards")
        hooks._audit(service, choice.ruleset, request, cards, evaluation, clock.started, choice)
        clock.lap("audit")
        if n >= calls // 10:  # the first tenth warms caches
            for name, seconds in clock.laps.items():
                times[name].append(seconds)
    return times, cards


def _time_requests(app, service_id: str, template: BodyTemplate,
                   calls: int) -> tuple[list[float], list[float], list[dict]]:
    client = app.test_client()
    whole, floor, cards = [], [], []
    for n in range(calls):
        started = time.perf_counter()
        response = client.post(f"/cds-services/{service_id}", data=template.render(), content_type="application/json")
        middle = time.perf_counter()
        cards = response.get_json()["cards"]
        client.get("/cds-services")
        if n >= calls // 10:
            whole.append(middle - started)
            floor.append(time.perf_counter() - middle)
    return sorted(whole), sorted(floor), cards



class _Clock:
    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name], self._last = now - self._last, now


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 1)
