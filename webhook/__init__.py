"""The CDS Hooks service: `create_app(config)` (webhook.app) builds a Flask app from a configuration; the rules a
process serves are loaded and reloaded by webhook.state.
"""
from __future__ import annotations

from webhook.app import DEFAULTS, create_app
from webhook.state import check_rules, reload_marker

__all__ = ["DEFAULTS", "check_rules", "create_app", "reload_marker"]
