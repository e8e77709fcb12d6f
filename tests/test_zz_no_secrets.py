"""Runs last: no JWT and no FHIR access token in any log or store file the whole suite wrote."""
import re

from tests.conftest import TOKEN

JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}")


def test_no_token_in_any_log_or_store_written_by_the_suite(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    files = [p for p in base.rglob("*") if p.is_file() and p.suffix in (".log", ".db", ".sqlite", ".jsonl", ".csv")
             or p.name.endswith((".db-wal", ".sqlite-wal"))]
    assert any(p.suffix == ".log" for p in files), "the suite wrote no logs to check"
    leaks = []
    for path in files:
        data = path.read_bytes()
        if TOKEN.encode() in data or JWT.search(data):
            leaks.append(str(path.relative_to(base)))
    assert leaks == []
