"""STS backends for fort-credentials, chosen by ``c.CredentialsService.sts_backend_class``.

Contract (every backend; ``tests/test_credentials_backends.py`` runs one suite over all):

- ``await backend.assume_role(request)`` takes an :class:`AssumeRoleRequest` and returns
  :class:`Credentials` whose ``expiration`` is timezone-aware UTC.
- Failures raise :class:`StsError`; ``retryable=True`` for throttling and transient faults
  (the service retries those with exponential backoff and jitter), ``False`` otherwise
  (e.g. access denied, malformed policy).
- ``assume_role`` must not block the event loop (run blocking SDK calls in a thread).
- ``calls`` counts attempted STS calls (for logs and tests).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
import threading
from dataclasses import dataclass, field

from traitlets import Float, Unicode
from traitlets.config import LoggingConfigurable


@dataclass(frozen=True)
class AssumeRoleRequest:
    role_arn: str
    session_name: str
    source_identity: str
    policy: str  # packed JSON session policy ("" for none: the role's own permissions)
    duration_seconds: int
    tags: dict[str, str] = field(default_factory=dict)
    region: str = "us-east-1"


def user_session(
    username: str, role_arn: str, group: str, region: str, duration: int, policy: str = ""
) -> AssumeRoleRequest:
    """The one shape of a researcher's STS session, for notebooks (fort-credentials, with a
    session policy) and for Athena queries (fort-query): RoleSessionName ``fort-<user>``,
    SourceIdentity ``<user>`` (CloudTrail attributes it) and the ``fort-user`` / ``fort-group``
    session tags the study roles' trust policy requires (docs/deploy-eks.md)."""
    from .sessionpolicy import session_tags, sts_name

    return AssumeRoleRequest(
        role_arn=role_arn,
        session_name=sts_name(username, "fort-"),
        source_identity=sts_name(username),
        policy=policy,
        duration_seconds=duration,
        tags=session_tags(username, group),
        region=region,
    )


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: dt.datetime

    def process_json(self) -> dict:
        """The ``credential_process`` output format (Version 1)."""
        return {
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "SessionToken": self.session_token,
            "Expiration": self.expiration.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class StsError(Exception):
    def __init__(self, message: str, retryable: bool = False, code: str = ""):
        super().__init__(message)
        self.retryable = retryable
        self.code = code


RETRYABLE_CODES = {
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalError",
    "RequestTimeout",
    "IDPCommunicationError",
}


class StsBackendBase(LoggingConfigurable):
    """Base class of STS backends (see the module docstring for the contract)."""

    calls = 0

    async def assume_role(self, request: AssumeRoleRequest) -> Credentials:
        raise NotImplementedError


class StsBackend(StsBackendBase):
    """AWS STS through boto3. Credentials for the hub side come from the usual boto3 chain (IRSA
    / instance role / environment); the endpoint honours ``AWS_ENDPOINT_URL`` /
    ``AWS_ENDPOINT_URL_STS`` like every boto3 client.

    Note: when the service itself runs on role credentials (role chaining), STS caps
    ``DurationSeconds`` at one hour.
    """

    endpoint_url = Unicode(
        "",
        help="""STS endpoint override; empty uses boto3's resolution (which honours
        `$AWS_ENDPOINT_URL`).

            c.StsBackend.endpoint_url = "https://sts.eu-west-1.amazonaws.com"
        """,
    ).tag(config=True)

    connect_timeout = Float(5.0, help="Seconds to wait for a connection to STS.").tag(config=True)
    read_timeout = Float(10.0, help="Seconds to wait for an STS answer.").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._clients: dict[str, object] = {}
        self._lock = threading.Lock()

    def client(self, region: str):
        """The boto3 STS client for *region* (one per region, made on first use)."""
        with self._lock:
            if region not in self._clients:
                import boto3
                from botocore.config import Config

                cfg = Config(
                    retries={"max_attempts": 1, "mode": "standard"},  # we retry ourselves
                    connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                )
                kwargs = {"region_name": region, "config": cfg}
                if self.endpoint_url:
                    kwargs["endpoint_url"] = self.endpoint_url
                self._clients[region] = boto3.session.Session().client("sts", **kwargs)
            return self._clients[region]

    def assume_role_blocking(self, request: AssumeRoleRequest) -> Credentials:
        """:meth:`assume_role` for code that already runs in a thread (e.g. an engine)."""
        from botocore.exceptions import BotoCoreError, ClientError

        self.calls += 1
        try:
            resp = self.client(request.region).assume_role(
                RoleArn=request.role_arn,
                RoleSessionName=request.session_name,
                SourceIdentity=request.source_identity,
                DurationSeconds=request.duration_seconds,
                Tags=[{"Key": k, "Value": v} for k, v in request.tags.items()],
                **({"Policy": request.policy} if request.policy else {}),
            )
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            msg = e.response.get("Error", {}).get("Message", "")
            raise StsError(f"STS {code}: {msg}", code in RETRYABLE_CODES, code) from None
        except BotoCoreError as e:
            raise StsError(f"STS unreachable: {e}", retryable=True, code="Unreachable") from None
        c = resp["Credentials"]
        exp = c["Expiration"]
        if exp.tzinfo is None:
            exp = exp.replace(tzinfo=dt.UTC)
        return Credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"], exp)

    async def assume_role(self, request: AssumeRoleRequest) -> Credentials:
        return await asyncio.get_running_loop().run_in_executor(
            None, self.assume_role_blocking, request
        )


class StubStsBackend(StsBackendBase):
    """An in-memory STS for tests, benchmarks and demos without AWS: issues random credentials
    valid for the requested duration, optionally after ``latency`` seconds. ``failures`` is a
    list of :class:`StsError` raised by the next calls (one per call), ``down`` makes every call
    fail as unreachable. ``requests`` keeps every request it was sent."""

    latency = Float(0.0, help="Seconds each call takes.").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.failures: list[StsError] = []
        self.down = False
        self.requests: list[AssumeRoleRequest] = []

    async def assume_role(self, request: AssumeRoleRequest) -> Credentials:
        self.calls += 1
        self.requests.append(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.down:
            raise StsError("STS unreachable: stub is down", retryable=True, code="Unreachable")
        if self.failures:
            raise self.failures.pop(0)
        key = "ASIA" + hashlib.sha1(secrets.token_bytes(8)).hexdigest()[:16].upper()  # noqa: S324
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        return Credentials(
            key,
            secrets.token_urlsafe(30),
            secrets.token_urlsafe(96),
            now + dt.timedelta(seconds=request.duration_seconds),
        )
