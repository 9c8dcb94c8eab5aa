"""How the notebook client shows things: a progress line updated in place, the caller's usage
as a small table, the datasets with their columns. Plain objects (no ipywidgets): each has a
readable ``repr`` (a terminal, plain Python) and ``_repr_html_`` (Jupyter); the data stays
reachable as the dict or list it came from."""

from __future__ import annotations

import datetime as dt
import html
import sys
from typing import Any


def human_bytes(n: float | None) -> str:
    """``1234567`` -> ``"1.2 MB"`` (powers of 1000, as quotas are written: ``100G``)."""
    if n is None:
        return ""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover - unreachable


def _when(iso: str | None) -> str:
    """An ISO time as ``2026-12-03 00:00 UTC`` (the quotas' day is the UTC day)."""
    if not iso:
        return ""
    try:
        t = dt.datetime.fromisoformat(iso).astimezone(dt.UTC)
    except ValueError:
        return iso
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _table(head: list[str], rows: list[list[str]]) -> tuple[str, str]:
    """(text, html) of a small table."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [head, *rows]]  # fmt: skip
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return "\n".join(lines), f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


class ProgressText:
    """A line of text shown as itself (no quotes) by IPython's display machinery."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(self.text)


def _kernel_display():
    """IPython's ``display`` when running in a Jupyter kernel, else None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    from IPython.display import display

    return display


class Progress:
    """The one status line of a query being waited for. In Jupyter: a display created on the
    first :meth:`show` and updated in place (a query that finishes within its first poll shows
    nothing); elsewhere: a line on stderr rewritten with ``\\r``."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.display = _kernel_display() if enabled else None
        self.handle = None
        self.shown = False

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        self.shown = True
        if self.display is None:
            sys.stderr.write("\r" + text.ljust(70))
            sys.stderr.flush()
        elif self.handle is None:
            self.handle = self.display(ProgressText(text), display_id=True)
        else:
            self.handle.update(ProgressText(text))

    def done(self, text: str, always: bool = True) -> None:
        """The final state; with ``always=False`` only if a line is shown already."""
        if not self.enabled or not (always or self.shown):
            return
        self.show(text)
        if self.display is None:
            sys.stderr.write("\n")
            sys.stderr.flush()


LIMIT_LABELS = {
    "max_concurrent_queries": "queries running at once",
    "queries_per_day": "queries today",
    "bytes_scanned_per_day": "bytes scanned today",
    "max_result_rows": "rows per result",
}


class Usage(dict):
    """``FortClient.usage()``: a dict ``{limit: {"used", "max", "resets"}}`` (as the API's
    ``GET usage`` ``limits``) shown as a table."""

    def __init__(self, limits: dict[str, dict], user: str | None = None):
        super().__init__(limits)
        self.user = user

    def _rows(self) -> list[list[str]]:
        rows = []
        for name, v in self.items():
            fmt = human_bytes if name.startswith("bytes") else (lambda x: f"{x:,}")
            used = "" if v.get("used") is None else fmt(v["used"])
            maximum = "" if v.get("max") is None else fmt(v["max"])
            rows.append([LIMIT_LABELS.get(name, name), used, maximum, _when(v.get("resets"))])
        return rows

    def _render(self) -> tuple[str, str]:
        return _table(["limit", "used", "max", "resets"], self._rows())

    def __repr__(self) -> str:
        who = f" of {self.user}" if self.user else ""
        return f"fort-query usage{who}:\n" + self._render()[0]

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        who = f" of {html.escape(self.user)}" if self.user else ""
        return f"<p><b>fort-query usage{who}</b></p>" + self._render()[1]


class Datasets(list):
    """``FortClient.datasets()``: the API's list of datasets (dicts), shown as one table per
    dataset: its tables' columns, their types and the noise the dataset declares."""

    @staticmethod
    def _rows(d: dict[str, Any]) -> list[list[str]]:
        noise = d.get("noise") or {}
        rows = []
        for t in d.get("tables") or []:
            for c in t.get("columns") or []:
                n = noise.get(c["name"])
                declared = (
                    f"{n.get('distribution', '')} (variance {n.get('variance')})" if n else ""
                )
                rows.append([t["name"], c["name"], str(c.get("type", "")), declared])
        return rows

    def _parts(self) -> list[tuple[str, str, str | None]]:
        return [(d["name"], d.get("description") or "", d.get("error")) for d in self]

    def __repr__(self) -> str:
        out = []
        for d, (name, desc, error) in zip(self, self._parts(), strict=True):
            out.append(f"{name}: {desc}" if desc else name)
            if error:
                out.append(f"  (columns unavailable: {error})")
            text, _ = _table(["table", "column", "type", "noise"], self._rows(d))
            out += ["  " + line for line in text.splitlines()]
        return "\n".join(out) if out else "(no datasets: your groups are granted none)"

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        out = []
        for d, (name, desc, error) in zip(self, self._parts(), strict=True):
            out.append(f"<p><b>{html.escape(name)}</b> {html.escape(desc)}</p>")
            if error:
                out.append(f"<p>columns unavailable: {html.escape(error)}</p>")
            out.append(_table(["table", "column", "type", "noise"], self._rows(d))[1])
        return "".join(out) or "<p>No datasets: your groups are granted none.</p>"
