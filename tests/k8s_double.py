"""A test double of the Kubernetes API server: a local HTTP server speaking the JSON API for the
objects and calls kubespawner 7 (and FortKubeSpawner) make, so ``kubernetes_asyncio`` talks real
HTTP. No real cluster runs in CI; this is what the lifecycle tests run against.

Covered (core/v1, namespaced): pods, events, serviceaccounts, persistentvolumeclaims, services,
secrets -- create (POST), read (GET), list and watch (GET ``?watch=true``, label and field
equality selectors, resourceVersion), patch (JSON / strategic merge treated as merge patch),
delete. Behaviour beyond storage:

- a pod is created ``Pending`` and a simulated kubelet makes it ``Running`` (podIP 127.0.0.1,
  notebook container ready) after ``pod_start_delay`` seconds, with an Event;
- a simulated EKS pod-identity webhook: a pod created with a ServiceAccount that *already*
  carries ``eks.amazonaws.com/role-arn`` gets ``AWS_ROLE_ARN`` injected (the IRSA race made
  observable);
- with ``sa_lag`` seconds, a created or patched ServiceAccount is seen by reads (GET) and by the
  webhook only that long after the write (before: 404, or its previous version), as with the
  webhook's informer cache on EKS -- so a spawner that does not wait loses the role;
- with ``validate_version``, created pods and ServiceAccounts are checked with
  ``kubernetes-validate`` (strict) and rejected with 422 when invalid;
- every request is logged in ``requests`` as ``(method, path)``, and the ``Authorization``
  headers seen in ``authorizations``;
- with ``ssl_context`` it speaks HTTPS, as the in-cluster API server does (``port`` fixes the
  port, e.g. the ``KUBERNETES_SERVICE_PORT`` a pod is given).
"""

from __future__ import annotations

import bisect
import copy
import datetime as dt
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from kubespawner.clients import load_config

KINDS = {
    "pods": "Pod",
    "events": "Event",
    "serviceaccounts": "ServiceAccount",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "services": "Service",
    "secrets": "Secret",
}
ROLE_ARN = "eks.amazonaws.com/role-arn"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(target: dict, patch: dict) -> dict:
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)
    return target


