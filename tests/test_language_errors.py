"""Every invalid ruleset is rejected with file, line, column, path and a plain reason."""
import json
import subprocess
import sys

import pytest

import schemas
from engine.analysis import compute_strata
from engine.document import MAX_ALIASES, MAX_DOCUMENT_BYTES, MAX_NESTING, MAX_VALUES, read_document, schema_errors
from engine.errors import RulesetErrors
from engine.loader import RULESET_SCHEMA, TESTS_SCHEMA, load_ruleset
from tests.helpers import DEMO, ROOT, demo_text, edited, line_of


def errors_for(text: str, path=DEMO):
    with pytest.raises(RulesetErrors) as caught:
        load_ruleset(path, text=text)
    return caught.value.errors


def test_demo_ruleset_is_valid():
    ruleset = load_ruleset(DEMO)
    assert ruleset.ref == "demo-dosing@1.0.0"
    assert len(ruleset.rules) == 10


def test_string_where_a_number_belongs():
    text = edited(demo_text(), "{value: 40, unit: mg/day", "{value: 40, unit: mg/day, extra: 1")
    text = edited(text, "plausible: [0.5, 250]", "plausible: [0.5, heavy]")
    errors = errors_for(text)
    located = [e for e in errors if e.path[:3] == ("facts", "weight_kg", "plausible")]
    assert located, errors
    assert "expected a number here, found the text 'heavy'" in located[0].message
    assert located[0].line == line_of(text, "plausible: [0.5, heavy]")
    assert located[0].file == str(DEMO)
    assert any("unknown key 'extra'" in e.message for e in errors)


def test_a_text_that_passed_its_schema_once_is_still_checked_when_it_changes():
    """Passes are remembered by schema and text (engine.document): the same text passes again, one byte more is
    validated anew, and a text that passed one schema is still checked against another."""
    text = demo_text()
    assert schema_errors(read_document(DEMO, text), RULESET_SCHEMA) == []
    assert schema_errors(read_document(DEMO, text), RULESET_SCHEMA) == []
    broken = edited(text, "plausible: [0.5, 250]", "plausible: [0.5, heavy]")
    (error,) = schema_errors(read_document(DEMO, broken), RULESET_SCHEMA)
    assert "expected a number here, found the text 'heavy'" in error.message
    assert error.line == line_of(broken, "plausible: [0.5, heavy]")
    assert schema_errors(read_document(DEMO, text), TESTS_SCHEMA), "a ruleset is not a tests file"


def test_number_fact_compared_with_text():
    text = edited(demo_text(), "{fact: marker, lt: {param: marker_low}}", "{fact: marker, lt: \"50\"}")
    (error,) = errors_for(text)
    assert "expected a number to compare with 'marker'" in error.message
    assert error.line == line_of(text, 'lt: "50"')


def test_unknown_operator():
    text = edited(demo_text(), "{fact: marker, gte: {param: marker_stop}}", "{fact: marker, greater: 150}")
    errors = errors_for(text)
    assert len(errors) == 1
    assert "greater" in errors[0].message
    assert errors[0].path[:2] == ("rules", 8)
    assert errors[0].line == line_of(text, "{fact: marker, greater: 150}")


def test_misspelled_parameter_suggests_the_right_one():
    text = edited(demo_text(), "lt: {param: marker_low}", "lt: {param: marker_lwo}")
    (error,) = errors_for(text)
    assert error.message == "unknown parameter 'marker_lwo' (did you mean 'marker_low'?)"
    assert error.path == ("rules", 7, "when", "all", 1, "lt", "param")
    assert error.line == line_of(text, "marker_lwo")
    assert str(error).startswith(f"{DEMO}:{error.line}:")


def test_table_gap_between_20_and_20_5():
    text = edited(demo_text(), '{band: "(20, inf)"', '{band: "[20.5, inf)"')
    (error,) = errors_for(text)
    assert "gap" in error.message and "20" in error.message and "20.5" in error.message
    assert error.line == line_of(text, '[20.5, inf)')


def test_table_overlap():
    text = edited(demo_text(), '{band: "(20, inf)"', '{band: "[20, inf)"')
    (error,) = errors_for(text)
    assert "overlap" in error.message


def test_table_output_above_maximum():
    text = edited(demo_text(), "high_dose_mg: {value: 20,", "high_dose_mg: {value: 45,")
    errors = errors_for(text)
    assert any("exceeds the maximum 40" in e.message for e in errors)


def test_duplicate_rule_id():
    text = edited(demo_text(), "- id: stop\n", "- id: step-up\n")
    errors = errors_for(text)
    assert any("rule id 'step-up' is used twice" in e.message for e in errors)
    (dup,) = [e for e in errors if "used twice" in e.message]
    assert dup.line == line_of(text, "- id: step-up\n    explanation: Marker high")


def test_yaml_syntax_error_has_a_position():
    text = edited(demo_text(), "title: Demo dosing protocol", "title: [Demo dosing protocol")
    (error,) = errors_for(text)
    assert error.message.startswith("YAML syntax error")
    assert error.line > 0 and error.column > 0


