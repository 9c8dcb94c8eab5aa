"""Run the Z2JH hub pod as the chart rendered it, on this machine: the chart's own
``jupyterhub_config.py`` and ``z2jh.py`` (unmodified) read the rendered Secret and ConfigMap at
the paths the chart mounts them, with the hub Deployment's environment, fort-hub installed in
this venv (as docker/hub.Dockerfile installs it), PostgreSQL, and tests/k8s_double.py as the
cluster, reached through the in-cluster service-account configuration KubeSpawner reads.

It runs as root inside private mount, network and PID namespaces (``unshare --mount --net
--pid``), so
the chart's absolute paths (``/usr/local/etc/jupyterhub``, ``/srv/jupyterhub``,
``/var/run/secrets/kubernetes.io/serviceaccount``, ``/etc/hosts``) and fixed ports (8081, 8000,
8001, 10101-10103) are the namespace's own: nothing on the machine changes, and nothing clashes
with other tests, and every process it started ends with it. PostgreSQL is reached through its
Unix socket, which the namespace shares.

    unshare --mount --net --pid --fork --kill-child python -m tests.chart_pod SPEC.json

SPEC.json: ``{"docs": [rendered manifests], "objects": [what the admin creates: Secrets,
ConfigMaps], "workdir": str, "scenario": "prod"}``. The scenario's observations go to
``WORKDIR/result.json``; tests/test_chart_hub.py asserts on them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import traceback
from pathlib import Path

import requests

ETC = Path("/usr/local/etc/jupyterhub")
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PG_SOCKET_DIR = Path("/run/postgresql")
NAMESPACE = "fort"
#: Kubernetes Services of the release the hub pod reaches, by name -> port (all on loopback here)
SERVICES = {"hub": 8081, "proxy-api": 8001, "proxy-public": 80, "proxy-http": 8000}
#: Service ports that differ from the pod port behind them: proxy-public:80 -> the proxy's 8000
#: (without HTTPS; with it, proxy-public is autohttps, which no test here runs)
FORWARDS = {80: 8000}
EXTRA_HOSTS = ("fort.example.org",)
K8S_PORT = 443
STANDIN_PORT = 9010


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def find(objs: list[dict], kind: str, name: str) -> dict:
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise KeyError(f"{kind}/{name} is neither rendered by the chart nor created by the admin")


def object_files(obj: dict) -> dict[str, bytes]:
    data = obj.get("data") or {}
    if obj["kind"] == "ConfigMap":
        out = {k: v.encode() for k, v in data.items()}
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    else:
        out = {k: base64.b64decode(v) for k, v in data.items()}
    out.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
    return out


# ----- the namespace: private mounts at the chart's paths ---------------------------------------


def loopback_up() -> None:
    """``ip link set lo up`` (a new network namespace starts with lo down), without iproute2."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = fcntl.ioctl(sock, siocgifflags, struct.pack("16sh", b"lo", 0))
        flags = struct.unpack("16sh", ifreq[:18])[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def private_mounts(workdir: Path, hosts: list[str]) -> None:
    loopback_up()
    sh("mount", "--make-rprivate", "/")  # nothing below propagates to the machine
    keep = workdir / "pg-socket" if PG_SOCKET_DIR.is_dir() else None
    if keep:  # PostgreSQL's socket directory survives the tmpfs over /run
        keep.mkdir()
        sh("mount", "--bind", str(PG_SOCKET_DIR), str(keep))
    for path in ("/usr/local/etc", "/srv", "/run", "/home"):
        sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", path)
    if keep:
        PG_SOCKET_DIR.mkdir()
        sh("mount", "--bind", str(keep), str(PG_SOCKET_DIR))
    # a copy of /etc (3-4 MB) with the cluster's names in hosts and room for pod mounts
    # such as /etc/fort/aws
    etc = workdir / "etc"
    sh("cp", "-a", "/etc", str(etc))
    (etc / "hosts").write_text("127.0.0.1 localhost " + " ".join(hosts) + "\n")
    sh("mount", "--bind", str(etc), "/etc")


def lay_out_volumes(pod: dict, container: dict, objs: list[dict]) -> None:
    """Write each mounted ConfigMap/Secret where the container mounts it (subPath: one file)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        vol = volumes[mount["name"]]
        if "configMap" in vol:
            files = object_files(find(objs, "ConfigMap", vol["configMap"]["name"]))
        elif "secret" in vol:
            files = object_files(find(objs, "Secret", vol["secret"]["secretName"]))
        else:  # emptyDir / PVC / downward API: an empty directory (filled by the caller)
            Path(mount["mountPath"]).mkdir(parents=True, exist_ok=True)
            continue
        target = Path(mount["mountPath"])
        if mount.get("subPath"):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[mount["subPath"]])
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (target / name).write_bytes(data)


def container_env(container: dict, objs: list[dict]) -> dict[str, str]:
    """The container's env as the kubelet gives it: secretKeyRef / configMapKeyRef / fieldRef
    resolved, ``$(VAR)`` expanded from variables defined before, plus the Services' variables."""
    env: dict[str, str] = {}
    for name, port in SERVICES.items():
        prefix = name.upper().replace("-", "_")
        env[f"{prefix}_SERVICE_HOST"], env[f"{prefix}_SERVICE_PORT"] = "127.0.0.1", str(port)
    env.update(KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=str(K8S_PORT))
    for item in container.get("env", []):
        ref = item.get("valueFrom")
        if ref is None:
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                           lambda m: env.get(m.group(1), m.group(0)), item.get("value", ""))  # fmt: skip
        elif "fieldRef" in ref:
            value = {"metadata.namespace": NAMESPACE}[ref["fieldRef"]["fieldPath"]]
        else:
            kind, key = ("Secret", "secretKeyRef") if "secretKeyRef" in ref else ("ConfigMap", "configMapKeyRef")  # fmt: skip
            value = object_files(find(objs, kind, ref[key]["name"]))[ref[key]["key"]].decode()
        env[item["name"]] = value
    return env


