"""fort-credentials: per-user AWS credentials for notebooks (``python -m fort_hub.services.credentials``)."""

from .app import CredentialsHandler, CredentialsService
from .backends import (
    AssumeRoleRequest,
    Credentials,
    StsBackend,
    StsBackendBase,
    StsError,
    StubStsBackend,
)
from .sessionpolicy import (
    MAX_SESSION_POLICY_CHARS,
    SessionPolicyTooLarge,
    packed,
    session_policy,
    sts_name,
)

__all__ = [
    "MAX_SESSION_POLICY_CHARS",
    "AssumeRoleRequest",
    "Credentials",
    "CredentialsHandler",
    "CredentialsService",
    "SessionPolicyTooLarge",
    "StsBackend",
    "StsBackendBase",
    "StsError",
    "StubStsBackend",
    "packed",
    "session_policy",
    "sts_name",
]
