"""fort-credentials: short-lived, per-user AWS credentials for notebooks (``credential_process``).

``GET /services/fort-credentials/api/v1/aws/credentials?role=NAME`` with the user's hub token
returns ``{"Version": 1, "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}`` for
the token's own user only. See docs/services.md.
"""

from __future__ import annotations

from jupyterhub.traitlets import EntryPointType
from traitlets import Float, Instance, Integer, TraitError, default, validate

from ... import scopes
from ...policy.loader import NAME_RE
from ..base import FortServiceApp
from ..handler import FortHandler, ServiceError
from ..pages import ServiceRoot
from .backends import StsBackend, StsBackendBase
from .issuer import CredentialIssuer, IssuerSettings


class CredentialsHandler(FortHandler):
    required_scopes = (scopes.CREDENTIALS_AWS,)
    query_params = ("role",)

    def check_query_params(self) -> None:
        if "user" in self.request.query_arguments:
            raise ServiceError(
                400, "unknown query parameter 'user': credentials are only issued for the "
                "token's own user",
            )  # fmt: skip
        super().check_query_params()

    def _role_argument(self) -> str:
        role = self.get_query_argument("role", "")
        if not role:
            raise ServiceError(400, "give exactly one ?role=NAME (the role name, not its ARN)")
        if not NAME_RE.match(role):
            raise ServiceError(400, f"{role[:80]!r} is not a valid role name")
        return role

    async def get(self) -> None:
        if self.is_service:
            raise ServiceError(403, "AWS credentials are issued to users, not services")
        role = self._role_argument()
        issued = await self.app.issuer.credentials_for(
            self.username, role, request_id=self.request_id, client=self.client
        )
        self.write_json(issued.process_json())


class CredentialsRoot(ServiceRoot):
    """The service root: which AWS roles the browser's user may get credentials for now."""

    links = (("credentials", "api/v1/aws/credentials"),)

    async def page(self) -> None:
        policy, groups = await self.app.access.aeffective(self.username)
        await self.render_page(
            "fort-credentials.html",
            title="AWS credentials",
            me=self.username,
            roles=policy.roles_for(groups),
        )


class CredentialsService(FortServiceApp):
    """The fort-credentials hub service (``python -m fort_hub.services.credentials``)."""

    name = "fort-credentials"
    default_service_name = scopes.CREDENTIALS_SERVICE
    description = "Short-lived per-user AWS credentials for notebooks"

    sts_backend_class = EntryPointType(
        StsBackend,
        klass=StsBackendBase,
        entry_point_group="fort_hub.sts_backends",
        help="""Class that talks to STS (see fort_hub.services.credentials.backends for the
        contract): a name registered in the `fort_hub.sts_backends` entry point group or an
        import string. `sts` (`StsBackend`) uses boto3; `stub` (`StubStsBackend`) issues fake
        credentials (tests, demos without AWS).

            c.CredentialsService.sts_backend_class = "stub"
        """,
    ).tag(config=True)

    backend = Instance(StsBackendBase)

    @default("backend")
    def _default_backend(self):
        return self.sts_backend_class(parent=self)

    duration = Integer(
        3600,
        help="""Lifetime of issued credentials in seconds (STS DurationSeconds): at least 900
        (15 min), at most the role's MaxSessionDuration. When the service itself runs on role
        credentials (role chaining, e.g. IRSA), STS allows at most 3600.

            c.CredentialsService.duration = 7200
        """,
    ).tag(config=True)

    @validate("duration")
    def _validate_duration(self, proposal):
        v = proposal["value"]
        if not 900 <= v <= 43200:
            raise TraitError(
                f"CredentialsService.duration must be between 900 and 43200 seconds, not {v}"
            )
        return v

    refresh_margin = Integer(
        300,
        help="""Cached credentials are reused until this many seconds before they expire;
        afterwards a new STS session is requested.

            c.CredentialsService.refresh_margin = 600
        """,
    ).tag(config=True)

    @validate("refresh_margin")
    def _validate_margin(self, proposal):
        if not 0 <= proposal["value"] < self.duration:
            raise TraitError("CredentialsService.refresh_margin must be >= 0 and < duration")
        return proposal["value"]

    sts_attempts = Integer(
        4,
        help="""How many times one STS call is tried when STS throttles or fails transiently
        (exponential backoff with full jitter between attempts).

            c.CredentialsService.sts_attempts = 6
        """,
    ).tag(config=True)

    backoff_base = Float(
        0.2,
        help="""First backoff step in seconds between STS attempts (doubles each retry).

            c.CredentialsService.backoff_base = 0.5
        """,
    ).tag(config=True)

    backoff_max = Float(
        5.0,
        help="""Largest backoff step in seconds between STS attempts.

            c.CredentialsService.backoff_max = 10
        """,
    ).tag(config=True)

    @validate("sts_attempts", "backoff_base", "backoff_max")
    def _validate_retry(self, proposal):
        v, name = proposal["value"], proposal["trait"].name
        if (name == "sts_attempts" and v < 1) or v < 0:
            raise TraitError(f"CredentialsService.{name} must be positive, not {v}")
        return v

    def handlers(self):
        return [("", CredentialsRoot), ("api/v1/aws/credentials", CredentialsHandler)]

    def initialize(self, argv=None):
        super().initialize(argv)
        settings = IssuerSettings(
            self.duration, self.refresh_margin, self.sts_attempts, self.backoff_base,
            self.backoff_max,
        )  # fmt: skip
        self.issuer = CredentialIssuer(self.access, self.backend, settings)

    def on_policy_change(self, policy) -> None:
        # a role may have been withdrawn: issue afresh (authorization is checked on every call)
        self.issuer.forget()

    async def credentials_for(self, username: str, role: str, request_id="", client=""):
        """See :meth:`CredentialIssuer.credentials_for`."""
        return await self.issuer.credentials_for(username, role, request_id, client)
