"""Runs last: no JWT and no FHIR access token in any log or store file the whole suite wrote."""
from tests.conftest import TOKEN
from tests.token_leaks import leaks, written_files


def test_no_token_in_any_log_or_store_written_by_the_suite(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    files = written_files(base)
    assert any(p.suffix == ".log" for p in files), "the suite wrote no logs to check"
    assert leaks(files, base, TOKEN) == []
