"""The one check for names that end up inside AWS documents, S3 keys and STS requests.

A hub username is interpolated into the user's S3 prefix (``users/<u>/``), the ARNs and the
``s3:prefix`` condition of the session policy, the STS session name, SourceIdentity and session
tags, and ``FORT_USER_PREFIX``. In IAM, ``*`` and ``?`` are wildcards and ``${...}`` is a
policy variable, so a user called ``a*`` would be given ``users/a*/*``: every user's prefix. A
``/`` would nest one user's prefix inside another's.

So usernames are checked against :data:`USERNAME_RE` where they are made (the authenticator
refuses the login, the policy loader and fort-groups refuse the member) and again where they
are used (fort-credentials, the spawners, the Athena engine refuse with :class:`UnsafeName`):
never escaped into something else, which could make two users one.

The names fort-hub writes as the audit actor of its own actions (:data:`RESERVED_USERNAMES`)
are refused the same way: a user so named would be confused with the hub or a service in the
audit log, and their own export (``fort-hub audit export --user``) would hold its records.
"""

from __future__ import annotations

import re
from collections.abc import Collection

#: ASCII letters and digits, then letters, digits and ``. _ @ + -`` (emails fit), 1-128
#: characters. No IAM wildcard (``* ?``), policy variable (``$ { }``), path separator,
#: whitespace or non-ASCII character.
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}\Z")
USERNAME_RULE = (
    "a username must be 1-128 characters: ASCII letters, digits and . _ @ + - "
    "(starting with a letter or digit)"
)
#: audit actors that are not users: the hub (``jupyterhub``: a new user's hub groups), a
#: sign-in refused before it had a username (``anonymous``), Meta's callbacks for no known
#: account (``facebook``), and the fort services' default hub service names (fort-groups
#: records its passes under its service name). Compared case-insensitively.
RESERVED_USERNAMES = frozenset({"anonymous", "facebook", "jupyterhub", "fort-groups",
                                "fort-credentials", "fort-query"})  # fmt: skip
_ALLOWED_CHAR = re.compile(r"[A-Za-z0-9._@+-]\Z")
#: the fixed text of an S3 key or prefix fort-hub builds ARNs from: no wildcard or variable
S3_KEY_RE = re.compile(r"^[A-Za-z0-9._@+=/-]*\Z")


class UnsafeName(ValueError):
    """A name that must not reach an ARN, an S3 prefix or an STS request. The message says why
    and is safe to show to the user it names."""


def is_safe_username(name: object) -> bool:
    return (
        isinstance(name, str)
        and USERNAME_RE.match(name) is not None
        and name.lower() not in RESERVED_USERNAMES
    )


def check_username_problem(name: object, reserved: Collection[str] = ()) -> str:
    """Why *name* is not an allowed username (a sentence naming the characters), or ``""``.
    *reserved*: more names to refuse, e.g. the hub's services (case-insensitive)."""
    taken = isinstance(name, str) and name.lower() in {r.lower() for r in reserved}
    if is_safe_username(name) and not taken:
        return ""
    shown = repr(name)[:80]
    if isinstance(name, str) and name.lower() in RESERVED_USERNAMES:
        return f"{shown} is reserved: fort-hub records its own actions in the audit log under it"
    if taken:
        return f"{shown} is reserved: it is the name of a service of this hub"
    if isinstance(name, str):
        bad = sorted({c for c in name if not _ALLOWED_CHAR.match(c)})
        if bad:
            shown += f" (not allowed: {' '.join(repr(c) for c in bad[:8])})"
    return f"{shown} is not an allowed username: {USERNAME_RULE}"


def check_username(name: object) -> str:
    """*name* unchanged, or :class:`UnsafeName` naming what is wrong with it."""
    problem = check_username_problem(name)
    if problem:
        raise UnsafeName(problem)
    return name  # type: ignore[return-value]


def check_user_prefix_template(template: object) -> str | None:
    """The problem with an ``aws.user_prefix`` template, or None when it is safe: exactly one
    ``{username}`` followed by ``/`` (so no user's prefix can contain another's), no other
    braces, and otherwise only :data:`S3_KEY_RE` characters, not starting with ``/``."""
    if not isinstance(template, str) or template.count("{username}") != 1:
        return "must contain '{username}' exactly once"
    before, _, after = template.partition("{username}")
    if "{" in before + after or "}" in before + after:
        return "may use only the field '{username}' (no other fields or format specs)"
    if not after.startswith("/"):
        return "must have '/' right after '{username}' (else one user's prefix covers another's)"
    fixed = before + "{}" + after
    if not S3_KEY_RE.match(before + after) or "//" in fixed or before.startswith("/"):
        return (
            "may contain only letters, digits, . _ @ + = - and single '/' separators "
            "(no wildcard, policy variable or leading '/')"
        )
    return None
