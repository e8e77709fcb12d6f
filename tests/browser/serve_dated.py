"""`cdsrules serve` for the browser tests, with the app's date (its CLOCK setting, see webhook/app.py) read from a
file on every call: a test moves the running server's today by writing the file, without a restart.

Everything else is the real command: `webhook.server.main` with the options given, under gunicorn; only the app
factory its workers call is handed the CLOCK, as the Flask tests hand it to `create_app`.

    python -m tests.browser.serve_dated --date-file today.txt --rules DIR --port N --workbench --auth-config FILE ...
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from webhook import server
from webhook.app import create_app


def clock_from(path: Path):
    """Today as the file says it (YYYY-MM-DD), read on each call."""
    return lambda: dt.date.fromisoformat(path.read_text(encoding="utf-8").strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date-file", type=Path, required=True)
    args, serve_options = parser.parse_known_args(argv)
    clock = clock_from(args.date_file.resolve())

    def dated_app(config: dict[str, Any]):
        return create_app({**config, "CLOCK": clock})

    server.create_app = dated_app  # called by each gunicorn worker after the fork (webhook.server._Gunicorn.load)
    return server.main(serve_options)


if __name__ == "__main__":
    sys.exit(main())
