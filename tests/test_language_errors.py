"""Every invalid ruleset is rejected with file, line, column, path and a plain reason."""
import pytest

from engine.errors import RulesetErrors
from engine.loader import load_ruleset
from tests.helpers import DEMO, demo_text, edited, line_of


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
    text = edited(demo_text(), "  max_days: {value: 28", "  marker_stop: {value: 1, unit: x, description: y, source: protocol}\n  max_days: {value: 28")
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
    text = edited(demo_text(), "  review_due: {type: boolean,", "  never_set: {type: boolean, description: x, derived: true}\n  review_due: {type: boolean,")
    errors = errors_for(text)
    assert any("never set by any rule" in e.message for e in errors)


def test_all_errors_are_listed_not_just_the_first():
    text = edited(demo_text(), "lt: {param: marker_low}", "lt: {param: marker_lwo}")
    text = edited(text, "gte: {param: marker_stop}", "gte: {param: marker_stpo}")
    assert len(errors_for(text)) == 2
