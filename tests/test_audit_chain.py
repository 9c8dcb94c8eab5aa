"""The audit chain under attack: tampering is detected by ``verify`` and by ``fort-hub audit
verify``; several writer processes keep one unbroken chain. SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from fort_hub.cli import main as cli_main
from fort_hub.store import GENESIS, compute_hash

FORT_HUB = str(Path(sys.executable).with_name("fort-hub"))


def _fill(store, n=10):
    return [
        store.audit.record(f"user{i % 3}", "query.submit", f"ds{i}", "allow", f"reason {i}",
                           details={"i": i}, request_id=f"req-{i}", client="10.0.0.1")
        for i in range(n)
    ]  # fmt: skip


def _sql(store, *statements, **params):
    with store.transaction() as conn:
        for stmt in statements:
            conn.execute(text(stmt), params)


def _swap_rows(store, a, b):
    # three moves through a free seq, as a DBA with write access could do (seq <= 0 is refused)
    _sql(
        store,
        "UPDATE fort_audit_log SET seq = 999999 WHERE seq = :a",
        "UPDATE fort_audit_log SET seq = :a WHERE seq = :b",
        "UPDATE fort_audit_log SET seq = :b WHERE seq = 999999",
        a=a, b=b,
    )  # fmt: skip


def _edit_and_rehash(store, seq):
    """A smarter attacker: edit record *seq* and recompute its own hash."""
    rec = next(r for r in store.audit.iter_all() if r.seq == seq)
    forged = {**rec.as_dict(), "actor": "nobody"}
    _sql(
        store,
        "UPDATE fort_audit_log SET actor = 'nobody', hash = :h WHERE seq = :s",
        h=compute_hash(forged), s=seq,
    )  # fmt: skip


def _truncate_and_fix_head(store, keep):
    last = next(r for r in store.audit.iter_all() if r.seq == keep)
    _sql(
        store,
        "DELETE FROM fort_audit_log WHERE seq > :k",
        "UPDATE fort_audit_head SET seq = :k, hash = :h",
        k=keep, h=last.hash,
    )  # fmt: skip


# (name, tamper(store), first bad seq, words in the problem)
TAMPERING = [
    ("edit a field", lambda s: _sql(s, "UPDATE fort_audit_log SET resource = 'x' WHERE seq = 4"),
     4, "altered"),
    ("edit the details", lambda s: _sql(s, """UPDATE fort_audit_log SET details = '{"i": 99}'
                                              WHERE seq = 7"""), 7, "altered"),
    ("flip a decision", lambda s: _sql(s, "UPDATE fort_audit_log SET decision = 'deny' WHERE seq = 1"),
     1, "altered"),
    ("edit a stored hash", lambda s: _sql(s, "UPDATE fort_audit_log SET hash = :h WHERE seq = 5",
                                          h="f" * 64), 5, "altered"),
    ("edit and re-hash", lambda s: _edit_and_rehash(s, 3), 4, "altered and re-hashed"),
    ("delete a row", lambda s: _sql(s, "DELETE FROM fort_audit_log WHERE seq = 6"),
     6, "record 6 is missing"),
    ("delete the first row", lambda s: _sql(s, "DELETE FROM fort_audit_log WHERE seq = 1"),
     1, "record 1 is missing"),
    ("swap two rows", lambda s: _swap_rows(s, 2, 3), 2, "removed or reordered"),
    ("swap distant rows", lambda s: _swap_rows(s, 5, 9), 5, "removed or reordered"),
    ("truncate the tail", lambda s: _sql(s, "DELETE FROM fort_audit_log WHERE seq > 7"),
     8, "records 8..10 were removed"),
    ("delete everything", lambda s: _sql(s, "DELETE FROM fort_audit_log"),
     1, "records 1..10 were removed"),
]  # fmt: skip


@pytest.mark.parametrize(
    "tamper, bad_seq, words", [t[1:] for t in TAMPERING], ids=[t[0] for t in TAMPERING]
)
def test_tampering_is_detected(store, capsys, tamper, bad_seq, words):
    _fill(store)
    assert store.audit.verify().ok
    tamper(store)
    result = store.audit.verify()
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    assert words in result.problem
    # the CLI says the same and exits 1
    assert cli_main(["audit", "verify", "--db", store.url]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"TAMPERED at seq {bad_seq}: ") and words in out


def test_truncation_with_a_forged_head_needs_the_expected_head(store, capsys):
    _fill(store)
    assert cli_main(["audit", "head", "--db", store.url]) == 0
    kept_head = capsys.readouterr().out.strip()
    assert kept_head == f"10:{store.audit.head()[1]}"
    _truncate_and_fix_head(store, 7)
    # the database alone now looks consistent...
    assert store.audit.verify().ok
    # ...but not against the head kept elsewhere
    seq, _, digest = kept_head.partition(":")
    result = store.audit.verify(expect_head=(int(seq), digest))
    assert (result.ok, result.first_bad_seq) == (False, 8)
    assert "records 8..10 were removed (expected head is at 10)" in result.problem
    assert cli_main(["audit", "verify", "--db", store.url, "--expect-head", kept_head]) == 1
    assert "TAMPERED at seq 8" in capsys.readouterr().out


def test_expected_head_that_does_not_match_is_reported(store, capsys):
    _fill(store, 5)
    assert cli_main(["audit", "verify", "--db", store.url, "--expect-head", f"3:{'0' * 64}"]) == 1
    assert "TAMPERED at seq 3: the record does not match the expected head" in (
        capsys.readouterr().out
    )
    good = f"3:{next(r.hash for r in store.audit.iter_all() if r.seq == 3)}"
    assert cli_main(["audit", "verify", "--db", store.url, "--expect-head", good]) == 0


def test_empty_log_verifies(store, capsys):
    assert store.audit.verify().ok
    assert store.audit.head() == (0, GENESIS)
    assert cli_main(["audit", "verify", "--db", store.url]) == 0
    assert capsys.readouterr().out.strip() == "OK: 0 records, chain intact"


def test_console_script_verify_exit_codes(store):
    _fill(store, 3)
    ok = subprocess.run([FORT_HUB, "audit", "verify", "--db", store.url],
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (ok.returncode, ok.stdout.strip()) == (0, "OK: 3 records, chain intact")
    _sql(store, "UPDATE fort_audit_log SET reason = 'nothing to see' WHERE seq = 2")
    bad = subprocess.run([FORT_HUB, "audit", "verify", "--db", store.url],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 1
    assert bad.stdout.startswith("TAMPERED at seq 2: the hash does not match")
    assert "Traceback" not in bad.stderr


# ---- several writer processes ----------------------------------------------------------------

WRITER = """
import os, sys, time
from fort_hub.store import Store
url, n, go, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
store = Store(url)
while not os.path.exists(go):
    time.sleep(0.005)
