"""Two replicas of fort-query and of fort-credentials as real processes, each pair behind a
round-robin front, sharing one PostgreSQL store and one S3 result bucket (moto): any replica
answers for any query (status, result, cancel), the credentials rate limit is shared, and a
replica killed during a query leaves that query failed with a reason, its slot freed, the
audit chain intact."""

from __future__ import annotations

import secrets
import time

import boto3
import pyarrow as pa
import pytest
import requests

from fort_hub import scopes
from fort_hub.dev.replicas import ReplicatedService
from fort_hub.services.query.finals import LOST_REASON
from fort_hub.store import Store
from tests.conftest import EXAMPLE_POLICY, PG_URL, require_postgres
from tests.query_support import ADMIN, USE, FakeHubApi, make_datasets
from tests.replicas import service_env

pytestmark = pytest.mark.postgres
SLOW = "SELECT count(*) FROM url_shares a, url_shares b, url_shares c, url_shares d, url_shares e"
CREDS = [scopes.access(scopes.CREDENTIALS_SERVICE), scopes.CREDENTIALS_AWS]
QPATH = "/services/fort-query/api/v1/"
CPATH = "/services/fort-credentials/api/v1/aws/credentials?role=fort-urls-study"
PER_MINUTE = 4


@pytest.fixture(scope="module")
def pg_schema_url():
    require_postgres()
    import psycopg

    name = "t_" + secrets.token_hex(6)
    raw = PG_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{name}"
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture(scope="module")
def stack(tmp_path_factory, pg_schema_url, moto_url):
    work = tmp_path_factory.mktemp("replicas")
    make_datasets(work)
    policy = work / "policy.yaml"
    policy.write_text(
        EXAMPLE_POLICY.read_text().replace(
            "credential_requests_per_minute: 60", f"credential_requests_per_minute: {PER_MINUTE}"
        )
    )
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    boto3.client("s3", endpoint_url=moto_url, **_keys(aws)).create_bucket(Bucket="fort-results")
    hub = FakeHubApi({
        "alice-token": ("alice", USE + CREDS), "admin-token": ("admin", ADMIN),
        "bob-token": ("bob", USE + CREDS),
    })  # fmt: skip
    env = service_env(hub.api_url, aws)

    def common(name):
        return [
            f"c.FortSettings.policy_file = {str(policy)!r}",
            f"c.FortSettings.store_url = {pg_schema_url!r}",
            f"c.FortServiceApp.service_name = {name!r}",
            f"c.HubOAuth.api_url = {hub.api_url!r}",
            f"c.HubOAuth.access_scopes = {{{scopes.access(name)!r}}}",
        ]

    def query_config(i):
        return [
            *common(scopes.QUERY_SERVICE),
            'c.QueryService.result_store_class = "fort_hub.services.query.results_s3.S3ResultStore"',
            'c.S3ResultStore.bucket = "fort-results"',
            f"c.S3ResultStore.endpoint_url = {moto_url!r}",
            f"c.S3ResultStore.spool_dir = {str(work / f'spool-{i}')!r}",
            f'c.QueryService.replica_name = "fort-query-{i}"',
            "c.QueryService.lease_ttl = 3",
            "c.QueryService.heartbeat_interval = 0.5",
        ]

    def credentials_config(i):
        return [
            *common(scopes.CREDENTIALS_SERVICE),
            'c.CredentialsService.sts_backend_class = "stub"',
        ]

    services = {
        "query": ReplicatedService(scopes.QUERY_SERVICE, 2, work, query_config, env),
        "credentials": ReplicatedService(
            scopes.CREDENTIALS_SERVICE, 2, work, credentials_config, env
        ),
    }
    try:
        for s in services.values():
            s.start()
        store = Store(pg_schema_url)
        yield {**services, "store": store, "work": work}
        store.dispose()
    finally:
        for s in services.values():
            s.stop()
        hub.stop()


def _keys(aws: dict) -> dict:
    return {"aws_access_key_id": aws["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"], "region_name": "us-east-1"}  # fmt: skip


def h(token="alice-token"):
    return {"Authorization": f"token {token}"}


def submit(base: str, sql: str, token="alice-token") -> str:
    r = requests.post(base + QPATH + "queries", json={"sql": sql, "dataset": "url_shares"},
                      headers=h(token), timeout=30)  # fmt: skip
    assert r.status_code == 202, r.text
    return r.json()["id"]


def status(base: str, qid: str, wait: int = 0, token="alice-token") -> dict:
    r = requests.get(f"{base}{QPATH}queries/{qid}", params={"wait": wait} if wait else None,
                     headers=h(token), timeout=90)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


