"""Card text templates: Jinja2 in its sandbox, with names checked when the ruleset loads.

A card's detail is markdown, and the values a template inserts come from patient data: each one is escaped for
CommonMark on the way in, so a unit or id that reads `**URGENT** [log in](https://evil.example)` shows as written
instead of as bold text and a link. The template's own text keeps its markdown. Summaries and suggestion labels
are plain text (CDS Hooks) and insert values as they are.

Every text is capped: rendering stops with TextTooLong as soon as a text passes TEXT_LIMIT characters, and a
repetition (`'x' * n`) or power that alone would pass it is refused before it runs. One inserted value longer than
VALUE_LIMIT is cut there, marked with an ellipsis, so long data cannot by itself push a card past the cap.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from .uncertain import SHOWN_TYPES

# Names every template may use besides facts and parameters.
TEMPLATE_GLOBALS = ("missing", "params", "ruleset", "evaluation_date", "band")

TEXT_LIMIT = 10_000  # characters in one rendered text: a card detail, an appended line, a summary, a label
VALUE_LIMIT = 500  # characters of one inserted value

# Inline markup: escaped wherever it appears in a value. An underscore between two letters or digits cannot open
# or close emphasis (CommonMark's flanking rules), so `liver_window_days` stays as it is.
_INLINE_MARKUP = re.compile(r"[\\`*\[\]<>&|~#!]|(?<![^\W_])_|_(?![^\W_])")
# What makes a block of a value that begins a line: a bullet or setext underline (not the sign of a number), an
# ordered-list marker (`1.` or `1)` followed by a space), or the end of one after a number inserted just before.
_BLOCK_START = re.compile(r"^([-+=.)])(?![0-9])")
_ORDERED_START = re.compile(r"^([0-9]{1,9})([.)])(?=\s|$)")
# Anything one of the three would escape: most values (numbers, dates, codes) hold none, and one search costs a
# fifth of the three substitutions.
_ANY_MARKUP = re.compile("|".join(f"(?:{p.pattern})" for p in (_INLINE_MARKUP, _BLOCK_START, _ORDERED_START)))


class NotAvailable(jinja2.Undefined):
    """A fact without a value renders visibly instead of failing the card."""

    def __str__(self) -> str:
        return "(not available)"

    __html__ = __str__


class Markdown(str):
    """Text that is markdown already (an appended line, a table row as the ruleset writes it): inserted as is."""


def escape_markdown(value: object) -> str:
    """The value as CommonMark text that renders exactly as written: no emphasis, link, image, raw HTML or block.

    Line breaks and runs of spaces become one space: a value cannot break a line, indent a code block or end in a
    hard line break."""
    text = " ".join(str(value).split())
    if _ANY_MARKUP.search(text) is None:
        return text
    text = _INLINE_MARKUP.sub(r"\\\g<0>", text)
    text = _BLOCK_START.sub(r"\\\1", text)
    return _ORDERED_START.sub(r"\1\\\2", text)


class TextTooLong(jinja2.TemplateRuntimeError):
    """A card text that would pass TEXT_LIMIT: stopped, never built."""


def _shown(value: object) -> str:
    text = str(value)
    return text if len(text) <= VALUE_LIMIT else text[:VALUE_LIMIT] + "…"


def _inserted(value: object) -> str:
    return value if isinstance(value, Markdown) else escape_markdown(_shown(value))


def format_number(value: object) -> str:
    """2.5 -> '2.5', 5.0 -> '5', 0.123456 -> '0.12'; anything else as text (a bounded value as written: '<20')."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or isinstance(value, SHOWN_TYPES):
        return str(value)
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def format_date(value: object) -> str:
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)


def _result_size(operator: str, left: object, right: object) -> float:
    """How long `left * right` (a repeated text or list) or `left ** right` (in digits) would be; 0 otherwise."""
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, (str, list, tuple)) and isinstance(times, int):
                return len(sequence) * times
    if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        return right * math.log10(abs(left))
    return 0


class _CardTextEnvironment(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if _result_size(operator, left, right) > TEXT_LIMIT:
            raise TextTooLong(f"'{operator}' would build more than {TEXT_LIMIT:,} characters")
        return super().call_binop(context, operator, left, right)


def _environment(**options: Any) -> SandboxedEnvironment:
    environment = _CardTextEnvironment(undefined=NotAvailable, autoescape=False, keep_trailing_newline=False,
                                       **options)
    environment.filters["num"] = format_number
    environment.filters["date"] = format_date
    return environment


_MARKDOWN_ENV = _environment(finalize=_inserted)
_PLAIN_ENV = _environment(finalize=_shown)


@lru_cache(maxsize=4096)
def _compiled(text: str, markdown: bool) -> tuple[jinja2.Template, dict[str, Any]]:
    """The template, and its globals (Jinja's `range`, `dict`, ...) as a plain dict for _generated."""
    template = (_MARKDOWN_ENV if markdown else _PLAIN_ENV).from_string(text)
    return template, dict(template.globals)


@lru_cache(maxsize=4096)
def _template_names(text: str) -> frozenset[str]:
    return frozenset(meta.find_undeclared_variables(_PLAIN_ENV.parse(text)))


def prepare(text: str, markdown: bool) -> None:
    """Compile and read a text now, for render (markdown) or render_plain to reuse: each took Jinja's compiler about
    0.85 ms, paid by whichever call first reached the text."""
    _compiled(text, markdown)
    _template_names(text)


def template_names(text: str) -> set[str]:
    """The variables a template reads (raises jinja2.TemplateSyntaxError on a syntax error); parsed once per text."""
    return set(_template_names(text))


def _used(text: str, context: dict[str, Any]) -> dict[str, Any]:
    """Only the names the template reads are handed to Jinja, which copies what it is given (all the facts and
    parameters of a ruleset, for the two or three a summary reads)."""
    return {name: context[name] for name in _template_names(text) if name in context}


def _capped(text: str, context: dict[str, Any], markdown: bool) -> str:
    """The text rendered piece by piece, stopped as soon as it passes TEXT_LIMIT."""
    pieces, size = [], 0
    for piece in _generated(*_compiled(text, markdown), _used(text, context)):
        size += len(piece)
        if size > TEXT_LIMIT:
            raise TextTooLong(f"the text {text[:60]!r} renders more than {TEXT_LIMIT:,} characters")
        pieces.append(piece)
    return "".join(pieces).strip()


def _generated(template: jinja2.Template, template_globals: dict[str, Any],
               variables: dict[str, Any]) -> Iterator[str]:
    """What template.generate(variables) yields. generate copies the variables twice and walks the globals' ChainMap
    for each text it renders, which cost as much as rendering a summary: here the context is made once, from the
    globals read when the text was compiled, and shared with the render function as it is."""
    try:
        yield from template.root_render_func(template.new_context({**template_globals, **variables}, shared=True))
    except Exception:
        yield template.environment.handle_exception()  # as generate: raises, with the template's lines in the trace


def render(text: str, context: dict[str, Any]) -> Markdown:
    """Markdown (a card detail, an appended line): every inserted value escaped."""
    return Markdown(_capped(text, context, markdown=True))


def render_plain(text: str, context: dict[str, Any]) -> str:
    """Plain text (a summary, a suggestion label): values inserted as they are."""
    return _capped(text, context, markdown=False)
