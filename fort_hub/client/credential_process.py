"""``fort-aws-credentials --role NAME``: the AWS ``credential_process`` helper for notebooks.

In the AWS config file the spawner writes::

    [profile fort-urls-study]
    credential_process = fort-aws-credentials --role fort-urls-study

It asks fort-credentials for the user's own short-lived credentials with the notebook's
``$JUPYTERHUB_API_TOKEN`` at ``$FORT_CREDENTIALS_URL`` (else ``$FORT_SERVICES_URL`` +
``fort-credentials/``) and prints the JSON boto3 expects. On failure it writes one line to stderr
(boto3 shows it to the researcher) and exits 1. Standard library only: no jupyterhub import.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

REQUIRED = ("Version", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")


class CredentialError(Exception):
    pass


def service_url(env: dict | None = None) -> str:
    env = os.environ if env is None else env
    url = env.get("FORT_CREDENTIALS_URL", "")
    if not url and env.get("FORT_SERVICES_URL"):
        url = env["FORT_SERVICES_URL"].rstrip("/") + "/fort-credentials/"
    if not url:
        raise CredentialError("neither FORT_CREDENTIALS_URL nor FORT_SERVICES_URL is set")
    return url if url.endswith("/") else url + "/"


def fetch(role: str, url: str, token: str, timeout: float = 30) -> dict:
    full = url + "api/v1/aws/credentials?" + urllib.parse.urlencode({"role": role})
    req = urllib.request.Request(full, headers={"Authorization": f"token {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            body = resp.read()
    except urllib.error.HTTPError as e:
        message = ""
        try:
            message = json.loads(e.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = e.reason or ""
        raise CredentialError(f"{e.code} from fort-credentials: {message}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CredentialError(f"cannot reach fort-credentials at {url}: {reason}") from None
    try:
        data = json.loads(body)
    except ValueError:
        raise CredentialError("fort-credentials answered with something that is not JSON") from None
    if not isinstance(data, dict) or any(k not in data for k in REQUIRED):
        raise CredentialError("fort-credentials answered without the credential fields")
    return data


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit 1, like every other failure (boto3 shows stderr)."""

    def error(self, message: str):
        self.exit(1, f"fort-aws-credentials: {message} (usage: fort-aws-credentials --role NAME)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="fort-aws-credentials",
        description="Print short-lived AWS credentials for ROLE (AWS credential_process).",
    )
    parser.add_argument("--role", required=True, help="role name, e.g. fort-urls-study")
    parser.add_argument("--url", default="", help="fort-credentials base URL (default: from env)")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    try:
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise CredentialError("JUPYTERHUB_API_TOKEN is not set (run this inside a notebook)")
        data = fetch(args.role, args.url or service_url(), token, args.timeout)
    except CredentialError as e:
        print(f"fort-aws-credentials: {e}", file=sys.stderr)
        return 1
    print(json.dumps(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
