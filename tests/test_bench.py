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