def _dig(obj: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _selector(text: str) -> list[tuple[str, str]]:
    out = []
    for term in filter(None, (text or "").split(",")):
        k, _, v = term.partition("=")
        out.append((k.rstrip("="), v.lstrip("=")))
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of spawns (the scale harness) had
    # connections refused or reset, which an API server does not do
    request_queue_size = 1024


class KubeDouble:
    """``with KubeDouble() as k8s: ... k8s.url ...``"""

    def __init__(
        self,
        pod_start_delay: float = 0.2,
        validate_version: str | None = None,
        sa_lag: float = 0,
        ssl_context=None,
        port: int = 0,
    ):
        self.pod_start_delay = pod_start_delay
        self.sa_lag = sa_lag
        #: (kind, ns, name) -> (monotonic time the write becomes visible, what is seen until then)
        self._stale: dict[tuple[str, str, str], tuple[float, dict | None]] = {}
        self.validate_version = validate_version
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.history: list[tuple[int, str, str, str, dict]] = []  # rv, type, kind, ns, obj
        self.requests: list[tuple[str, str]] = []
        self.authorizations: set[str] = set()
        self.rv = 100
        self.cond = threading.Condition()
        self.closed = False
        self._timers: list[threading.Timer] = []
        double = self

        class Handler(_Handler):
            k8s = double

        self.server = _Server(("127.0.0.1", port), Handler)
        scheme = "http"
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        # kubespawner's load_config is lru-cached on the host and sets a global default: when
        # the kernel hands this double a port an earlier double had, a cache hit would leave
        # the default pointing at the last (closed) double. Forget what was loaded.
        load_config.cache_clear()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        for t in self._timers:
            t.cancel()
        self.server.shutdown()
        self.server.server_close()

    # ----- storage (call with self.cond held) ---------------------------------------------------

    def _emit(self, etype: str, kind: str, ns: str, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, etype, kind, ns, copy.deepcopy(obj)))
        self.cond.notify_all()

    def get(self, kind: str, ns: str, name: str) -> dict | None:
        with self.cond:
            obj = self._seen(kind, ns, name)
            return copy.deepcopy(obj) if obj else None

    def _seen(self, kind: str, ns: str, name: str) -> dict | None:
        """The object as reads see it now (``sa_lag``: an older version for a while)."""
        stale = self._stale.get((kind, ns, name))
        if stale and time.monotonic() < stale[0]:
            return stale[1]
        return self.objects.get((kind, ns, name))

    def _lag(self, kind: str, ns: str, name: str) -> None:
        if kind == "serviceaccounts" and self.sa_lag > 0:
            before = self._seen(kind, ns, name)
            self._stale[(kind, ns, name)] = (
                time.monotonic() + self.sa_lag,
                copy.deepcopy(before) if before else None,
            )

    def list(self, kind: str, ns: str | None = None) -> list[dict]:
        with self.cond:
            return [
                copy.deepcopy(o)
                for (k, n, _), o in self.objects.items()
                if k == kind and (ns is None or n == ns)
            ]

    def create(self, kind: str, ns: str, body: dict) -> tuple[int, dict]:
        name = body.get("metadata", {}).get("name")
        if not name:
            return 422, _status(422, "Invalid", "metadata.name is required")
        problem = self._validate(body)
        if problem:
            return 422, _status(422, "Invalid", problem)
        with self.cond:
            if (kind, ns, name) in self.objects:
                return 409, _status(409, "AlreadyExists", f'{kind} "{name}" already exists')
            obj = copy.deepcopy(body)
            obj.setdefault("apiVersion", "v1")
            obj["kind"] = KINDS[kind]
            meta = obj["metadata"]
            meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now())
            if kind == "pods":
                self._admit_pod(ns, obj)
            self._lag(kind, ns, name)
            self.objects[(kind, ns, name)] = obj
            self._emit("ADDED", kind, ns, obj)
            if kind == "pods":
                self._later(self.pod_start_delay, self._run_pod, ns, name)
            return 201, copy.deepcopy(obj)

    def _validate(self, body: dict) -> str:
        if not self.validate_version or body.get("kind") not in ("Pod", "ServiceAccount"):
            return ""
        import kubernetes_validate

        try:
            kubernetes_validate.validate(body, self.validate_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            return f"invalid {body.get('kind')}: {e}"
        return ""

    def _admit_pod(self, ns: str, pod: dict) -> None:
        pod["status"] = {"phase": "Pending"}
        sa_name = pod.get("spec", {}).get("serviceAccountName")
        sa = self._seen("serviceaccounts", ns, sa_name) if sa_name else None
        arn = (sa or {}).get("metadata", {}).get("annotations", {}).get(ROLE_ARN)
        if arn:  # the EKS pod identity webhook
            env = pod["spec"]["containers"][0].setdefault("env", [])
            env.append({"name": "AWS_ROLE_ARN", "value": arn})
            env.append(
                {
                    "name": "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
                }
            )

    def _later(self, delay: float, fn, *args) -> None:
        t = threading.Timer(delay, fn, args)
        t.daemon = True
        self._timers.append(t)
        t.start()

    def _run_pod(self, ns: str, name: str) -> None:
        with self.cond:
            pod = self.objects.get(("pods", ns, name))
            if pod is None or self.closed:
                return
            image = pod["spec"]["containers"][0].get("image", "")
            pod["status"] = {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "containerStatuses": [
                    {
                        "name": "notebook", "ready": True, "image": image, "imageID": "",
                        "restartCount": 0, "state": {"running": {"startedAt": _now()}},
                    }
                ],
            }  # fmt: skip
            self._emit("MODIFIED", "pods", ns, pod)
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{name}.{uuid.uuid4().hex[:8]}", "namespace": ns},
                "involvedObject": {"kind": "Pod", "name": name, "namespace": ns},
                "type": "Normal",
                "reason": "Started",
                "message": "Started container notebook",
                "lastTimestamp": _now(),
                "eventTime": None,
            }
            event["metadata"]["uid"] = str(uuid.uuid4())
            self.objects[("events", ns, event["metadata"]["name"])] = event
            self._emit("ADDED", "events", ns, event)

    def patch(self, kind: str, ns: str, name: str, body: dict) -> tuple[int, dict]:
        with self.cond:
            obj = self.objects.get((kind, ns, name))
            if obj is None:
                return 404, _status(404, "NotFound", f'{kind} "{name}" not found')
            self._lag(kind, ns, name)
            _merge(obj, body)
            self._emit("MODIFIED", kind, ns, obj)
            return 200, copy.deepcopy(obj)

    def delete(self, kind: str, ns: str, name: str) -> tuple[int, dict]:
        with self.cond:
            obj = self.objects.pop((kind, ns, name), None)
            if obj is None:
                return 404, _status(404, "NotFound", f'{kind} "{name}" not found')
            self._emit("DELETED", kind, ns, obj)
            return 200, copy.deepcopy(obj)

    def set_pod_phase(self, ns: str, name: str, **status) -> None:
        """Let a test change a pod's status (say, the notebook terminated)."""
        with self.cond:
            pod = self.objects[("pods", ns, name)]
            pod["status"] = status
            self._emit("MODIFIED", "pods", ns, pod)


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _matches(obj: dict, labels, fields) -> bool:
    obj_labels = obj.get("metadata", {}).get("labels") or {}
    if any(obj_labels.get(k) != v for k, v in labels):
        return False
    return all(str(_dig(obj, k)) == v for k, v in fields)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    k8s: KubeDouble

    def log_message(self, *args):  # quiet
        pass

    def _route(self):
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.k8s.requests.append((self.command, url.path))
        self.k8s.authorizations.add(self.headers.get("Authorization", ""))
        # /api/v1/namespaces/{ns}/{kind}[/{name}]  or  /api/v1/{kind}
        if parts[:2] != ["api", "v1"]:
            return None
        rest = parts[2:]
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in KINDS:
            return rest[2], rest[1], (rest[3] if len(rest) > 3 else None), query
        if len(rest) == 1 and rest[0] in KINDS:
            return rest[0], None, None, query
        return None

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}") if n else {}

    def _not_found(self):
        self._send(404, _status(404, "NotFound", f"no route for {self.command} {self.path}"))

    def do_GET(self):
        route = self._route()
        if route is None:
            return self._not_found()
        kind, ns, name, query = route
        if name:
            obj = self.k8s.get(kind, ns, name)
            if obj is None:
                return self._send(404, _status(404, "NotFound", f'{kind} "{name}" not found'))
            return self._send(200, obj)
        labels = _selector(query.get("labelSelector", ""))
        fields = _selector(query.get("fieldSelector", ""))
        if query.get("watch") in ("true", "1", "True"):
            return self._watch(kind, ns, labels, fields, query)
        with self.k8s.cond:
            items = [o for o in self.k8s.list(kind, ns) if _matches(o, labels, fields)]
            rv = str(self.k8s.rv)
        self._send(
            200,
            {
                "kind": KINDS[kind] + "List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": rv},
                "items": items,
            },
        )

    def _watch(self, kind, ns, labels, fields, query):
        since = int(query.get("resourceVersion") or 0)
        timeout = float(query.get("timeoutSeconds") or 30)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        k8s = self.k8s
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.daemon = True
        timer.start()
        try:
            while not deadline.is_set():
                with k8s.cond:
                    # the history is in resourceVersion order: look only past *since*
                    start = bisect.bisect_right(k8s.history, since, key=lambda h: h[0])
                    new = [
                        h for h in k8s.history[start:]
                        if h[2] == kind and (ns is None or h[3] == ns)
                    ]  # fmt: skip
                    if not new:
                        if k8s.closed:
                            break
                        k8s.cond.wait(0.5)
                        continue
                for rv, etype, _, _, obj in new:
                    since = rv
                    if _matches(obj, labels, fields):
                        line = json.dumps({"type": etype, "object": obj}).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            timer.cancel()
            self.close_connection = True

    def do_POST(self):
        route = self._route()
        if route is None or route[1] is None or route[2]:
            return self._not_found()
        kind, ns, _, _ = route
        code, body = self.k8s.create(kind, ns, self._body())
        self._send(code, body)

    def do_PATCH(self):
        route = self._route()
        if route is None or not route[2]:
            return self._not_found()
        kind, ns, name, _ = route
        code, body = self.k8s.patch(kind, ns, name, self._body())
        self._send(code, body)

    def do_DELETE(self):
        route = self._route()
        if route is None or not route[2]:
            return self._not_found()
        self._body()
        kind, ns, name, _ = route
        code, body = self.k8s.delete(kind, ns, name)
        self._send(code, body)
