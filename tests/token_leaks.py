"""The files the suite wrote that hold a JWT or the FHIR access token (tests/test_zz_no_secrets.py, and the session's
end under pytest-xdist, where each worker writes under a folder of its own)."""
from __future__ import annotations

import re
from pathlib import Path

JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}")
SUFFIXES = (".log", ".db", ".sqlite", ".jsonl", ".csv")


def written_files(base: Path) -> list[Path]:
    """Every log and store file under `base`."""
    return [p for p in base.rglob("*") if p.is_file() and p.suffix in SUFFIXES
            or p.name.endswith((".db-wal", ".sqlite-wal"))]


def leaks(files: list[Path], base: Path, token: str) -> list[str]:
    """The files, relative to `base`, that hold `token` or anything shaped like a JWT."""
    found = []
    for path in files:
        data = path.read_bytes()
        if token.encode() in data or JWT.search(data):
            found.append(str(path.relative_to(base)))
    return found