for i in range(n):
    store.audit.record(name, "bench.write", str(i))
store.dispose()
"""


def run_writers(url, processes, per_process, workdir):
    """Start *processes* writer processes that begin together; returns seconds taken."""
    go = Path(workdir) / f"go-{time.monotonic_ns()}"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, str(per_process), str(go), f"w{p}"])
        for p in range(processes)
    ]
    try:
        time.sleep(1.0)  # let them import and connect
        start = time.perf_counter()
        go.touch()
        codes = [p.wait(timeout=600) for p in procs]
        elapsed = time.perf_counter() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0] * processes
    return elapsed


@pytest.mark.slow
def test_four_writer_processes_keep_one_chain(store, tmp_path):
    run_writers(store.url, 4, 2000, tmp_path)
    result = store.audit.verify()
    assert result.ok, str(result)
    assert result.checked == 8000
    assert store.audit.head()[0] == 8000
    by_writer = {}
    for rec in store.audit.iter_all():
        by_writer.setdefault(rec.actor, []).append(int(rec.resource))
    # every writer's records are all there, in the order it wrote them
    assert {w: sorted(v) == v and len(v) for w, v in by_writer.items()} == {
        f"w{p}": 2000 for p in range(4)
    }


def test_two_writer_processes_interleave(store, tmp_path):
    """A quick version of the above that always runs."""
    run_writers(store.url, 2, 150, tmp_path)
    assert store.audit.verify().ok
    assert store.audit.head()[0] == 300
    assert os.path.exists(tmp_path)


def _forked_child(store, n):
    for i in range(n):
        store.audit.record("child", "a.b", str(i))


def test_a_forked_child_keeps_the_chain(store):
    """A process forked after the store was used (e.g. a pre-fork server) writes safely."""
    import multiprocessing

    store.audit.record("parent", "a.b", "before")
    child = multiprocessing.get_context("fork").Process(target=_forked_child, args=(store, 50))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    store.audit.record("parent", "a.b", "after")
    result = store.audit.verify()
    assert result.ok and result.checked == 52
    assert [r.actor for r in store.audit.query(limit=2)] == ["parent", "child"]