def test_duplicate_yaml_key():
    text = edited(demo_text(), "  max_days: {value: 28",
                  "  marker_stop: {value: 1, unit: x, description: y, source: protocol}\n  max_days: {value: 28")
    errors = errors_for(text)
    assert any("written twice" in e.message for e in errors)


def test_version_must_match_file_name():
    text = edited(demo_text(), "version: 1.0.0", "version: 1.0.1")
    (error,) = errors_for(text)
    assert "does not match the file name" in error.message


def test_cycle_in_derivations():
    text = edited(demo_text(), "days_on_therapy: {expr: \"days_between(start_date, today)\"}",
                  "days_on_therapy: {expr: \"next_dose_mg - next_dose_mg\"}")
    errors = errors_for(text)
    assert any("cycle" in e.message for e in errors)


def test_rule_that_can_never_fire():
    text = edited(demo_text(), "- {fact: days_on_therapy, lt: {param: max_days}}",
                  "- {fact: days_on_therapy, lt: 3}")
    errors = errors_for(text)
    assert any("can never fire" in e.message for e in errors)


def test_unsafe_expression_is_rejected():
    text = edited(demo_text(), "days_between(start_date, today)", "__import__('os').getcwd()")
    errors = errors_for(text)
    assert any("only these functions may be called" in e.message for e in errors)


def test_unknown_template_name():
    text = edited(demo_text(), "Start Demodrug {{ start_dose_mg | num }} mg once daily",
                  "Start Demodrug {{ start_dose | num }} mg once daily")
    (error,) = errors_for(text)
    assert "unknown name 'start_dose'" in error.message and "start_dose_mg" in error.message


def test_derived_fact_never_set():
    text = edited(demo_text(), "  review_due: {type: boolean,",
                  "  never_set: {type: boolean, description: x, derived: true}\n  review_due: {type: boolean,")
    errors = errors_for(text)
    assert any("never set by any rule" in e.message for e in errors)


def test_all_errors_are_listed_not_just_the_first():
    text = edited(demo_text(), "lt: {param: marker_low}", "lt: {param: marker_lwo}")
    text = edited(text, "gte: {param: marker_stop}", "gte: {param: marker_stpo}")
    assert len(errors_for(text)) == 2


# --- documents too large to walk -------------------------------------------------------------------

BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join([f'*{before}'] * 9)}]\n" for before, name in zip("abcdefgh", "bcdefghi", strict=True))


def test_an_alias_bomb_is_refused_at_once_in_little_memory(tmp_path):
    """Nine levels of nine aliases stand for 387 million values in 340 bytes."""
    (tmp_path / "bomb.yaml").write_text(BOMB)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20))\n"
            "from engine.errors import RulesetErrors; from engine.loader import load_ruleset\n"
            "try: load_ruleset(sys.argv[1])\n"
            "except RulesetErrors as e: print(e)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "bomb.yaml")], cwd=ROOT, capture_output=True,
                          text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert "bomb.yaml:6:" in done.stdout and f"more than {MAX_VALUES:,} values" in done.stdout


def test_too_many_aliases_are_refused_at_the_first_one_too_many():
    text = "base: &base {x: 1}\nuses:\n" + "".join("  - *base\n" for _ in range(MAX_ALIASES + 1))
    (error,) = errors_for(text)
    assert error.line == MAX_ALIASES + 3 and f"more than {MAX_ALIASES} aliases" in error.message


def test_an_alias_inside_what_it_names_is_refused():
    (error,) = errors_for("loop: &loop [1, *loop]\n")
    assert (error.line, error.column) == (1, 17) and "inside what it names" in error.message


FLOW_900_DEEP = "id: x\nnested: " + "[" * 900 + "]" * 900 + "\n"  # libyaml itself stops at 1,000
BLOCK_TOO_DEEP = "id: x\n" + "".join(" " * (2 * level) + f"k{level}:\n" for level in range(40)) + " " * 80 + "v\n"


@pytest.mark.parametrize("text, line", [(FLOW_900_DEEP, 2), (BLOCK_TOO_DEEP, MAX_NESTING + 2)], ids=["flow", "block"])
def test_deep_nesting_is_refused_at_its_line(text, line):
    """The root mapping is the first level; in the block text, level n begins on line n + 1."""
    (error,) = errors_for(text)
    assert error.line == line and f"deeper than {MAX_NESTING} levels" in error.message


def test_a_document_over_the_size_limit_is_refused_before_it_is_parsed():
    text = demo_text() + "#" * MAX_DOCUMENT_BYTES
    (error,) = errors_for(text)
    assert error.file == str(DEMO) and f"at most {MAX_DOCUMENT_BYTES:,} are read" in error.message


def test_aliases_within_the_limits_still_share_test_facts():
    assert load_ruleset(ROOT / "rules" / "hetrombopag" / "1.0.0.yaml").tests[1]["facts"]["age_years"] == 6


