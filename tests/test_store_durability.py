"""What SQLite's `synchronous=NORMAL` can and cannot lose (store/database.py): an acknowledged audit write survives
SIGKILL of the process that made it, and a commit does not wait for the disk, so a power loss may take the last
ones back."""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys

import pytest

from store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(90)

# Writes audit records one after another and prints each one's hookInstance once add_audit has acknowledged it.
_WRITE_AND_ACKNOWLEDGE = """
import sys, uuid
from store import AuditRecord, Store
store = Store(sys.argv[1])
for n in range(int(sys.argv[2])):
    record = AuditRecord(decision_id=str(uuid.uuid4()), hook_instance=f"call-{n}", service="s", hook="order-sign",
                         patient_id="p1", ruleset="r", version="1", fired_rules=[],
                         cards=[{"uuid": str(uuid.uuid4()), "topic": "t", "rule_id": "x"}], latency_ms=1.0)
    if not store.add_audit(record):
        sys.exit(3)
    print(record.hook_instance, flush=True)
"""


def _migrated(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    Store(url).migrate()
    return url


def test_every_acknowledged_write_survives_sigkill_of_its_process(tmp_path):
    url = _migrated(tmp_path)
    writer = subprocess.Popen([sys.executable, "-c", _WRITE_AND_ACKNOWLEDGE, url, "100000"], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    acknowledged = []
    try:
        assert writer.stdout is not None
        while len(acknowledged) < 300:
            acknowledged.append(writer.stdout.readline().strip())
        os.kill(writer.pid, signal.SIGKILL)  # mid-stream: most likely inside the next write
        acknowledged += [line.strip() for line in writer.stdout]  # what was acknowledged before the kill landed
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    stored = {r["hook_instance"] for r in Store(url).audit_rows()}
    assert set(acknowledged) <= stored
    assert len(stored) - len(acknowledged) <= 1, "at most the write in progress landed unacknowledged"
    with sqlite3.connect(tmp_path / "store.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_commit_returns_without_waiting_for_the_disk(tmp_path):
    """With NORMAL no commit fsyncs (under FULL each of the 50 did): the price of the speed is the power-loss
    window the module docstring names."""
    url = _migrated(tmp_path)
    traced = subprocess.run(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(tmp_path / "trace"),
                             sys.executable, "-c", _WRITE_AND_ACKNOWLEDGE, url, "50"], cwd=REPO, text=True,
                            capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if traced.returncode != 0 and "ptrace" in traced.stderr:
        pytest.skip(f"strace cannot trace here: {traced.stderr.strip()[:200]}")
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout.split() == [f"call-{n}" for n in range(50)]
    syncs = [line for line in (tmp_path / "trace").read_text().splitlines() if "sync(" in line]
    assert len(syncs) < 5, f"{len(syncs)} fsyncs for 50 commits"
