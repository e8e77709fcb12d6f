"""Small helpers shared by the tests (and the bench)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "rulesets" / "demo-dosing" / "1.0.0.yaml"
HETROMBOPAG = ROOT / "rules" / "hetrombopag" / "1.0.0.yaml"


def demo_text() -> str:
    return DEMO.read_text(encoding="utf-8")


def edited(text: str, old: str, new: str) -> str:
    """The text with one exact passage replaced; fails loudly if the passage is not there."""
    assert text.count(old) == 1, f"expected exactly one {old!r}"
    return text.replace(old, new)


def line_of(text: str, passage: str) -> int:
    return text[: text.index(passage)].count("\n") + 1


def without_uuids(value):
    """A CDS Hooks answer (or any part of it) without its `uuid` keys, which are random per call."""
    if isinstance(value, dict):
        return {k: without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [without_uuids(v) for v in value]
    return value


def json_paths(node, prefix=()):
    """Every path into a JSON document, the document itself first."""
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from json_paths(child, prefix + (key,))


def replace_at(document, path: tuple, value):
    """The document with the value at `path` replaced (in place); an empty path replaces the whole."""
    if not path:
        return value
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


def slow_draft() -> str:
    """hetrombopag 1.1.0 whose start-dose summary loops 10^10 times before it says anything: its tests never end."""
    text = (ROOT / "rules" / "hetrombopag" / "1.1.0.yaml").read_text(encoding="utf-8")
    loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    return edited(text, '"Start hetrombopag {{', f'"{loops}Start hetrombopag {{{{')


def demo_cases():
    """A spread of inputs that exercise every rule of the demo ruleset."""
    for weight in (3, 20, 20.1, 80):
        for day in ("2026-03-01", "2026-03-09"):
            yield {"weight_kg": weight, "weight_date": day}
    for marker in (10, 60, 200):
        for start in ("2026-02-01", "2026-03-03", "2026-03-09"):
            yield {"start_date": start, "current_dose_mg": 10, "marker": marker, "draft_order_id": "d1",
                   "draft_dose_mg": 10, "route": "oral" if marker > 50 else "iv"}
    yield {"allergy": True, "marker": 90, "marker_limit": 40, "weight_kg": 30, "weight_date": "2026-03-09"}
