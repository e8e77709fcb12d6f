"""The last good rule set, kept so that a worker started later serves what its peers serve.

gunicorn starts a new worker whenever one dies. Were that worker to read the rules folder, it would load whatever
the folder holds by then: after a tampered release that `cdsrules reload` refused, it would refuse the set too,
while its peers serve the last good one. So a set is loaded from a kept copy, never straight from the folder:

- A load copies the rules folder (hidden files aside) into a private directory and loads the copy, so what was
  checked is byte for byte what is kept. The checks are the usual ones (a released file must have the sha256 its
  manifest records), so a tampered release is still refused, and only a set that passed them is ever kept.
- A copy that loaded becomes the known-good set: `current.json` records its folder, the sha256 of its files and
  the reload marker it answers. A copy answering an earlier reload never replaces one answering a later reload.
- A worker starting loads the known-good set once its files match that sha256; if a reload was asked since the
  set was kept, it then tries the rules folder, as its peers did.

`cdsrules serve` makes the directory (mode 0700) and keeps the set it checks at start before any worker exists;
the directory goes when the server stops. Without one (an app built in a single process) loads read the rules
folder itself and nothing is kept.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from engine.versions import file_sha256

T = TypeVar("T")
CURRENT = "current.json"
LOCK = "lock"  # shared while a worker loads the known-good set, exclusive while another is kept
STAGING, KEPT = "staging", "kept"
_HIDDEN = shutil.ignore_patterns(".*")  # the reload marker, manifests being written, a checkout's .git
log = logging.getLogger(__name__)


class RulesRefused(Exception):
    """The rules did not load; the message names the files as they are in the rules folder."""


@dataclass(frozen=True)
class KeptSet:
    folder: Path
    sha256: str  # of every file in the folder (tree_sha256)
    marker: float  # the reload marker's mtime when the set was copied: the reload it answers


class KnownGood:
    """The known-good set kept under `root`, shared by the master and its workers; None: nothing is kept."""

    def __init__(self, root: Path | None):
        self.root = root

    @classmethod
    def create(cls) -> KnownGood:
        return cls(Path(tempfile.mkdtemp(prefix="cdsrules-rules-")))  # 0700: only this user reads or writes it

    def remove(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def load_and_keep(self, rules_dir: Path, marker: float, load: Callable[[Path], T]) -> T:
        """Load a copy of the rules folder; once it has loaded, it is the known-good set. Raises RulesRefused."""
        staging = None
        try:
            if self.root is not None:
                staging = self._staging()
                shutil.copytree(rules_dir, staging, ignore=_HIDDEN, dirs_exist_ok=True)
            loaded = load(staging or rules_dir)
        except Exception as error:  # noqa: BLE001 - whatever fails, the set is refused, never the process
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            raise RulesRefused(_as_in_rules_dir(describe(error), staging, rules_dir)) from error
        if staging is not None:
            try:
                self._keep(KeptSet(staging, tree_sha256(staging), marker))
            except Exception as error:  # noqa: BLE001 - the set serves here all the same; later workers load the older
                log.error("the loaded rule set could not be kept for workers started later: %s", describe(error))
        return loaded

    def load_last(self, load: Callable[[Path], T]) -> tuple[T, float] | None:
        """The known-good set, loaded, and the reload marker it answers; None if none is kept or it was changed."""
        if self.root is None or not (self.root / CURRENT).exists():
            return None
        with self._locked(fcntl.LOCK_SH):  # a set being kept meanwhile waits: its pruning would pull files away
            kept = self._current()
            if kept is None:
                return None
            actual = tree_sha256(kept.folder)
            if actual != kept.sha256:
                log.error("the known-good rule set in %s has changed since it was kept (sha256 %s, now %s); "
                          "not loading it", kept.folder, kept.sha256, actual)
                return None
            return load(kept.folder), kept.marker

    def _staging(self) -> Path:
        """A new folder to copy into; the directory is made again if something (a /tmp cleaner) removed it."""
        for folder in (self.root, self.root / STAGING, self.root / KEPT):
            folder.mkdir(mode=0o700, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.root / STAGING))

    def _keep(self, candidate: KeptSet) -> None:
        with self._locked(fcntl.LOCK_EX):
            current = self._current()
            if current is not None and current.marker > candidate.marker:
                shutil.rmtree(candidate.folder, ignore_errors=True)  # a later reload's set is kept already
                return
            folder = self.root / KEPT / candidate.folder.name
            candidate.folder.rename(folder)
            record = {"folder": folder.name, "sha256": candidate.sha256, "marker": candidate.marker}
            _write_atomically(self.root / CURRENT, json.dumps(record))
            for other in (self.root / KEPT).iterdir():
                if other != folder:
                    shutil.rmtree(other, ignore_errors=True)

    def _current(self) -> KeptSet | None:
        try:
            record = json.loads((self.root / CURRENT).read_text(encoding="utf-8"))
            return KeptSet(self.root / KEPT / record["folder"], record["sha256"], float(record["marker"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as error:  # unreadable: as if none were kept
            log.error("the record of the known-good rule set is unreadable, ignored: %s", describe(error))
            return None

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        with open(self.root / LOCK, "a") as handle:  # closing it releases the lock
            fcntl.flock(handle, mode)
            yield


def tree_sha256(folder: Path) -> str:
    """One sha256 over every file below a folder: its path and the sha256 of its bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _as_in_rules_dir(message: str, copy: Path | None, rules_dir: Path) -> str:
    """The message with the copy's paths written as the rules folder's, which is where an operator looks."""
    for name in {str(copy), str(copy.resolve())} if copy else ():
        message = message.replace(name, str(rules_dir))
    return message


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)