def service_account(workdir: Path) -> ssl.SSLContext:
    """The in-cluster files KubeSpawner's client reads; the double serves TLS with this CA."""
    cert, key = workdir / "k8s.crt", workdir / "k8s.key"
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
       "-nodes", "-days", "1", "-subj", "/CN=kubernetes", "-addext",
       "subjectAltName=IP:127.0.0.1,DNS:kubernetes.default.svc",
       "-keyout", str(key), "-out", str(cert))  # fmt: skip
    SA_DIR.mkdir(parents=True)
    (SA_DIR / "token").write_text("hub-service-account-token")
    (SA_DIR / "namespace").write_text(NAMESPACE)
    shutil.copy(cert, SA_DIR / "ca.crt")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


# ----- processes ---------------------------------------------------------------------------------


class Procs:
    def __init__(self, workdir: Path):
        self.workdir, self.procs = workdir, {}

    def start(self, name: str, cmd: list[str], env: dict, cwd: str = "/"):
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Kill at once: the pod is thrown away, and the PID namespace takes everything the
        processes started (the hub's services) with it when this driver exits."""
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, 9)
            p.wait(timeout=15)


def forward(port: int, target: int) -> None:
    """A Service port: 127.0.0.1:*port* -> 127.0.0.1:*target* (threads, for the pod's life)."""
    import socket
    import threading

    def pipe(a, b):
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def serve(listener):
        while True:
            client, _ = listener.accept()
            upstream = socket.create_connection(("127.0.0.1", target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    listener = socket.create_server(("127.0.0.1", port))
    threading.Thread(target=serve, args=(listener,), daemon=True).start()


def wait_for(url: str, procs: Procs, name: str, timeout: float = 60, ok=(200, 302)) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs.procs[name].poll() is not None:
            raise RuntimeError(f"{name} exited:\n{procs.log(name)[-4000:]}")
        try:
            if requests.get(url, timeout=2, allow_redirects=False).status_code in ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout}s:\n{procs.log(name)[-4000:]}")


def run_notebook(pod: dict, procs: Procs) -> dict[str, str]:
    """Play the kubelet for a notebook pod the hub created: its volumes (downward-API files
    from the pod's annotations), its environment, its command (this venv's
    jupyterhub-singleuser). Returns the environment, for commands run "in the notebook"."""
    spec, meta = pod["spec"], pod["metadata"]
    (nb,) = [c for c in spec["containers"] if c["name"] == "notebook"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in nb.get("volumeMounts", []):
        target = Path(mount["mountPath"])
        target.mkdir(parents=True, exist_ok=True)
        for item in volumes.get(mount["name"], {}).get("downwardAPI", {}).get("items", []):
            field = re.fullmatch(r"metadata\.annotations\['(.+)'\]", item["fieldRef"]["fieldPath"])
            (target / item["path"]).write_text(meta["annotations"][field.group(1)])
    env = {e["name"]: e.get("value", "") for e in nb.get("env", []) if "value" in e}
    env = {**base_env(str(Path(sys.executable).parent)), **env, "HOME": "/home/jovyan"}
    Path("/home/jovyan").mkdir(parents=True, exist_ok=True)
    # as root (the image's user is jovyan, uid 1000; this venv's interpreter may be under /root)
    cmd = (nb.get("command") or []) + (nb.get("args") or []) + ["--allow-root"]
    procs.start("notebook", cmd, env, cwd=nb.get("workingDir") or "/home/jovyan")
    return env


def base_env(venv_bin: str) -> dict[str, str]:
    return {"PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": "/srv/jupyterhub",
            "LANG": "C.UTF-8"}  # fmt: skip


def start_pod(spec: dict, procs: Procs, k8s_ssl) -> dict:
    """Lay out the hub pod and start the proxy, the Facebook stand-in and the hub."""
    docs, objs = spec["docs"], spec["docs"] + spec["objects"]
    hub_pod = find(docs, "Deployment", "hub")["spec"]["template"]["spec"]
    hub = next(c for c in hub_pod["containers"] if c["name"] == "hub")
    lay_out_volumes(hub_pod, hub, objs)
    # as root, not the chart's uid 1000: this venv's interpreter may live under /root
    Path("/srv/jupyterhub").mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    proxy = find(docs, "Deployment", "proxy")["spec"]["template"]["spec"]["containers"][0]
    proxy_env = container_env(proxy, objs)
    cmd = [re.sub(r"\$\((\w+)\)", lambda m: proxy_env[m.group(1)], a) for a in proxy["command"]]
    procs.start("proxy", cmd, {**base_env(venv_bin), **proxy_env})
    for port, target in FORWARDS.items():
        forward(port, target)
    sidecars = [c for c in hub_pod["containers"] if c["name"] != "hub"]
    for c in sidecars:  # e.g. the dev values' Facebook stand-in, from the same image
        lay_out_volumes(hub_pod, c, objs)
        procs.start(c["name"], c["command"] + c.get("args", []),
                    {**base_env(venv_bin), **container_env(c, objs)})  # fmt: skip
    if not sidecars and spec.get("standin"):  # production: the stand-in plays Meta
        standin = ["fort-hub", "facebook-standin", f"--port={STANDIN_PORT}"]
        procs.start("standin", standin, base_env(venv_bin))
    if spec.get("moto"):  # an AWS account for the dev values (they point at a real one)
        procs.start("moto", ["moto_server", "-H", "127.0.0.1", "-p", "5555"], base_env(venv_bin))
    if spec.get("datasets"):
        from fort_hub.dev.datasets import ensure_datasets

        ensure_datasets(spec["datasets"], rows={"url_shares": 1000, "ads_targeting": 100})
    env = {**base_env(venv_bin), **container_env(hub, objs)}
    procs.start("hub", hub["args"], env, cwd="/srv/jupyterhub")
    return env


def wait_hub_ready(procs: Procs) -> None:
    wait_for("http://127.0.0.1:8000/hub/health", procs, "hub", timeout=90)
    deadline = time.monotonic() + 90  # the hub answers before its services and routes are up
    while "JupyterHub is now running" not in procs.log("hub"):
        if procs.procs["hub"].poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the hub did not finish starting:\n{procs.log('hub')[-4000:]}")
        time.sleep(0.2)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    workdir = Path(spec["workdir"])
    result: dict = {}
    procs = Procs(workdir)
    try:
        private_mounts(workdir, [*SERVICES, *spec.get("hosts", []), *EXTRA_HOSTS])
        k8s_ssl = service_account(workdir)
        from tests.chart_scenarios import SCENARIOS
        from tests.k8s_double import KubeDouble

        with KubeDouble(ssl_context=k8s_ssl, port=K8S_PORT, validate_version="1.33.0") as k8s:
            t0 = time.monotonic()
            env = start_pod(spec, procs, k8s_ssl)
            if spec["scenario"] == "refused":  # the hub must exit by itself
                result["hub_exit"] = procs.procs["hub"].wait(timeout=90)
            else:
                wait_hub_ready(procs)
                result["seconds_to_hub_ready"] = round(time.monotonic() - t0, 1)
                SCENARIOS[spec["scenario"]]({**spec, "procs": procs}, env, k8s, result)
    except Exception:
        result["error"] = traceback.format_exc()
    finally:
        procs.stop()
        result["logs"] = {name: procs.log(name)[-500_000:] for name in procs.procs}
        (workdir / "result.json").write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
