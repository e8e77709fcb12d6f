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
    from bench import cpu, openloop, protocols, scaling, soak, stages, zen

    why = {i: "no scenario file" for i in protocols.served()}
    monkeypatch.setattr(protocols, "with_cohort", lambda: ())
    monkeypatch.setattr(protocols, "skipped", lambda: why)
    results = {"stages": stages.run(quick=True), "scaling": scaling.run(quick=True), "soak": soak.run(quick=True),
               "openloop": openloop.run(quick=True), "cpu": cpu.run(quick=True), "zen": zen.run(quick=True)}
    assert results["stages"]["rulesets"] == {} and results["stages"]["skipped"] == why
    assert results["scaling"]["rulesets"] == {} and results["soak"]["max_growth_mb"] is None
    assert results["openloop"]["stores"] == {} and results["zen"]["rulesets"] == {}
    results["targets"] = main._targets(results)
    sections = ("stages", "scaling", "soak", "openloop", "cpu", "zen")
    text = main.render(results, sections)
    assert all(text.count(f"skipped {i}: no scenario file") == len(sections) for i in why)
    met = {t["target"]: t["met"] for t in results["targets"]}
    assert met["worker RSS growth over the soak"] is None
    assert met["open-loop order-sign p99 at 200/s, SQLite"] is None and met["ZEN decisions/s / ours"] is None


# --- the sections users feel: open loop, CPU per call, ZEN beside our engine ----------------------------------------


def test_the_open_loop_section_reports_each_rate(monkeypatch):
    """At one low rate on SQLite (PostgreSQL, when it is set, is the same code with another --db)."""
    from bench import httperf, openloop

    monkeypatch.delenv(openloop.PG_URL_VARIABLE, raising=False)
    result = openloop.run(rates=(20,), seconds=1.0)
    stores = result["stores"]
    assert stores["postgresql"] == {"skipped": f"{openloop.PG_URL_VARIABLE} is not set"}
    level = stores["sqlite"]["levels"]["20"]
    for endpoint in ("order-sign", "discovery"):
        row = level[endpoint]
        assert row["errors"] == 0, row.get("first_error")
        assert row["requests"] == 20 and 0 < row["achieved_rps"]
        assert 0 < row["p50_ms"] <= row["p99_ms"] and 0 <= row["over_100ms_share"] <= 1
    if httperf.installed():
        assert level["discovery httperf"]["errors"] == 0 and level["discovery httperf"]["p99_ms"] > 0
    else:
        assert level["discovery httperf"] == {"skipped": "skipped: httperf not installed"}


def test_httperf_figures_are_read_from_its_histogram():
    from bench import httperf

    output = """Connection lifetime histogram (time in ms):
             0.5 90
             1.5 8
             :
           120.5 2
Total: connections 100 requests 100 replies 100 test-duration 2.000 s
Reply status: 1xx=0 2xx=100 3xx=0 4xx=0 5xx=0
Errors: total 0 client-timo 0 socket-timo 0 connrefused 0 connreset 0
"""
    figures = httperf.parse(output)
    assert figures["p50_ms"] == 1.0 and figures["p99_ms"] == 121.0
    assert figures["over_100ms_share"] == 0.02 and figures["achieved_rps"] == 50.0


def test_the_cpu_section_reports_order_sign_over_discovery():
    from bench import cpu, protocols

    result = cpu.run(calls=80, step_seconds=0.5, max_rate=100, rounds=2)  # each round long enough to take CPU ticks
    services = {protocols.service_id(i, "order-sign") for i in protocols.with_cohort()}
    assert {"discovery", "order-sign cohort"} | services == set(result["per_call"])
    assert all(row["errors"] == 0 and row["cpu_ms"] > 0 for row in result["per_call"].values())
    assert all(len(row["round_cpu_ms"]) == 2 for row in result["per_call"].values()), "turns taken"
    assert result["worst_order_sign_over_discovery"] > 1, "an order-sign call does more than discovery"
    assert result["search"] and result["search"][0]["rate"] == cpu.FIRST_RATE


def test_the_zen_graph_decides_as_our_engine_on_every_cohort_case():
    from bench import protocols, zen
    from bench.protocols import COHORT_PATIENTS

    for ruleset_id in protocols.with_cohort():
        prepared = zen.prepare(ruleset_id, COHORT_PATIENTS)
        assert len(prepared.chosen) > 50 and any(prepared.ours), "the cohort reaches decisions"
        for name, agreement in prepared.agreement().items():
            assert agreement["differ"] == [], f"{ruleset_id}, {name}"
