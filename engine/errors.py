"""Errors a pharmacist reads: where (file, line, column, path inside the document) and why."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RulesetError:
    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    path: tuple[str | int, ...] = ()
    message: str = ""

    @property
    def path_text(self) -> str:
        return ".".join(str(p) for p in self.path) or "(document)"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: at {self.path_text}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column,
                "path": list(self.path), "message": self.message}


@dataclass
class RulesetErrors(Exception):
    """Every problem found in one or more files; raised instead of stopping at the first."""

    errors: list[RulesetError] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class EvaluationError(Exception):
    """Evaluation could not complete: bad input facts, a failing action, or a conflict."""
