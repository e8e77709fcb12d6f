"""`cdsrules serve --workbench` for the browser tests while create_app does not mount the workbench itself.

Runs the real app factory under gunicorn exactly like `webhook.server.serve`, then mounts the workbench with
`register_workbench` if the factory did not. Once create_app honours WORKBENCH, the fixture uses `cdsrules serve`
and this module is unused.
"""
from __future__ import annotations

import argparse
import sys

from gunicorn.app.base import BaseApplication

from webhook import create_app
from webhook.server import gunicorn_options


def build(config: dict):
    """The app as `serve --workbench` builds it, with the workbench mounted."""
    app = create_app(config)
    if "workbench" not in app.blueprints:
        from webhook.workbench import register_workbench

        register_workbench(app, {**config, "AUTH_CONFIG": config.get("AUTH_CONFIG")})
    return app


class _Server(BaseApplication):
    def __init__(self, config: dict, options: dict):
        self.config, self.options = config, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return build(self.config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default="rules")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    config = {"RULES_DIR": args.rules, "DB_URL": args.db, "AUTH_CONFIG": None, "WORKBENCH": True}
    _Server(config, gunicorn_options("127.0.0.1", args.port, args.workers)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