def wait_state(base: str, qid: str, states: tuple[str, ...], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = status(base, qid)
        if q["state"] in states:
            return q
        time.sleep(0.1)
    raise TimeoutError(f"query {qid} never reached {states}: {q}")


def complete_records(store: Store, qid: str) -> list:
    return [
        r for r in store.audit.query(action="query.complete", limit=1000)
        if r.details.get("query_id") == qid
    ]  # fmt: skip


def wait_complete_record(store: Store, qid: str, timeout: float = 20):
    """The query's one ``query.complete`` audit record (written just after its final state)."""
    deadline = time.monotonic() + timeout
    while not (found := complete_records(store, qid)):
        assert time.monotonic() < deadline, f"no query.complete record for {qid}"
        time.sleep(0.2)
    (record,) = found
    return record


def test_any_replica_serves_any_query(stack):
    a, b = (r.url for r in stack["query"].replicas)
    front = stack["query"].front
    sql = "SELECT url, shares FROM url_shares ORDER BY shares, url"
    for submit_on, read_on in ((a, b), (b, a)):
        qid = submit(submit_on, sql)
        q = status(read_on, qid, wait=30)  # the long poll on the other replica watches the store
        assert q["state"] == "succeeded" and q["rows"] == 200, q
        arrow = requests.get(f"{read_on}{QPATH}queries/{qid}/results", params={"format": "arrow"},
                             headers=h(), timeout=30)  # fmt: skip
        assert arrow.status_code == 200, arrow.text
        table = pa.ipc.open_stream(arrow.content).read_all()
        assert table.num_rows == 200 and table.column_names == ["url", "shares"]
        page = requests.get(f"{submit_on}{QPATH}queries/{qid}/results", params={"max_rows": 5},
                            headers=h(), timeout=30).json()  # fmt: skip
        assert page["rows"] == table.slice(0, 5).to_pylist()
    # following a running query: streamed by the replica running it (from its spool file),
    # served from S3 by the other once it has finished
    for read_on in (a, b):
        qid = submit(a, sql)
        followed = requests.get(f"{read_on}{QPATH}queries/{qid}/results",
                                params={"format": "arrow", "follow": "true"}, headers=h(),
                                timeout=60)  # fmt: skip
        assert followed.status_code == 200, followed.text
        assert pa.ipc.open_stream(followed.content).read_all().num_rows == 200
    # through the front: consecutive requests land on alternating replicas
    seen = len(front.connections)
    ids = []
    for i in range(4):  # one at a time: alice may run two at once (max_concurrent_queries)
        ids.append(submit(front.url, f"SELECT {i} AS n"))
        assert wait_state(front.url, ids[-1], ("succeeded",))["rows"] == 1
    for i, qid in enumerate(ids):
        csv = requests.get(f"{front.url}{QPATH}queries/{qid}/results?format=csv", headers=h(),
                           timeout=30).text.splitlines()  # fmt: skip
        assert csv == ['"n"', str(i)]
    assert set(front.connections[seen:]) == {0, 1}
    listed = requests.get(front.url + QPATH + "queries", headers=h(), timeout=30).json()
    assert {q["id"] for q in listed["queries"]} >= set(ids)


def test_cancel_on_another_replica_stops_the_query(stack):
    a, b = (r.url for r in stack["query"].replicas)
    qid = submit(a, SLOW)
    wait_state(b, qid, ("running",))
    r = requests.delete(f"{b}{QPATH}queries/{qid}", headers=h(), timeout=30)
    assert r.status_code == 202, r.text
    assert status(a, qid)["state"] == "cancelled"
    # the replica running it stops the engine at its next heartbeat and records the end
    done = wait_complete_record(stack["store"], qid)
    assert done.details["state"] == "cancelled" and done.decision == "deny"
    usage = requests.get(a + QPATH + "usage", headers=h(), timeout=30).json()
    assert usage["limits"]["max_concurrent_queries"]["used"] == 0


def test_credentials_rate_limit_is_shared_by_the_replicas(stack):
    front = stack["credentials"].front
    while time.gmtime().tm_sec > 45:  # keep the burst inside one minute window
        time.sleep(1)
    codes = [
        requests.get(front.url + CPATH, headers=h("bob-token"), timeout=30).status_code
        for _ in range(PER_MINUTE + 3)
    ]
    # bob holds no role: each request is refused (403) after counting against the limit
    assert codes[:PER_MINUTE] == [403] * PER_MINUTE and codes[PER_MINUTE:] == [429] * 3
    got = [
        requests.get(r.url + CPATH, headers=h(), timeout=30) for r in stack["credentials"].replicas
    ]
    assert [g.status_code for g in got] == [200, 200], [g.text for g in got]
    assert all(g.json()["AccessKeyId"].startswith("ASIA") for g in got)


def test_a_replica_killed_during_a_query(stack):
    a, b = stack["query"].replicas
    store = stack["store"]
    qid = submit(a.url, SLOW)
    wait_state(b.url, qid, ("running",))
    a.kill()
    try:
        q = wait_state(stack["query"].front.url, qid, ("failed",), timeout=30)  # b answers
        assert q["error"] == LOST_REASON and q["finished"] and not q["result_available"]
        done = wait_complete_record(store, qid)
        assert done.details["state"] == "failed" and done.reason == LOST_REASON
        usage = requests.get(b.url + QPATH + "usage", headers=h(), timeout=30).json()
        assert usage["limits"]["max_concurrent_queries"]["used"] == 0  # its slot is free
        verified = store.audit.verify()
        assert verified.ok, str(verified)
        # the service goes on: the front skips the dead replica
        again = submit(stack["query"].front.url, "SELECT 42 AS x")
        assert wait_state(b.url, again, ("succeeded",))["rows"] == 1
    finally:
        a.start(stack["query"].env)  # restarted, it serves again
    assert status(a.url, qid)["state"] == "failed"


@pytest.fixture(scope="module")
def groups_stack(tmp_path_factory, pg_schema_url):
    """Two fort-groups processes behind a front that a real hub knows as the service's url."""
    from tests.fortsvc import ServiceSlot, hub_config, make_users
    from tests.hubproc import RunningHub

    work = tmp_path_factory.mktemp("groups-replicas")
    policy = work / "policy.yaml"
    policy.write_text(EXAMPLE_POLICY.read_text())
    slot = ServiceSlot(scopes.GROUPS_SERVICE)  # the hub's url for it: the front's port
    hub = RunningHub(work / "hub")
    hub.extra_config = hub_config([slot], hub.url)

    def config(i):
        return [
            f"c.FortSettings.policy_file = {str(policy)!r}",
            f"c.FortSettings.store_url = {pg_schema_url!r}",
            f"c.FortServiceApp.service_name = {scopes.GROUPS_SERVICE!r}",
            f"c.HubOAuth.api_url = {hub.hub_api_url!r}",
            f"c.HubOAuth.api_token = {slot.token!r}",
            f"c.HubOAuth.access_scopes = {{{scopes.access(scopes.GROUPS_SERVICE)!r}}}",
            "c.GroupsService.reconcile_interval = 1",  # both replicas reconcile, often
            "c.FortSettings.hub_groups = True",  # both replicas keep the hub copy too
        ]

    service = ReplicatedService(
        scopes.GROUPS_SERVICE, 2, work, config, service_env(hub.hub_api_url), slot.port
    )
    try:
        service.start()
        hub.start()
        make_users(hub, "alice", "bob", "carol", "dave", "admin")
        deadline = time.monotonic() + 30
        while "admin" not in hub_members(hub, "admins"):  # the policy's admins, reconciled
            assert time.monotonic() < deadline, "fort-groups never filled the admins group"
            time.sleep(0.3)
        yield {"hub": hub, "groups": service}
    finally:
        service.stop()
        hub.stop()


def hub_members(hub, group: str) -> set[str]:
    r = requests.get(hub.api(f"groups/{group}"), headers=hub.admin_headers, timeout=30)
    return set(r.json().get("users", ())) if r.status_code == 200 else set()


def test_groups_replicas_answer_alike(groups_stack):
    """A membership added through one fort-groups replica is what the other answers; the hub
    group follows; every request through the hub reaches one of the two."""
    from tests.fortsvc import user_token

    hub, service = groups_stack["hub"], groups_stack["groups"]
    access = scopes.access(scopes.GROUPS_SERVICE)
    admin = user_token(hub, "admin", [access, scopes.GROUPS_ADMIN, scopes.GROUPS_READ])
    dave = user_token(hub, "dave", [access, scopes.GROUPS_READ])
    one, other = (f"{r.url}/services/fort-groups/api/v1/" for r in service.replicas)
    r = requests.put(one + "groups/ads-study/members/dave", headers=h(admin), timeout=30)
    assert r.status_code == 200, r.text
    me = requests.get(other + "me", headers=h(dave), timeout=30)
    assert me.status_code == 200, me.text
    assert "ads-study" in {g["name"] for g in me.json()["groups"]}
    assert "dave" in hub_members(hub, "ads-study")
    r = requests.delete(other + "groups/ads-study/members/dave", headers=h(admin), timeout=30)
    assert r.status_code == 204, r.text
    via_hub = [
        requests.get(f"{hub.url}/services/fort-groups/api/v1/me", headers=h(dave), timeout=30)
        for _ in range(4)
    ]
    assert all(v.status_code == 200 for v in via_hub), [v.text for v in via_hub]
    assert all("ads-study" not in {g["name"] for g in v.json()["groups"]} for v in via_hub)
    assert set(service.front.connections[-4:]) == {0, 1}
