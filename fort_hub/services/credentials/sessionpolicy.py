"""Pure builders for what fort-credentials sends to STS: the inline session policy, the session
name and source identity, and the session tags. No I/O; tested by comparing data."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

from ...policy import Policy

#: STS's limit on the plain-text inline session policy (characters, whitespace excluded)
MAX_SESSION_POLICY_CHARS = 2048
#: RoleSessionName / SourceIdentity character set: ASCII only (Python's \w alone is Unicode)
_STS_NAME_BAD = re.compile(r"[^\w+=,.@-]", re.ASCII)
_TAG_VALUE_BAD = re.compile(r"[^\w\s.:/=+\-@]")


class SessionPolicyTooLarge(ValueError):
    """The session policy would exceed STS's 2,048-character limit."""


def sts_name(value: str, prefix: str = "", max_len: int = 64) -> str:
    """*prefix* + *value* in STS's ``[\\w+=,.@-]`` set, 2..*max_len* characters. When characters
    were replaced or the name was cut, a short hash of the original keeps names distinct."""
    raw = prefix + value
    clean = _STS_NAME_BAD.sub("-", raw)
    if clean != raw or len(clean) > max_len:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        clean = clean[: max_len - 9] + "-" + digest
    return clean if len(clean) >= 2 else (clean + "--")[:2]


def tag_value(value: str) -> str:
    """A session tag value in STS's character set, at most 256 characters."""
    return _TAG_VALUE_BAD.sub("-", value)[:256]


def _split(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> (``bucket``, ``some/prefix/``)."""
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    return bucket, key


def _prefix_statements(sid: str, uris: Iterable[str], actions: list[str]) -> list[dict]:
    uris = sorted(set(uris))
    if not uris:
        return []
    objects = [f"arn:aws:s3:::{b}/{k}*" for b, k in map(_split, uris)]
    by_bucket: dict[str, list[str]] = {}
    for b, k in map(_split, uris):
        by_bucket.setdefault(b, []).extend([k, k + "*"] if k else ["*"])
    out = [{"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": objects}]
    for i, (bucket, prefixes) in enumerate(sorted(by_bucket.items())):
        out.append(
            {
                "Sid": f"{sid}List{i}",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": sorted(set(prefixes))}},
            }
        )
    return out


OWN_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]


def session_policy(policy: Policy, username: str, groups: Iterable[str]) -> dict:
    """The inline session policy for *username* assuming the role of *groups* (already
    effective): read/write on the user's own prefix, read on the S3 prefixes of datasets granted
    ``s3:read`` to *groups*, write where they are granted ``s3:write``."""
    groups = list(groups)
    statements: list[dict] = []
    own = policy.user_prefix(username)
    if own:
        statements += _prefix_statements("OwnPrefix", [own], OWN_ACTIONS)
    read = [
        p for ds in policy.datasets_for(groups, "s3:read") for p in policy.datasets[ds].s3_prefixes
    ]
    write = [
        p for ds in policy.datasets_for(groups, "s3:write") for p in policy.datasets[ds].s3_prefixes
    ]
    statements += _prefix_statements("DatasetRead", read, ["s3:GetObject"])
    statements += _prefix_statements("DatasetWrite", write, ["s3:PutObject"])
    if not statements:
        # an empty session policy would mean "whatever the role allows": deny instead
        statements = [{"Sid": "Nothing", "Effect": "Deny", "Action": "*", "Resource": "*"}]
    return {"Version": "2012-10-17", "Statement": statements}


def packed(document: dict) -> str:
    """The document as STS counts it (no whitespace); raises :class:`SessionPolicyTooLarge`."""
    text = json.dumps(document, separators=(",", ":"), sort_keys=True)
    if len(text) > MAX_SESSION_POLICY_CHARS:
        n = sum(len(s.get("Resource", [])) for s in document["Statement"])
        raise SessionPolicyTooLarge(
            f"the session policy is {len(text)} characters, over STS's limit of "
            f"{MAX_SESSION_POLICY_CHARS} ({n} S3 resources): grant this group fewer datasets or "
            "give the datasets shorter or shared s3_prefixes"
        )
    return text


def session_tags(username: str, group: str) -> dict[str, str]:
    return {"fort-user": tag_value(username), "fort-group": tag_value(group)}
