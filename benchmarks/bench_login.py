"""Complete logins per second through a real JupyterHub against the local Facebook stand-in:
fort-hub's FacebookOAuthenticator versus oauthenticator's GenericOAuthenticator configured
against the same stand-in, measured side by side (alternating rounds) in one run.

A "complete login" is what a browser does: GET /hub/oauth_login -> the stand-in's dialog ->
"Continue as ..." -> GET /hub/oauth_callback (code exchange, user info, and for ours also
debug_token, the identity binding and the audit record) -> the hub's login cookie.

    .venv/bin/python benchmarks/bench_login.py [--rounds 7] [--logins 20] [--concurrency 2]

Prints each round and the medians with their spread; target: ours >= 0.75 x generic.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.fernet import Fernet  # noqa: E402

from tests.fbflow import login  # noqa: E402
from tests.hubproc import RunningHub, free_port, wait_http  # noqa: E402

IDENTITIES = ROOT / "fort_hub/dev/data/facebook-identities.yaml"
APP_ID, SECRET = "1234567890123456", "dev-facebook-app-secret"
USERS = ["alice", "bob", "carol", "admin"]  # all members of a group in the example policy

COMMON = f"""
c.JupyterHub.log_level = "WARN"
c.{{cls}}.client_id = {APP_ID!r}
c.{{cls}}.client_secret = {SECRET!r}
c.{{cls}}.enable_auth_state = True
c.{{cls}}.admin_users = {{{{"admin"}}}}
"""


def ours_config(standin: str, policy: Path, store_url: str) -> str:
    return (
        COMMON.format(cls="FacebookOAuthenticator")
        + f"""
c.JupyterHub.authenticator_class = "facebook"
c.FacebookOAuthenticator.dialog_url = {standin!r}
c.FacebookOAuthenticator.graph_url = {standin!r}
c.FacebookOAuthenticator.strip_email_domains = {{"example.org"}}
c.FortSettings.policy_file = {str(policy)!r}
c.FortSettings.store_url = {store_url!r}
"""
    )


def generic_config(standin: str) -> str:
    return (
        COMMON.format(cls="GenericOAuthenticator")
        + f"""
c.JupyterHub.authenticator_class = "generic-oauth"
c.GenericOAuthenticator.authorize_url = "{standin}/v23.0/dialog/oauth"
c.GenericOAuthenticator.token_url = "{standin}/v23.0/oauth/access_token"
c.GenericOAuthenticator.userdata_url = "{standin}/v23.0/me"
c.GenericOAuthenticator.userdata_params = {{"fields": "id,name,email"}}
c.GenericOAuthenticator.scope = ["public_profile", "email"]
c.GenericOAuthenticator.username_claim = "email"
c.GenericOAuthenticator.allow_all = True
"""
    )


def one_round(hub_url: str, n: int, concurrency: int) -> float:
    def one(i: int):
        s, r = login(hub_url, USERS[i % len(USERS)])
        if r.status_code != 302 or "jupyterhub-hub-login" not in s.cookies:
            raise RuntimeError(f"login failed: HTTP {r.status_code} {r.text[:300]}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    return n / (time.perf_counter() - t0)


def spread(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f} (min {min(xs):.2f}, max {max(xs):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--logins", type=int, default=20, help="logins per round per hub")
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-login-"))
    port = free_port()
    standin_url = f"http://127.0.0.1:{port}"
    standin = subprocess.Popen(
        [sys.executable, "-m", "fort_hub.cli", "facebook-standin", "--port", str(port),
         "--identities", str(IDENTITIES)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    shutil.copy(ROOT / "fort_hub/dev/data/example-policy.yaml", tmp / "policy.yaml")
    env = {"JUPYTERHUB_CRYPT_KEY": Fernet.generate_key().decode()}
    hubs = {
        "ours": RunningHub(tmp / "ours", ours_config(standin_url, tmp / "policy.yaml",
                                                     f"sqlite:///{tmp / 'fort.sqlite'}"), env),
        "generic": RunningHub(tmp / "generic", generic_config(standin_url), env),
    }  # fmt: skip
    try:
        wait_http(standin_url + "/v23.0/me", proc=standin, ok=lambda r: r.status_code == 400)
        for hub in hubs.values():
            hub.start()
            one_round(hub.url, len(USERS), 1)  # warm up: create the users
        rates: dict[str, list[float]] = {"ours": [], "generic": []}
        ratios = []
        for i in range(args.rounds):
            order = ["ours", "generic"] if i % 2 == 0 else ["generic", "ours"]
            got = {k: one_round(hubs[k].url, args.logins, args.concurrency) for k in order}
            for k, v in got.items():
                rates[k].append(v)
            ratios.append(got["ours"] / got["generic"])
            print(f"round {i + 1}: ours {got['ours']:.2f}/s  generic {got['generic']:.2f}/s  "
                  f"ratio {ratios[-1]:.3f}", flush=True)  # fmt: skip
        print(f"\nlogins per second, {args.rounds} rounds x {args.logins} logins, "
              f"concurrency {args.concurrency}")  # fmt: skip
        print(f"  FacebookOAuthenticator (fort-hub): {spread(rates['ours'])}")
        print(f"  GenericOAuthenticator:             {spread(rates['generic'])}")
        print(f"  ratio ours/generic:                {spread(ratios)}  (target >= 0.75)")
        return 0
    finally:
        for hub in hubs.values():
            hub.stop()
        standin.terminate()
        standin.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
