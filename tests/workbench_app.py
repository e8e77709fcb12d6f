"""The workbench as the tests mount it: a bare app with only the workbench, with or without its users, and the
rules copies they govern."""
from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import yaml
from flask import Flask

from engine import versions
from webhook.workbench import register_workbench

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "rules"
TODAY = dt.date(2026, 3, 19)
TOKEN = "workbench-token-for-tests"

SECRET = "a-secret-that-signs-login-cookies-for-tests"
SHARED = "the-shared-workbench-token"
ROLES = {"ana": ["author"], "ben": ["approver"], "cy": ["approver"], "dee": ["author", "approver"]}


def make_app(tmp_path: Path, auth: dict | None = None, rules: Path = RULES, **extra) -> Flask:
    """A bare app with only the workbench: access is tested without the service's JWT layer."""
    settings = {"RULES_DIR": str(rules), "DB_URL": f"sqlite:///{tmp_path / 'wb.db'}", "CLOCK": lambda: TODAY, **extra}
    if auth is not None:
        path = tmp_path / "auth.yaml"
        path.write_text(yaml.safe_dump({"base_url": "https://cds.example", "issuers": [], **auth}))
        settings["AUTH_CONFIG"] = str(path)
    app = Flask(__name__)
    register_workbench(app, settings)
    return app


def token(name: str) -> str:
    return f"token-of-{name}-for-tests"


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(name)}"}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def users_app(directory: Path, rules: Path, store_url: str) -> Flask:
    """The workbench with ROLES' users, each signing in with their own token."""
    (directory / "session.secret").write_text(SECRET + "\n")
    users = [{"name": name, "token_sha256": sha256(token(name)), "roles": roles} for name, roles in ROLES.items()]
    section = {"token_sha256": sha256(SHARED), "session_secret_file": "session.secret", "users": users}
    return make_app(directory, auth={"workbench": section}, rules=rules, DB_URL=store_url)


def govern(folder: Path, approvals_required: int) -> None:
    """Give the ruleset's manifest a governance section (a new manifest when it has none)."""
    path = folder / versions.MANIFEST
    data = yaml.safe_load(path.read_text()) if path.exists() else {"ruleset": folder.name, "releases": []}
    data.pop("governance", None)
    path.write_text(yaml.safe_dump({"governance": {"approvals_required": approvals_required}, **data},
                                   sort_keys=False))


def governed_copy(tmp_path: Path, approvals_required: int) -> Path:
    """The shipped rules, copied, with hetrombopag's releases needing `approvals_required` approvals."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    govern(rules / "hetrombopag", approvals_required)
    return rules
