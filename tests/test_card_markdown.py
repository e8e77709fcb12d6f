"""Patient data never becomes markup in a card: each value a template inserts into markdown is escaped, so it
shows exactly as written, while the ruleset's own text keeps its markdown; through the service and the workbench."""
from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from engine.templates import escape_markdown, render
from tests.conftest import TODAY, patient_record
from tests.hook_calls import patient_view_with_prefetch
from tests.workbench_app import make_app as make_workbench

pytestmark = pytest.mark.timeout(120)

PAYLOAD = "**URGENT** [re-enter your password](https://evil.example) ![](https://evil.example/pixel.png) <b>now</b>"
PARSERS = (MarkdownIt("commonmark"), MarkdownIt("js-default"))  # the second as the workbench renders


def blocks_and_text(markdown: str, parser: MarkdownIt) -> tuple[list[str], str, list[str]]:
    """The block token types, the visible text, and the inline token types other than text."""
    tokens = parser.parse(markdown)
    inline = [child for token in tokens if token.type == "inline" for child in token.children or ()]
    text = "".join(child.content for child in inline if child.type == "text")
    return [t.type for t in tokens], text, [child.type for child in inline if child.type != "text"]


# Text drawn from everything CommonMark gives a meaning to, letters, digits, spaces and line breaks.
values = st.text(st.sampled_from(list("\\`*_[]()<>&|~#!-+=.:/'\"0123456789 \n\tab")) | st.characters(
    blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24)


@given(value=values)
def test_an_inserted_value_renders_as_written_wherever_it_stands(value):
    assume(value.split())
    shown = " ".join(value.split())
    cases = {"{{ v }}": (["paragraph_open", "inline", "paragraph_close"], shown),
             "Unit {{ v }} here.": (["paragraph_open", "inline", "paragraph_close"], f"Unit {shown} here."),
             "- {{ v }}": (["bullet_list_open", "list_item_open", "paragraph_open", "inline", "paragraph_close",
                            "list_item_close", "bullet_list_close"], shown)}
    for template, (blocks, text) in cases.items():
        for parser in PARSERS:
            assert blocks_and_text(render(template, {"v": value}), parser) == (blocks, text, []), template


@given(first=values, second=values)
@example(first="1", second=". x")
@example(first="2", second=")")
def test_two_values_side_by_side_at_a_line_start_make_no_block(first, second):
    shown = " ".join(first.split()) + " ".join(second.split())
    assume(shown)
    for parser in PARSERS:
        assert blocks_and_text(render("{{ a }}{{ b }}", {"a": first, "b": second}), parser) == (
            ["paragraph_open", "inline", "paragraph_close"], shown, [])


@pytest.mark.parametrize("value", ["2026-03-04", "2.5", "-3", "+4", "Observation/plt-1", "10^9/L", "U/L",
                                   "values older than 14 days ('liver_window_days') are not used", "(protocol)"])
def test_ordinary_values_are_inserted_unchanged(value):
    assert escape_markdown(value) == value


@pytest.mark.parametrize(("value", "escaped"), [("- x", "\\- x"), ("=", "\\="), (")", "\\)"), ("1. x", "1\\. x"),
                                                ("12)", "12\\)"), ("_x", "\\_x"), ("a|b", "a\\|b")])
def test_a_value_whose_only_markup_is_one_mark_is_escaped(value, escaped):
    # Values without markup skip the substitutions: each kind of mark alone must still be found.
    assert escape_markdown(value) == escaped


def test_the_template_keeps_its_own_markdown():
    html = PARSERS[0].render(render("**Stop:** {{ v }}\n\n- [{{ v }}](https://protocol.example)", {"v": "*x*"}))
    assert html == ('<p><strong>Stop:</strong> *x*</p>\n'
                    '<ul>\n<li><a href="https://protocol.example">*x*</a></li>\n</ul>\n')


def _record_with_payload(today: dt.date) -> list[dict]:
    """The usual patient, but the platelet counts carry markup in their unit, and the latest in its id too."""
    record = patient_record(today)
    for resource in record:
        if resource["resourceType"] == "Observation" and resource["id"].startswith("plt"):
            resource["valueQuantity"].update(unit=PAYLOAD, code=PAYLOAD)
            if resource["id"] == "plt1":
                resource["id"] = "plt1" + PAYLOAD
    return record


def _emphasised(inline: list) -> list[str]:
    texts, depth = [], 0
    for child in inline:
        if child.type in ("em_open", "strong_open"):
            depth += 1
        elif child.type in ("em_close", "strong_close"):
            depth -= 1
        elif depth and child.type == "text":
            texts.append(child.content)
    return texts


def assert_shown_as_text(markdown: str) -> None:
    """No link, image, raw HTML or emphasis comes from the payload, which shows as written."""
    for parser in PARSERS:
        tokens = parser.parse(markdown)
        assert "html_block" not in [t.type for t in tokens]
        inline = [child for token in tokens if token.type == "inline" for child in token.children or ()]
        assert not [c.type for c in inline if c.type in ("link_open", "image", "html_inline")]
        assert not any("URGENT" in text for text in _emphasised(inline))
        assert PAYLOAD in "".join(child.content for child in inline if child.type == "text")


def test_markup_in_an_observations_unit_and_id_stays_text_in_the_card(client, fhir, app):
    fhir.reset(_record_with_payload(TODAY))
    status, answer = patient_view_with_prefetch(app, fhir)
    assert status == 200
    (card,) = answer["cards"]
    assert "Platelet count: unit" in card["detail"]  # the unit is not known, so the count is missing
    assert_shown_as_text(card["detail"])


def test_the_workbench_shows_the_markup_as_text(tmp_path):
    workbench_today = dt.date(2026, 3, 19)  # the workbench tests' clock
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": r} for r in _record_with_payload(workbench_today)]}
    client = make_workbench(tmp_path).test_client()
    html = client.post("/workbench/try", data={"version": "hetrombopag@1.0.0", "source": "bundle", "run": "1",
                                               "bundle": json.dumps(bundle)}).get_data(as_text=True)
    (detail,) = re.findall(r'<div class="cds-detail">(.*?)</div>', html, re.S)
    assert "Platelet count: unit" in detail
    assert "<a " not in detail and "<img" not in detail and "<b>" not in detail
    assert "<strong>URGENT" not in detail and "<em>" not in detail
    assert "**URGENT** [re-enter your password](https://evil.example)" in detail
    assert "&lt;b&gt;now&lt;/b&gt;" in detail
