"""The benchmarks measure what they say: the stages section times the steps of the real request path."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)


def test_the_stages_timed_are_those_of_a_real_order_sign_call():
    from bench import stages

    result = stages.run(quick=True)
    assert result["steps_give_the_requests_cards"] is True, "the timed steps no longer follow webhook.hooks"
    assert list(result["steps_p50_us"]) == list(stages.STEPS)
    assert all(us > 0 for us in result["steps_p50_us"].values())


def test_the_cohort_bodies_take_every_path_of_the_service(tmp_path):
    """The cohort row is only worth its name if its calls are answered and meet the protocol's phases."""
    import datetime as dt

    from bench.common import RULES, cohort_bodies
    from webhook import create_app

    client = create_app({"RULES_DIR": str(RULES), "DB_URL": f"sqlite:///{tmp_path / 'store.db'}"}).test_client()
    topics, quiet = set(), 0
    for body in cohort_bodies("order-sign", dt.date.today()):
        response = client.post("/cds-services/hetrombopag-order-sign", json=body)
        assert response.status_code == 200, response.get_json()
        cards = response.get_json()["cards"]
        topics |= {c["source"]["topic"]["code"] for c in cards}
        quiet += not cards
    assert quiet, "some calls have nothing to say"
    assert {"eligibility-not-met", "start-too-early", "titration-increase", "stop-platelets", "stop-duration",
            "dose-mismatch"} <= topics
