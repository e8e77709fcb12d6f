"""A small, safe arithmetic language for derived facts: `min(current_daily_dose_mg + dose_step_mg, max_daily_dose_mg)`.

Only numbers, names (facts and parameters), + - * / % (remainder), unary minus and a fixed list of functions are
allowed; anything else is rejected when the ruleset is loaded, so nothing unexpected is ever executed.
"""
from __future__ import annotations

import ast
import datetime as dt
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _days_between(start: dt.date, end: dt.date) -> int:
    """Calendar days from start to end (negative when end is earlier)."""
    return (end - start).days


def _years_between(start: dt.date, end: dt.date) -> int:
    """Completed years from start to end, as ages are counted."""
    years = end.year - start.year
    return years - 1 if (end.month, end.day) < (start.month, start.day) else years


def _add_days(day: dt.date, days: float) -> dt.date:
    return day + dt.timedelta(days=int(days))


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "days_between": _days_between,
    "years_between": _years_between,
    "add_days": _add_days,
    "min": min,
    "max": max,
    "abs": abs,
    "round": round,
}

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Mod: operator.mod}


class ExpressionError(ValueError):
    """The expression text is not in the allowed language."""


@dataclass(frozen=True)
class Expression:
    text: str
    tree: ast.Expression
    names: frozenset[str]  # the facts and parameters it reads
    looked_up: frozenset[str] = frozenset()  # every name in it, functions' too: all that evaluate may look up

    def evaluate(self, values: dict[str, Any]) -> Any:
        return _eval(self.tree.body, values)


def parse_expression(text: str) -> Expression:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot read the expression '{text}': {exc.msg}") from None
    names: set[str] = set()
    for node in ast.walk(tree):
        _check_node(node, names)
    looked_up = frozenset(node.id for node in ast.walk(tree) if isinstance(node, ast.Name))
    return Expression(text, tree, frozenset(names), looked_up)


def _check_node(node: ast.AST, names: set[str]) -> None:
    if isinstance(node, (ast.Expression, ast.Load, ast.operator, ast.unaryop)):
        if isinstance(node, ast.operator) and type(node) not in _BINARY:
            raise ExpressionError(f"the operator '{type(node).__name__}' is not allowed; use + - * / %")
        return
    if isinstance(node, ast.BinOp) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)):
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            allowed = ", ".join(FUNCTIONS)
            raise ExpressionError(f"only these functions may be called: {allowed}")
        return
    if isinstance(node, ast.Name):
        if node.id not in FUNCTIONS:
            names.add(node.id)
        return
    raise ExpressionError(f"'{ast.unparse(node) if hasattr(ast, 'unparse') else node}' is not allowed in an expression")


def _eval(node: ast.AST, values: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in values:
            raise ExpressionError(f"'{node.id}' has no value")
        return values[node.id]
    if isinstance(node, ast.UnaryOp):
        return -_eval(node.operand, values)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):  # the only calls parse_expression allows
        return FUNCTIONS[node.func.id](*(_eval(arg, values) for arg in node.args))
    raise ExpressionError("unsupported expression")