def test_what_aliases_share_is_walked_once():
    """Five levels of nine aliases stand for 59,049 values; the marks are of the 50 nodes written."""
    text = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(
        f"{name}: &{name} [{', '.join([f'*{before}'] * 9)}]\n" for before, name in zip("abcd", "bcde", strict=True))
    doc = read_document("shared.yaml", text)
    assert len(doc.marks) < 100
    assert doc.locate(("e", 8, 8, 8, 8)) == (4, 4)  # inside an alias: at what it names


def test_a_chain_of_1200_derivations_checks_fine():
    """Written last rule first, so that placing each rule needs the whole chain after it."""
    count = 1200
    facts = "".join(f"  c{i}: {{type: number, description: step {i}, derived: {str(i > 0).lower()}}}\n"
                    for i in range(count + 1))
    rules = "".join(f"  - {{id: c{i}, explanation: step {i}, when: {{exists: c{i - 1}}}, "
                    f"then: {{derive: {{c{i}: {{expr: \"c{i - 1} + 1\"}}}}}}}}\n" for i in range(count, 0, -1))
    text = edited(edited(demo_text(), "\nfacts:\n", "\nfacts:\n" + facts), "\nrules:\n", "\nrules:\n" + rules)
    strata = compute_strata(load_ruleset(DEMO, text))
    assert strata["c1"] == 0 and strata[f"c{count}"] == count - 1


def test_a_table_of_10000_rows_is_refused_at_its_rows():
    rows_limit = schemas.load("ruleset.schema.json")["$defs"]["table"]["properties"]["rows"]["maxItems"]
    rows = "".join(f'      - {{band: "({i}, {i + 1}]", output: {{param: low_dose_mg}}}}\n' for i in range(10_000))
    text = edited(demo_text(), '      - {band: "(0, 20]", output: {param: low_dose_mg}}\n', rows)
    (error,) = errors_for(text)
    assert error.path == ("tables", "start_dose_by_weight", "rows") and error.line == line_of(text, "    rows:")
    assert error.message == f"at most {rows_limit:,} items are allowed here; this list has 10,001"


# --- the size of one rule's condition in the engine's core ------------------------------------------------------


def _with_wide_rule(comparisons: int) -> str:
    """The demo ruleset whose first rule asks for any of `comparisons` marker values."""
    wide = "{any: [" + ", ".join(f"{{fact: marker, eq: {n}}}" for n in range(comparisons)) + "]}"
    return edited(demo_text(), "    when: {exists: start_date}\n", f"    when: {wide}\n")


def test_a_condition_too_large_for_the_core_is_an_error_at_its_rule():
    text = _with_wide_rule(14)  # 2 (the stratum) + 2 (any) + 14 x 2 = 32 places
    errors = [e for e in errors_for(text) if "too large for the rule engine" in e.message]
    assert len(errors) == 1 and errors[0].path == ("rules", 0, "when")
    assert errors[0].line == line_of(text, "when: {any: [")
    assert "takes 32 of the 31 places" in errors[0].message
    load_ruleset(DEMO, text=_with_wide_rule(13))  # 30 places: loads


@pytest.mark.parametrize(("comparisons", "loads"), [(13, True), (14, False)])
def test_the_limit_is_the_core_s_own(comparisons, loads, tmp_path):
    """The compiled pattern registered in the core directly, in a fresh process: refused exactly above the limit."""
    from engine.compiler import core_pattern_entries, rule_pattern
    from engine.document import read_document
    from engine.loader import build_ruleset

    ruleset = build_ruleset(read_document(DEMO, _with_wide_rule(comparisons)))
    pattern = rule_pattern(ruleset.rules[0], 0, ruleset)
    assert (core_pattern_entries(pattern) <= 31) is loads
    script = ("import json, sys, durable_rules_engine as core\n"
              "try:\n    core.create_ruleset('wide', sys.argv[1])\nexcept Exception as e:\n"
              "    print(e); sys.exit(3)\n")
    definition = json.dumps({"wide-rule": {"all": [{"m": pattern}]}})
    done = subprocess.run([sys.executable, "-c", script, definition], capture_output=True, text=True, timeout=60)
    assert (done.returncode == 0) is loads, done.stdout + done.stderr
    if not loads:
        assert "113" in done.stdout  # ERR_EXPRESSION_LIMIT_EXCEEDED


def test_a_parameter_of_the_wrong_type_is_reported_at_its_own_value_with_every_use():
    text = edited(demo_text(), "marker_stop: {value: 150,", "marker_stop: {value: seven,")
    text = edited(text, "        - {fact: marker, lt: {param: marker_low}}",
                  "        - {fact: marker, lt: {param: marker_stop}}")  # two uses now
    (error,) = errors_for(text)
    assert error.path == ("parameters", "marker_stop", "value")
    assert error.line == line_of(text, "marker_stop: {value: seven,")
    assert error.message.startswith("parameter 'marker_stop' is 'seven', which its uses cannot take: ")
    uses = [line_of(text, "lt: {param: marker_stop}"), line_of(text, "gte: {param: marker_stop}")]
    for use in uses:
        assert f"line {use} (rules." in error.message
    assert "expected a number to compare with 'marker'" in error.message
