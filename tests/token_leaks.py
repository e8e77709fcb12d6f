"""The files the suite wrote that hold a JWT or the FHIR access token (tests/test_zz_no_secrets.py, and the session's
end under pytest-xdist, where each worker writes under a folder of its own)."""
from __future__ import annotations

import re
from pathlib import Path

JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}")
SUFFIXES = (".log", ".db", ".sqlite", ".jsonl", ".csv")
WAL_SUFFIXES = (".db-wal", ".sqlite-wal")


def written_files(base: Path) -> list[Path]:
    """Every log and store file under `base`."""
    return [p for p in base.rglob("*") if p.is_file() and (p.suffix in SUFFIXES or _is_wal(p))]


def leaks(files: list[Path], base: Path, token: str) -> list[str]:
    """The files, relative to `base`, that hold `token` or anything shaped like a JWT.

    A store's -wal file is removed when its last connection closes (a test's Store collected while this runs), after
    SQLite has copied its pages into the database. So the -wal files are read first, and one gone by then holds
    nothing that its database, read after it, does not."""
    found = []
    for path in sorted(files, key=lambda p: not _is_wal(p)):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if _is_wal(path):
                continue
            raise
        if token.encode() in data or JWT.search(data):
            found.append(str(path.relative_to(base)))
    return found


def _is_wal(path: Path) -> bool:
    return path.name.endswith(WAL_SUFFIXES)
