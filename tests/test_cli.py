"""``fort-hub check-policy`` and ``fort-hub audit verify|head|export``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from fort_hub.cli import main

FORT_HUB = str(Path(sys.executable).with_name("fort-hub"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FORT_HUB, *args], capture_output=True, text=True, timeout=120)


# ---- check-policy --------------------------------------------------------------------------------


def test_check_policy_ok(example_policy_path):
    done = run("check-policy", str(example_policy_path))
    assert done.returncode == 0
    assert done.stdout == "OK: 3 groups, 2 datasets, 3 grants, 4 profiles\n"


def test_check_policy_prints_every_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\n"
        "groups: [{name: a}, {name: a}]\n"
        "grants:\n"
        "  - {group: b, datasets: [nope], actions: [query]}\n"
        "aws: {user_prefix: users/}\n"
    )
    done = run("check-policy", str(bad))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{bad}:2: groups[1].name: duplicate group 'a'",
        f"{bad}:4: grants[0].group: unknown group 'b'",
        f"{bad}:4: grants[0].datasets[0]: unknown dataset 'nope'",
        f"{bad}:5: aws.user_prefix: 'users/' must contain '{{username}}' exactly once",
    ]
    assert done.stderr == "4 error(s)\n"


def test_check_policy_missing_file(tmp_path, capsys):
    assert main(["check-policy", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read the policy file" in capsys.readouterr().out


# ---- audit ---------------------------------------------------------------------------------------


@pytest.fixture
def filled(store):
    rows = [
        ("alice", "query.submit", "2026-10-31T23:59:59.000000+00:00"),
        ("alice", "credentials.issue", "2026-11-01T00:00:00.000000+00:00"),
        ("bob", "query.submit", "2026-11-02T10:00:00.000000+00:00"),
        ("alice", "query.submit", "2026-11-03T10:00:00.000000+00:00"),
        ("carol", "spawn.start", "2026-11-04T10:00:00.000000+00:00"),
    ]
    for actor, action, _ in rows:
        store.audit.record(actor, action, "r", "allow", "ok", details={"n": 1})
    # give the records known times, then re-chain them as if written at those times
    _rewrite_times(store, [ts for _, _, ts in rows])
    assert store.audit.verify().ok
    return store


def _rewrite_times(store, times):
    from fort_hub.store import GENESIS, compute_hash

    prev = GENESIS
    recs = list(store.audit.iter_all())
    with store.transaction() as conn:
        for rec, ts in zip(recs, times, strict=True):
            fields = {**rec.as_dict(), "ts": ts, "prev_hash": prev}
            digest = compute_hash(fields)
            conn.execute(
                text(
                    "UPDATE fort_audit_log SET ts = :ts, prev_hash = :p, hash = :h WHERE seq = :s"
                ),
                {"ts": ts, "p": prev, "h": digest, "s": rec.seq},
            )
            prev = digest
        conn.execute(text("UPDATE fort_audit_head SET hash = :h"), {"h": prev})


def _export(capsys, store, *args):
    assert main(["audit", "export", "--db", store.url, *args]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert err == f"exported {len(records)} record(s)\n"
    return [(r["seq"], r["actor"], r["action"]) for r in records], records


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], [1, 2, 3, 4, 5]),
        (["--user", "alice"], [1, 2, 4]),
        (["--action", "query.submit"], [1, 3, 4]),
        (["--since", "2026-11-01T00:00:00"], [2, 3, 4, 5]),
        (["--since", "2026-11-01"], [2, 3, 4, 5]),
        (["--since", "2026-11-01T01:00:00+01:00"], [2, 3, 4, 5]),  # an offset is honoured
        (["--since", "2026-11-02T10:00:00.000001"], [4, 5]),
        (["--user", "alice", "--action", "query.submit", "--since", "2026-11-01"], [4]),
        (["--user", "nobody"], []),
    ],
)
def test_export_filters(filled, capsys, args, expected):
    got, records = _export(capsys, filled, *args)
    assert [seq for seq, _, _ in got] == expected
    for rec in records:  # every exported record is complete
        assert set(rec) == {
            "seq", "ts", "actor", "action", "resource", "decision", "reason", "details",
            "request_id", "client", "prev_hash", "hash",
        }  # fmt: skip
        assert rec["details"] == {"n": 1}


def test_export_to_a_file(filled, tmp_path, capsys):
    out = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "--db", filled.url, "--user", "bob", "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    [line] = out.read_text().splitlines()
    assert json.loads(line)["actor"] == "bob"


def test_export_bad_since(filled, capsys):
    assert main(["audit", "export", "--db", filled.url, "--since", "last tuesday"]) == 2
    err = capsys.readouterr().err
    assert "--since 'last tuesday' is not understood: use today, yesterday, 7d" in err


def test_export_user_finds_actor_or_subject(store, capsys):
    """#14: ``--user dave`` finds what dave did and what was done to him (an admin adding him,
    the reconciler removing him from a hub group, someone reading his query)."""
    store.audit.record("dave", "auth.login", "facebook", "allow", "signed in")
    store.audit.record("admin", "groups.add", "groups/ads-study/members/dave", "allow", "added",
                       details={"group": "ads-study", "user": "dave"})  # fmt: skip
    store.audit.record("alice", "query.read", "q1", "deny", "not yours", details={"owner": "dave"})
    store.audit.record("admin", "groups.add", "groups/ads-study/members/davey", "allow", "added",
                       details={"group": "ads-study", "user": "davey"})  # fmt: skip
    store.audit.record("carol", "spawn.start", "server:dave_x/", "allow", "ok")
    got, _ = _export(capsys, store, "--user", "dave")
    assert [seq for seq, _, _ in got] == [1, 2, 3]
    # the store's query (the admin page and API) finds the same records, newest first
    assert [r.seq for r in store.audit.query(user="dave")] == [3, 2, 1]


def test_export_action_prefix(filled, capsys):
    got, _ = _export(capsys, filled, "--action", "query")
    assert [seq for seq, _, _ in got] == [1, 3, 4]
    got, _ = _export(capsys, filled, "--action", "spawn")
    assert [(seq, action) for seq, _, action in got] == [(5, "spawn.start")]
    assert [r.seq for r in filled.audit.query(action="spawn")] == [5]
    assert [r.seq for r in filled.audit.query(action="query.")] == [4, 3, 1]


def test_head_and_expect_head_detect_truncation(store):
    for i in range(6):
        store.audit.record("alice", "query.submit", str(i))
    head = run("audit", "head", "--db", store.url)
    assert head.returncode == 0
    kept = head.stdout.strip()
    assert kept.startswith("6:")
    # an attacker drops the last two records and moves the head row back
    last_kept = next(r for r in store.audit.iter_all() if r.seq == 4)
    with store.transaction() as conn:
        conn.execute(text("DELETE FROM fort_audit_log WHERE seq > 4"))
        conn.execute(text("UPDATE fort_audit_head SET seq = 4, hash = :h"), {"h": last_kept.hash})
    assert run("audit", "verify", "--db", store.url).returncode == 0  # consistent on its own
    done = run("audit", "verify", "--db", store.url, "--expect-head", kept)
    assert done.returncode == 1
    assert done.stdout.strip() == (
        "TAMPERED at seq 5: records 5..6 were removed (expected head is at 6) (4 records checked)"
    )


@pytest.mark.parametrize("bad", ["6", "x:y", f"six:{'a' * 64}", "6:abc"])
def test_expect_head_must_be_seq_colon_hash(store, capsys, bad):
    assert main(["audit", "verify", "--db", store.url, "--expect-head", bad]) == 2
    assert "--expect-head must be SEQ:HASH" in capsys.readouterr().err


@pytest.mark.parametrize(
    "url, message",
    [
        ("notaurl", "error: Could not parse SQLAlchemy URL"),
        ("mysql://h/db", "error: unsupported store URL"),
        ("sqlite:////nonexistent-dir/fort.sqlite", "error: the fort store is unavailable"),
    ],
)
def test_audit_bad_store_is_a_clear_error(url, message):
    done = run("audit", "verify", "--db", url)
    assert done.returncode == 2
    assert done.stderr.startswith(message)
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("cmd", ["verify", "head", "export"])
def test_audit_on_a_store_without_an_audit_log_says_so(store_url, cmd):
    """#10: it said "store unavailable: no such table" (SQLite) for a typo'd --db."""
    from sqlalchemy import create_engine

    from fort_hub.store.core import normalize_url

    engine = create_engine(normalize_url(store_url))  # a database fort-hub never opened
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE unrelated (x INTEGER)"))
    engine.dispose()
    done = run("audit", cmd, "--db", store_url)
    assert done.returncode == 2
    assert done.stderr.startswith("error: there is no audit log in ")
    assert "(no fort_audit_log table): check --db, it must be the fort store" in done.stderr
    assert "no such table" not in done.stderr and "unavailable" not in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_version_and_help():
    assert run("--version").stdout.startswith("fort-hub ")
    done = run("audit", "--help")
    assert done.returncode == 0 and "verify" in done.stdout and "export" in done.stdout


def test_demo_help_is_plain_text():
    done = run("demo", "--help")
    assert done.returncode == 0
    assert "Run the whole fort-hub platform on this machine" in done.stdout
    assert 'make demo DEMO_ARGS="--port 8080 --reset"' in done.stdout
    assert "``" not in done.stdout and ":class:" not in done.stdout
    assert "``" not in run("--help").stdout
