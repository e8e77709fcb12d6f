"""The release dossier (engine.dossier) as one self-contained HTML document, and that same HTML as a PDF.

Used by the workbench's dossier pages and by `cdsrules dossier`; needs neither Flask nor a request. The PDF is
rendered by weasyprint with a URL fetcher that allows no protocol: the document carries all it shows, and
rendering never reaches the network.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from engine.dossier import Dossier
from engine.templates import format_number

TEMPLATE = "dossier_document.html"
_ENVIRONMENT = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                                  autoescape=True, undefined=jinja2.StrictUndefined)


def show_value(value: Any) -> str:
    """A value as the rulesets write it: true/false, numbers without noise, lists joined, nothing as a dash (the
    `show` filter of the dossier and of the workbench's pages)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, (list, tuple)):
        return "; ".join(show_value(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {show_value(v)}" for k, v in value.items())
    return str(value)


_ENVIRONMENT.filters["show"] = show_value


def dossier_html(dossier: Dossier, nonce: str | None = None, links: list[tuple[str, str]] | None = None) -> str:
    """The document; `nonce` marks its style element for a page's content security policy, `links` (label, address)
    lead from the page to others and are left out of print."""
    return _ENVIRONMENT.get_template(TEMPLATE).render(d=dossier, nonce=nonce, links=links or [])


def dossier_pdf(html: str) -> bytes:
    import weasyprint  # loads its fonts and layout engine only when a PDF is asked for
    from weasyprint.urls import URLFetcher

    # No protocol allowed: an address in the document (none is written there) is refused, not fetched.
    pdf = weasyprint.HTML(string=html, url_fetcher=URLFetcher(allowed_protocols=())).write_pdf()
    assert pdf is not None  # write_pdf returns the bytes when given no target
    return bytes(pdf)
