"""``fort-hub demo`` (``make demo``): the whole fort-hub platform on this machine.

One parent process starts and supervises, and on Ctrl-C or SIGTERM stops, everything:

- moto's ``ThreadedMotoServer`` on 127.0.0.1 as AWS (the ``fort-user-data`` bucket with a prefix
  per user, one IAM role per study group, the datasets' S3 prefixes);
- the local Facebook stand-in (``fort-hub facebook-standin``) with the demo identities;
- JupyterHub on http://127.0.0.1:8000 with the Python configurable-http-proxy, the Facebook
  authenticator pointed at the stand-in, ``FortLocalSpawner`` and the three fort services
  (fort-groups, fort-credentials, fort-query), configured by the same ``jupyterhub_config.d``
  snippets an admin deploys plus a small demo overlay (``fort_hub.dev.demo_hub``).

All state lives in ``./.fort-demo/`` (``--dir``): the policy (edit it live), the generated
datasets (``url_shares``, 1,000,000 rows; ``ads_targeting``), the hub and fort databases, each
user's notebook directory and the logs. A second run reuses it; ``--reset`` starts over. One
demo at a time holds a state folder (``demo.pid`` in it, taken over when that process is gone).

DEVELOPMENT ONLY: everything listens on loopback, identities need no password, AWS is moto.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import webbrowser
from collections.abc import Sequence
from pathlib import Path

from fort_hub.dev import datasets as demo_datasets
from fort_hub.dev.demo_r import setup_r_kernel
from fort_hub.dev.demo_setup import (
    DemoError,
    Settings,
    acquire_lock,
    banner,
    chp_command,
    facebook_app,
    free_port,
    free_port_run,
    held_error,
    load_secrets,
    lock_holder,
    port_advice,
    port_free,
    prepare_state,
    release_lock,
    setup_aws,
    write_hub_config,
)
from fort_hub.policy import PolicyError, load_policy

READY_LINE = "fort-hub demo ready:"
#: an API path of each service that answers 401 to a request without a token
PROBES = {
    "fort-groups": "api/v1/me",
    "fort-credentials": "api/v1/aws/credentials?role=probe",
    "fort-query": "api/v1/datasets",
}


DESCRIPTION = "Run the whole fort-hub platform on this machine (development only)."
EPILOG = """\
JupyterHub with the Facebook stand-in, the three fort services, moto as AWS and
the sample datasets, all on 127.0.0.1; Ctrl-C stops everything.

State (policy.yaml, datasets, databases, notebooks, logs) lives in --dir and is
reused next time; one demo at a time may use a state folder. From make, pass
options as: make demo DEMO_ARGS="--port 8080 --reset"
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="fort-hub demo",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dir", default=".fort-demo", help="state directory (default: ./.fort-demo)")
    p.add_argument("--port", type=int, default=8000, help="public port on 127.0.0.1 (8000)")
    p.add_argument("--reset", action="store_true", help="delete the state directory first")
    p.add_argument("--open", action="store_true", help="open the hub in a web browser")
    p.add_argument(
        "--exit-after-ready",
        "--check",
        action="store_true",
        help="start everything, check it answers, print the welcome, stop, exit 0",
    )
    p.add_argument(
        "--rows",
        type=int,
        default=demo_datasets.URL_SHARES_ROWS,
        help=f"rows of url_shares (default {demo_datasets.URL_SHARES_ROWS:,})",
    )
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for readiness")
    return p.parse_args(argv)


