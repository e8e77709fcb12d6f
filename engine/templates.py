"""Card text templates: Jinja2 in its sandbox, with names checked when the ruleset loads."""
from __future__ import annotations

import datetime as dt
from functools import lru_cache

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from .uncertain import SHOWN_TYPES

# Names every template may use besides facts and parameters.
TEMPLATE_GLOBALS = ("missing", "params", "ruleset", "evaluation_date", "band")


class NotAvailable(jinja2.Undefined):
    """A fact without a value renders visibly instead of failing the card."""

    def __str__(self) -> str:
        return "(not available)"

    __html__ = __str__


def format_number(value) -> str:
    """2.5 -> '2.5', 5.0 -> '5', 0.123456 -> '0.12'; anything else as text (a bounded value as written: '<20')."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or isinstance(value, SHOWN_TYPES):
        return str(value)
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def format_date(value) -> str:
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)


_ENV = SandboxedEnvironment(undefined=NotAvailable, autoescape=False, keep_trailing_newline=False)
_ENV.filters["num"] = format_number
_ENV.filters["date"] = format_date


@lru_cache(maxsize=4096)
def compile_template(text: str) -> jinja2.Template:
    return _ENV.from_string(text)


@lru_cache(maxsize=4096)
def _template_names(text: str) -> frozenset[str]:
    return frozenset(meta.find_undeclared_variables(_ENV.parse(text)))


def template_names(text: str) -> set[str]:
    """The variables a template reads (raises jinja2.TemplateSyntaxError on a syntax error); parsed once per text."""
    return set(_template_names(text))


def render(text: str, context: dict) -> str:
    """Only the names the template reads are handed to Jinja, which copies what it is given (all the facts and
    parameters of a ruleset, for the two or three a summary reads)."""
    used = {name: context[name] for name in _template_names(text) if name in context}
    return compile_template(text).render(used).strip()
