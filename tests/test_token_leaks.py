"""The scan for tokens in what the suite wrote (tests/token_leaks.py), on files made here."""
import pytest

from tests.token_leaks import leaks, written_files

TOKEN = "a-token-that-must-not-be-written"


def test_a_wal_file_checkpointed_away_during_the_scan_is_passed_over_but_its_database_is_read(tmp_path):
    (tmp_path / "store.db").write_bytes(b"SQLite format 3\0 ... " + TOKEN.encode())
    (tmp_path / "store.db-wal").write_bytes(b"frames")
    (tmp_path / "notes.txt").write_text(TOKEN)  # not a log or a store: not scanned
    files = written_files(tmp_path)
    assert sorted(p.name for p in files) == ["store.db", "store.db-wal"]
    (tmp_path / "store.db-wal").unlink()  # its last connection closed meanwhile
    assert leaks(files, tmp_path, TOKEN) == ["store.db"]


def test_any_other_file_gone_during_the_scan_is_an_error(tmp_path):
    (tmp_path / "server.log").write_text("started")
    files = written_files(tmp_path)
    (tmp_path / "server.log").unlink()
    with pytest.raises(FileNotFoundError):
        leaks(files, tmp_path, TOKEN)
