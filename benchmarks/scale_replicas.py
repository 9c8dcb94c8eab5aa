"""``bench_scale.py --replicas N``: each fort service as N processes behind one URL.

As with helm-values/values-replicas.yaml and the fort-services chart (docs/replicas.md): the fort
hub registers each service with a ``url`` (a round-robin front, :mod:`fort_hub.dev.rrfront`, in
a process of its own: the Kubernetes Service) and an ``api_token``, and no ``command``, so it
starts none of them; the harness starts N replicas of each with the environment the chart gives
its pods (``JUPYTERHUB_*``, the policy file, the store URL, one ``FORT_COOKIE_SECRET``). The
replicas of fort-query share the S3 result store on the harness's moto (bucket
``fort-scale-results``), each with a spool directory and a ``replica_name`` of its own.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from fort_hub import scopes
from fort_hub.dev.replicas import Replica, wait_port
from fort_hub.dev.rrfront import free_port

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "fort-scale-results"
SERVICES = (scopes.GROUPS_SERVICE, scopes.CREDENTIALS_SERVICE, scopes.QUERY_SERVICE)


class ServiceReplicas:
    """N replicas of each fort service and one front per service (``start`` before the hub)."""

    def __init__(self, work: Path, n: int, hub_api_url: str, moto_url: str, env: dict):
        self.work, self.n, self.moto_url = work / "replicas", n, moto_url
        self.work.mkdir(exist_ok=True)
        self.tokens = {s: secrets.token_hex(32) for s in SERVICES}
        self.front_ports = {s: free_port() for s in SERVICES}
        self.replicas = {
            s: [Replica(s, i, self.work, self.config_lines(s, i)) for i in range(n)]
            for s in SERVICES
        }
        base = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
        base.update(env)
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
        base["FORT_COOKIE_SECRET"] = secrets.token_hex(32)  # one for every replica
        self.env = {s: {**base, **chart_env(s, hub_api_url, self.tokens[s])} for s in SERVICES}
        self.fronts: subprocess.Popen | None = None

    def config_lines(self, service: str, i: int) -> list[str]:
        if service != scopes.QUERY_SERVICE:
            return []
        return [
            'c.QueryService.result_store_class = "s3"',
            f"c.S3ResultStore.bucket = {BUCKET!r}",
            f"c.S3ResultStore.endpoint_url = {self.moto_url!r}",
            f"c.S3ResultStore.spool_dir = {str(self.work / f'spool-{i}')!r}",
            f'c.QueryService.replica_name = "fort-query-{i}"',
        ]

    def hub_entries(self) -> list[dict]:
        """The hub's ``c.JupyterHub.services`` entries (the fort snippets fill in the rest)."""
        return [
            {"name": s, "url": f"http://127.0.0.1:{self.front_ports[s]}", "command": [],
             "api_token": self.tokens[s]}
            for s in SERVICES
        ]  # fmt: skip

    def start(self) -> ServiceReplicas:
        import boto3

        boto3.client("s3", endpoint_url=self.moto_url, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing",
                     ).create_bucket(Bucket=BUCKET)  # fmt: skip
        for s in SERVICES:
            for r in self.replicas[s]:
                r.launch(self.env[s])
        for s in SERVICES:
            for r in self.replicas[s]:
                r.wait(timeout=120)
        specs = []
        for s in SERVICES:
            backends = ",".join(f"127.0.0.1:{r.port}" for r in self.replicas[s])
            specs += ["--front", f"{self.front_ports[s]}={backends}"]
        log = self.work / "fronts.log"
        with open(log, "ab") as out:
            self.fronts = subprocess.Popen(
                [sys.executable, "-m", "fort_hub.dev.rrfront", *specs],
                env=self.env[SERVICES[0]], stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        for port in self.front_ports.values():
            wait_port(port, self.fronts, log)
        return self

    def stop(self) -> None:
        if self.fronts and self.fronts.poll() is None:
            self.fronts.terminate()
            self.fronts.wait(10)
        for rs in self.replicas.values():
            for r in rs:
                r.stop()

    def pids(self) -> dict[str, list[int]]:
        """By role: all replicas (``fort_services``), the fronts, and each replica alone."""
        alive = [r for rs in self.replicas.values() for r in rs if r.proc]
        out = {
            "fort_services": [r.proc.pid for r in alive],
            "service_fronts": [self.fronts.pid] if self.fronts else [],
        }
        out.update({f"{r.service}-{r.index}": [r.proc.pid] for r in alive})
        return out


def chart_env(service: str, hub_api_url: str, token: str) -> dict[str, str]:
    """What k8s/fort-services gives each pod (JupyterHub gives a managed service the same)."""
    return {
        "JUPYTERHUB_SERVICE_NAME": service,
        "JUPYTERHUB_SERVICE_PREFIX": f"/services/{service}/",
        "JUPYTERHUB_API_URL": hub_api_url,
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_CLIENT_ID": f"service-{service}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"/services/{service}/oauth_callback",
        "JUPYTERHUB_API_TOKEN": token,
    }
