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
        return product(self, lift(other))

    def __rmul__(self, other):
        return product(lift(other), self)

    def __truediv__(self, other):
        other = lift(other)
        return self if is_one(other) else Op("/", self, other)


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


def is_one(e: Expr) -> bool:
    return isinstance(e, Const) and e.value == 1.0


def product(left: Expr, right: Expr) -> Expr:
    """left * right, without multiplications by one (the intercept's column of ones)."""
    if is_one(left):
        return right
    return left if is_one(right) else Op("*", left, right)


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


def to_sql(expr: Expr, raw: bool) -> str:
    """*expr* in generic SQL (double quoted identifiers, ``CAST(... AS DOUBLE)``, ``EXP``,
    ``LEAST``/``GREATEST``). *raw*: over the table's own columns (cast to DOUBLE); else over a
    SELECT that already cast them. A :class:`Named` value is a column of an inner SELECT (see
    :func:`named_levels`); a :class:`Param` a placeholder replaced by its value for each run."""
    if isinstance(expr, Col):
        return f"CAST({quote(expr.name)} AS DOUBLE)" if raw else quote(expr.name)
    if isinstance(expr, Named):
        return quote(expr.name)
    if isinstance(expr, Const):
        return literal(expr.value)
    if isinstance(expr, Param):
        return quote(PLACEHOLDER.format(expr.name))
    if isinstance(expr, Logistic):
        arg = f"LEAST(GREATEST({to_sql(expr.arg, raw)}, {-CLIP}), {CLIP})"
        return f"(1.0 / (1.0 + EXP(-{arg})))"
    return f"({to_sql(expr.left, raw)} {expr.op} {to_sql(expr.right, raw)})"


def named_levels(exprs) -> list[dict[str, Named]]:
    """The :class:`Named` values *exprs* use, by level: level 0 uses none, level L uses some of
    level L - 1 (each level is one nested SELECT)."""
    level: dict[str, int] = {}
    nodes: dict[str, Named] = {}

    def visit(e: Expr) -> int:  # the level a value over *e* needs
        if isinstance(e, Named):
            if e.name not in level:
                level[e.name] = visit(e.expr)
                nodes[e.name] = e
            return level[e.name] + 1
        if isinstance(e, Op):
            return max(visit(e.left), visit(e.right))
        if isinstance(e, Logistic):
            return visit(e.arg)
        return 0

    for e in exprs:
        visit(e)
    out: list[dict[str, Named]] = [{} for _ in range(max(level.values(), default=-1) + 1)]
    for name, lv in level.items():
        out[lv][name] = nodes[name]
    return out
