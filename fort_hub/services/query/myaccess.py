"""The researcher's "My access" page, the root of fort-query.

What one researcher may do now, read at request time from the fort store and the policy (through
:class:`fort_hub.access.Access` and the query runner), never from a cache: her groups and when
they end, the datasets and tables she may query (columns and declared noise), the profiles she
may start, today's quota use, her recent queries (with a download link) and whom to ask.

:func:`describe_datasets` is also the body of ``GET api/v1/datasets``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ...policy import Policy
from ...store.core import parse_time
from ...store.queries import QueryRecord
from ..pages import ServiceRoot
from .engines.base import EngineError, EngineJob
from .runner import QueryRunner

RECENT_QUERIES = 20


async def describe_datasets(
    runner: QueryRunner, policy: Policy, groups: list[str], username: str
) -> list[dict[str, Any]]:
    """The datasets *groups* may query: name, description, engine, tables with columns (from
    the engine, as the caller's role would see them), declared noise, and the engine's error
    when it could not describe one."""
    out = []
    for name in sorted(policy.datasets_for(groups, "query")):
        ds = policy.datasets[name]
        engine = runner.engines.get(ds.engine)
        group, arn = runner.role_for(policy, groups, name)
        job = EngineJob(id="describe", sql="", dataset=ds, username=username, groups=groups,
                        role_arn=arn, extra={"region": policy.aws.region, "group": group})  # fmt: skip
        try:
            columns = await engine.describe(ds, job) if engine else {}
            error = None
        except EngineError as e:
            columns, error = {}, str(e)
        out.append({
            "name": name, "description": ds.description, "engine": ds.engine,
            "tables": [{"name": t, "columns": columns.get(t, [])} for t in ds.tables],
            "noise": {c: dict(v) for c, v in ds.noise.items()},
            "error": error,
        })  # fmt: skip
    return out


def meters(usage: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Quota use as meters: label, used, max, percent and when it resets (limits that count
    nothing, such as ``max_result_rows``, are left out)."""
    labels = {
        "queries_per_day": "Queries today",
        "bytes_scanned_per_day": "Data scanned today",
        "max_concurrent_queries": "Queries running or queued now",
    }
    out = []
    for key, label in labels.items():
        u = usage.get(key)
        if not u or u.get("used") is None:
            continue
        used, top = int(u["used"]), int(u["max"])
        percent = 100 if top <= 0 else min(100, round(100 * used / top))
        out.append({
            "key": key, "label": label, "used": used, "max": top, "percent": percent,
            "resets": u.get("resets"), "bytes": key.startswith("bytes"),
        })  # fmt: skip
    return out


def duration(rec: QueryRecord) -> str:
    """ "3.2 s", "4 min 5 s" or "" (not started or not finished)."""
    start, end = parse_time(rec.started), parse_time(rec.finished)
    if start is None or end is None:
        return ""
    s = max(0.0, (end - start).total_seconds())
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(round(s), 60)
    return f"{m} min {s} s" if m < 60 else f"{m // 60} h {m % 60} min"


def query_rows(records: list[QueryRecord], now: dt.datetime) -> list[dict[str, Any]]:
    """Recent queries as the page lists them (a download only while the result is kept)."""
    out = []
    for r in records:
        expires = parse_time(r.expires)
        kept = r.state == "succeeded" and bool(r.result_path) and (expires is None or expires > now)
        out.append({
            "id": r.id, "short": r.id[:8], "dataset": r.dataset, "sql": r.sql, "state": r.state,
            "submitted": r.submitted, "duration": duration(r), "rows": r.rows,
            "error": r.error, "download": kept, "expires": r.expires,
        })  # fmt: skip
    return out


class MyAccessPage(ServiceRoot):
    """``/services/fort-query/``: "My access" for a browser, the JSON index for API clients."""

    links = (
        ("openapi", "api/v1/openapi.json"),
        ("queries", "api/v1/queries"),
        ("datasets", "api/v1/datasets"),
        ("usage", "api/v1/usage"),
    )

    async def page(self) -> None:
        app, me = self.app, self.username
        runner: QueryRunner = app.runner
        store = app.fort_store
        groups = await app.access.agroups(me)
        policy, effective = await app.access.aeffective(me)
        inflight = await store.run(runner.records.inflight_count, me)
        usage = await store.run(runner.quotas.usage, me, policy.quota_for(effective), inflight)
        recent = await store.run(runner.records.list, me, RECENT_QUERIES, None)
        await self.render_page(
            "my-access.html",
            title="My access",
            me=me,
            policy_tz=policy.tz,
            groups=[
                {"name": g, "description": policy.groups[g].description, "expires": groups.get(g)}
                for g in effective
            ],
            datasets=await describe_datasets(runner, policy, effective, me),
            profiles=policy.profiles_for(effective),
            meters=meters(usage),
            max_result_rows=usage.get("max_result_rows", {}).get("max"),
            queries=query_rows(recent, app.clock()),
            is_admin=await app.access.ais_admin(me),
            admin_group=app.admin_group,
            groups_url=f"{self.hub_auth.base_url}services/fort-groups/",
        )


__all__ = ["MyAccessPage", "describe_datasets", "duration", "meters", "query_rows"]
