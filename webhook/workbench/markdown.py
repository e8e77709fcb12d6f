"""Card detail markdown rendered as an EHR would, safely: raw HTML in the text is shown as text, never run, and
links may only be http(s), mailto or relative (markdown-it-py's link check)."""
from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from markupsafe import Markup


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    # "js-default": CommonMark plus tables and strikethrough, with raw HTML off.
    return MarkdownIt("js-default", {"html": False, "linkify": False, "typographer": False})


def render_markdown(text: str | None) -> Markup:
    return Markup(_parser().render(text or ""))
