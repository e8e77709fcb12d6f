"""Small helpers shared by the engine tests."""
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
