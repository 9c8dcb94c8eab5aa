"""#10 finding 9: an audit row with ``seq <= 0`` ("admin added mallory to admins") passed
``fort-hub audit verify`` and ``audit export`` (both walk ``seq > 0``) but showed on the admin
page and the audit API. The schema refuses such rows (a CHECK constraint; existing stores are
upgraded), ``verify`` reports any that an old store holds, and no reader shows them. On SQLite
and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from fort_hub.cli import main
from fort_hub.store import Store, StoreError
from tests.forged_audit import FORGED_REASON, forge_row, legacy_audit_table


def _fill(store, n=3):
    for i in range(n):
        store.audit.record("admin", "groups.add", f"groups/urls-study/members/u{i}", "allow")


@pytest.mark.parametrize("seq", [0, -1])
def test_the_schema_refuses_a_row_outside_the_chain(store, seq):
    _fill(store)
    with pytest.raises(StoreError, match="ck_fort_audit_log_seq_positive"):
        forge_row(store, seq)
    with (
        pytest.raises(StoreError, match="ck_fort_audit_log_seq_positive"),
        store.transaction() as c,
    ):
        c.execute(text("UPDATE fort_audit_log SET seq = :s WHERE seq = 3"), {"s": seq})
    assert store.audit.verify().ok and len(store.audit.query()) == 3


def test_an_existing_store_is_upgraded_and_its_forged_rows_reported(store_url, capsys):
    old = Store(store_url)
    _fill(old)
    legacy_audit_table(old)
    forge_row(old, 0)  # what the finding did: the old schema took it
    old.dispose()

    store = Store(store_url)  # start-up upgrades the table
    try:
        with pytest.raises(StoreError, match="ck_fort_audit_log_seq_positive"):
            forge_row(store, -1)
        # no reader shows the forged row; verify names it
        assert [r.seq for r in store.audit.query()] == [3, 2, 1]
        assert store.audit.query(resource="groups/admins/members/mallory") == []
        assert [r.seq for r in store.audit.iter_all()] == [1, 2, 3]
        result = store.audit.verify()
        assert not result.ok and result.first_bad_seq == 0
        assert "1 record(s) with seq <= 0 are outside the chain: forged" in result.problem
        store.audit.record("alice", "query.submit", "q")  # the chain goes on
        assert [r.seq for r in store.audit.query(limit=1)] == [4]
    finally:
        store.dispose()
    Store(store_url).dispose()  # the upgrade is idempotent

    assert main(["audit", "verify", "--db", store_url]) == 1
    out = capsys.readouterr().out
    assert out.startswith("TAMPERED at seq 0: 1 record(s) with seq <= 0 are outside the chain")
    assert main(["audit", "export", "--db", store_url]) == 0
    exported = capsys.readouterr()
    assert FORGED_REASON not in exported.out and exported.err == "exported 4 record(s)\n"
