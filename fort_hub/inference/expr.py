"""Row-level arithmetic, evaluated by numpy in memory or written as SQL for a warehouse.

Every fit in :mod:`fort_hub.inference` needs only sums over rows of a few expressions (moments,
and for the logistic fit the score and its derivative at the current estimate). Writing each
expression once as a small tree and evaluating it either with numpy or as ``SUM(...)`` in SQL
makes every data path compute the same quantities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class Expr:
    """A row-level numeric expression over the columns of a table."""

    def __add__(self, other):
        return Op("+", self, lift(other))

    def __radd__(self, other):
        return Op("+", lift(other), self)

    def __sub__(self, other):
        return Op("-", self, lift(other))

    def __rsub__(self, other):
        return Op("-", lift(other), self)

    def __mul__(self, other):
        return Op("*", self, lift(other))

    def __rmul__(self, other):
        return Op("*", lift(other), self)

    def __truediv__(self, other):
        return Op("/", self, lift(other))


@dataclass(frozen=True, eq=False)
class Col(Expr):
    name: str


@dataclass(frozen=True, eq=False)
class Const(Expr):
    value: float


@dataclass(frozen=True, eq=False)
class Op(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, eq=False)
class Param(Expr):
    """A number given at evaluation time: the SQL is written (and transpiled) once, and each
    evaluation only substitutes the values (Newton's method evaluates the same sums often)."""

    name: str


@dataclass(frozen=True, eq=False)
class Named(Expr):
    """A per-row value computed once in SQL (an inner SELECT column) and used by several sums."""

    name: str
    expr: Expr


@dataclass(frozen=True, eq=False)
class Logistic(Expr):
    """``1 / (1 + exp(-arg))``, with *arg* clipped to [-700, 700] so that no engine overflows."""

    arg: Expr


def lift(value) -> Expr:
    return value if isinstance(value, Expr) else Const(float(value))


CLIP = 700.0


def evaluate(expr: Expr, columns: dict[str, np.ndarray], memo: dict, params: dict):
    """The value of *expr* on every row (float64 arrays); *memo* keeps the values of
    :class:`Named` nodes between calls (by name), as the SQL's inner SELECT does."""
    if isinstance(expr, Named):
        if expr.name not in memo:
            memo[expr.name] = evaluate(expr.expr, columns, memo, params)
        return memo[expr.name]
    if isinstance(expr, Col):
        value = columns[expr.name]
    elif isinstance(expr, Const):
        value = expr.value
    elif isinstance(expr, Param):
        value = float(params[expr.name])
    elif isinstance(expr, Logistic):
        arg = np.clip(evaluate(expr.arg, columns, memo, params), -CLIP, CLIP)
        value = 1.0 / (1.0 + np.exp(-arg))
    else:
        left = evaluate(expr.left, columns, memo, params)
        right = evaluate(expr.right, columns, memo, params)
        value = OPS[expr.op](left, right)
    return value


OPS = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: float) -> str:
    if not np.isfinite(value):
        raise ValueError(f"a non-finite number ({value}) cannot be sent to the warehouse")
    text = repr(float(value))
    return f"({text})" if text.startswith("-") else text


PLACEHOLDER = "fortparam_{}_"


def to_sql(expr: Expr, inner: bool) -> str:
    """*expr* in generic SQL (double quoted identifiers, ``CAST(... AS DOUBLE)``, ``EXP``,
    ``LEAST``/``GREATEST``), for the inner SELECT over the table (*inner*) or for the sums over
    its rows, where columns and :class:`Named` values are the inner SELECT's columns. A
    :class:`Param` is a placeholder identifier, replaced by its value before each run."""
    if isinstance(expr, Col):
        return f"CAST({quote(expr.name)} AS DOUBLE)" if inner else quote(expr.name)
    if isinstance(expr, Named):
        return to_sql(expr.expr, inner) if inner else quote(expr.name)
    if isinstance(expr, Const):
        return literal(expr.value)
    if isinstance(expr, Param):
        return quote(PLACEHOLDER.format(expr.name))
    if isinstance(expr, Logistic):
        arg = f"LEAST(GREATEST({to_sql(expr.arg, inner)}, {-CLIP}), {CLIP})"
        return f"(1.0 / (1.0 + EXP(-{arg})))"
    return f"({to_sql(expr.left, inner)} {expr.op} {to_sql(expr.right, inner)})"


def named_nodes(exprs) -> dict[str, Named]:
    """The :class:`Named` values the sums use (not looking inside them), by name."""
    out: dict[str, Named] = {}
    stack = list(exprs)
    while stack:
        e = stack.pop()
        if isinstance(e, Named):
            out.setdefault(e.name, e)
        elif isinstance(e, Op):
            stack += [e.left, e.right]
        elif isinstance(e, Logistic):
            stack.append(e.arg)
    return out