class Demo:
    """The supervised processes and threads of one demo run."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.state = Path(args.dir).resolve()
        self.logs = self.state / "logs"
        self.procs: dict[str, subprocess.Popen] = {}
        self.moto = None
        self.stopping = threading.Event()
        self.locked = None

    def say(self, msg: str) -> None:
        print(msg, flush=True)

    # ----- start --------------------------------------------------------------------------------

    def prepare(self) -> Settings:
        holder = lock_holder(self.state)
        if holder is not None:  # before --reset could delete a running demo's state
            raise held_error(self.state, holder)
        if not port_free(self.args.port):
            raise DemoError(port_advice(self.args.port))
        new = prepare_state(self.state, self.args.reset)
        self.locked = acquire_lock(self.state)
        self.say(f"{'creating' if new else 'reusing'} demo state in {self.state}")
        try:
            self.policy = load_policy(self.state / "policy.yaml")
        except PolicyError as e:
            raise DemoError(f"{self.state / 'policy.yaml'} is invalid:\n{e}") from None
        t0 = time.monotonic()
        rows = {"url_shares": self.args.rows}
        self.datasets = demo_datasets.ensure_datasets(self.state / "data", rows)
        self.say(f"datasets ready in {time.monotonic() - t0:.1f}s: {', '.join(self.datasets)}")
        app_id, app_secret, self.identities = facebook_app(self.state)
        r_kernel = setup_r_kernel(self.state)
        return Settings(
            state_dir=str(self.state),
            public_url=f"http://127.0.0.1:{self.args.port}",
            hub_port=free_port(),
            proxy_api_port=free_port(),
            services_port=free_port_run(10101, 3),
            chp=chp_command(),
            store_url=f"sqlite:///{self.state / 'fort.sqlite'}",
            facebook_url="",
            facebook_app_id=app_id,
            facebook_app_secret=app_secret,
            aws_endpoint_url="",
            r_jupyter_path=r_kernel.jupyter_path,
            r_note=r_kernel.note,
        )

    def start_moto(self, settings: Settings) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request lines

        port = free_port()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.moto.start()
        settings.aws_endpoint_url = f"http://127.0.0.1:{port}"
        setup_aws(settings.aws_endpoint_url, self.policy, self.identities, self.datasets)

    def spawn(self, name: str, cmd: list[str], env: dict, cwd: Path) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.procs[name] = proc
        return proc

    def start_standin(self, settings: Settings) -> None:
        port = 9010 if port_free(9010) else free_port()
        settings.facebook_url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "fort_hub.cli", "facebook-standin", "--port", str(port)]
        cmd += ["--identities", str(self.state / "facebook-identities.yaml")]
        self.spawn("facebook-standin", cmd, dict(os.environ), self.state)
        self.wait_http(settings.facebook_url + "/", "the Facebook stand-in", ok=lambda s: s < 500)

    def hub_env(self, settings: Settings) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "JUPYTERHUB_", "FORT_", "CONFIGPROXY_"))
        }
        env.update(load_secrets(self.state))
        env.update(
            {
                "FORT_POLICY_FILE": str(self.state / "policy.yaml"),
                "FORT_STORE_URL": settings.store_url,
                "FORT_SERVICES_HOST": "127.0.0.1",
                "FORT_SERVICES_PORT": str(settings.services_port),
                "FORT_SUPPORT_CONTACT": "the demo's admin (admin@example.org)",
                "AWS_ENDPOINT_URL": settings.aws_endpoint_url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": self.policy.aws.region,
                "AWS_REGION": self.policy.aws.region,
                "AWS_CONFIG_FILE": str(self.state / "aws" / "no-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(self.state / "aws" / "no-shared-credentials"),
            }
        )
        return env

    def start_hub(self, settings: Settings) -> None:
        config = write_hub_config(self.state, settings)
        cmd = [sys.executable, "-m", "jupyterhub", "-f", str(config)]
        self.spawn("jupyterhub", cmd, self.hub_env(settings), self.state)
        url = settings.public_url
        self.wait_http(url + "/hub/api/", "JupyterHub", ok=lambda s: s == 200)
        for service, path in PROBES.items():
            # 401 without a token: the service itself answers, through the proxy
            self.wait_http(f"{url}/services/{service}/{path}", service, ok=lambda s: s == 401)

    def wait_http(self, url: str, what: str, ok) -> None:
        import requests

        deadline = time.monotonic() + self.args.timeout
        last = ""
        while time.monotonic() < deadline and not self.stopping.is_set():
            self.check_children()
            try:
                r = requests.get(url, timeout=3, allow_redirects=False)
                if ok(r.status_code):
                    return
                last = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                last = type(e).__name__
            time.sleep(0.25)
        if self.stopping.is_set():
            raise KeyboardInterrupt
        raise DemoError(f"{what} did not answer at {url} within {self.args.timeout:.0f}s ({last})")

    def check_children(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise DemoError(
                    f"{name} exited with status {proc.returncode}; its log ends:\n{tail}"
                )

    # ----- run and stop -------------------------------------------------------------------------

    def run(self) -> int:
        t0 = time.monotonic()
        settings = self.prepare()
        self.start_moto(settings)
        self.start_standin(settings)
        self.start_hub(settings)
        self.say(banner(settings, self.state, self.identities))
        self.say(f"{READY_LINE} {settings.public_url}/ in {time.monotonic() - t0:.1f}s")
        if self.args.open:
            webbrowser.open(settings.public_url + "/")
        if self.args.exit_after_ready:
            return 0
        while not self.stopping.wait(1.0):
            self.check_children()
        return 0

    def stop(self) -> None:
        for name in ("jupyterhub", "facebook-standin"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self.moto is not None:
            with contextlib.suppress(Exception):
                self.moto.stop()
            self.moto = None
        if self.locked is not None:
            release_lock(self.state)
            self.locked = None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    demo = Demo(args)

    def on_signal(signum, frame):
        demo.stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return demo.run()
    except DemoError as e:
        print(f"fort-hub demo: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        started = bool(demo.procs) or demo.moto is not None
        if started:
            print("fort-hub demo: stopping", flush=True)
        demo.stop()
        if started:
            print("fort-hub demo: stopped", flush=True)
        for sig, handler in previous.items():  # main() called in process (tests) leaves none
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
