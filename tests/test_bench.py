"""The benchmarks measure what they say: the stages section times the steps of the real request path."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)


def test_the_stages_timed_are_those_of_a_real_order_sign_call():
    from bench import protocols, stages

    result = stages.run(quick=True)
    assert set(result["rulesets"]) == set(protocols.with_cohort()) and "hetrombopag" in result["rulesets"]
    for figures in result["rulesets"].values():
        assert figures["steps_give_the_requests_cards"] is True, "the timed steps no longer follow webhook.hooks"
        assert list(figures["steps_p50_us"]) == list(stages.STEPS)
        assert all(us > 0 for us in figures["steps_p50_us"].values())


def test_every_served_ruleset_is_measured_or_named_as_skipped():
    from bench import protocols
    from engine.versions import load_catalog

    served = load_catalog(protocols.RULES).served_ids()
    assert {"hetrombopag", "eltrombopag-itp"} <= set(served)
    assert set(protocols.with_cohort()) | set(protocols.skipped()) == set(served)
    assert not set(protocols.with_cohort()) & set(protocols.skipped())
    assert protocols.service_path("hetrombopag", "order-sign") == "/cds-services/hetrombopag-order-sign"


def test_the_engine_section_measures_each_ruleset_on_its_own_data():
    from bench import evaluation, protocols

    result = evaluation.run(quick=True)
    rows = {row["ruleset"]: row for row in result["rulesets"]}
    versions = {r.ref for v in protocols.catalog().rulesets.values() for r in v.rulesets.values()}
    assert set(rows) | set(result["skipped"]) == versions
    assert rows["hetrombopag@1.0.0"]["data"] == "cohort"
    assert rows["eltrombopag-itp@1.0.0"]["data"] == ("cohort" if protocols.scenario_file("eltrombopag-itp")
                                                     else "tests")
    assert all(row["cases"] > 0 and row["rules_fired_mean"] > 0 for row in rows.values())


def test_the_cohort_bodies_take_every_path_of_the_service(tmp_path):
    """The cohort row is only worth its name if its calls are answered and meet the protocol's phases."""
    import datetime as dt

    from bench.common import RULES, cohort_bodies
    from webhook import create_app

    client = create_app({"RULES_DIR": str(RULES), "DB_URL": f"sqlite:///{tmp_path / 'store.db'}"}).test_client()
    topics, quiet = set(), 0
    for body in cohort_bodies("hetrombopag", "order-sign", dt.date.today()):
        response = client.post("/cds-services/hetrombopag-order-sign", json=body)
        assert response.status_code == 200, response.get_json()
        cards = response.get_json()["cards"]
        topics |= {c["source"]["topic"]["code"] for c in cards}
        quiet += not cards
    assert quiet, "some calls have nothing to say"
    assert {"eligibility-not-met", "start-too-early", "titration-increase", "stop-platelets", "stop-duration",
            "dose-mismatch"} <= topics


def test_a_longer_history_is_more_results_of_the_monitored_observation():
    import datetime as dt

    from bench.common import hook_body, repeated_code, typical_case, with_history

    _, _, record = typical_case("hetrombopag")
    code = repeated_code(record)
    assert code == ("http://loinc.org", "777-3"), "the platelet count is what the cohort's charts repeat most"
    for count in (1, 10, 1000):
        longer = with_history(record, count)
        assert sum(r.get("resourceType") == "Observation" and r["code"]["coding"][0]["code"] == code[1]
                   for r in longer) == count
        assert len({r["id"] for r in longer}) == len(longer)
    small = hook_body("hetrombopag", "order-sign", dt.date.today(), history=10)
    large = hook_body("hetrombopag", "order-sign", dt.date.today(), history=1000)
    assert len(str(large)) > 10 * len(str(small)) / 2


def test_a_section_without_request_data_says_so_and_goes_on(monkeypatch):
    """A served ruleset without a scenario file (or none with one) skips the sections that send requests."""
    from bench import __main__ as main
    from bench import protocols, scaling, soak, stages

    why = {i: "no scenario file" for i in protocols.served()}
    monkeypatch.setattr(protocols, "with_cohort", lambda: ())
    monkeypatch.setattr(protocols, "skipped", lambda: why)
    results = {"stages": stages.run(quick=True), "scaling": scaling.run(quick=True), "soak": soak.run(quick=True)}
    assert results["stages"]["rulesets"] == {} and results["stages"]["skipped"] == why
    assert results["scaling"]["rulesets"] == {} and results["soak"]["max_growth_mb"] is None
    results["targets"] = main._targets(results)
    text = main.render(results, ("stages", "scaling", "soak"))
    assert all(f"skipped {i}: no scenario file" in text for i in why)
    assert {t["target"]: t["met"] for t in results["targets"]}["worker RSS growth over the soak"] is None
