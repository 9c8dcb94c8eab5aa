"""``fort-hub``: the command line.

Subcommands are small; the ones that belong to a part of fort-hub live in that part and are
imported only when used, so ``fort-hub check-policy`` stays fast and has no heavy imports.

- ``fort-hub check-policy FILE``
- ``fort-hub audit verify|export|head --db URL``
- ``fort-hub irsa-trust FILE --oidc-provider ARN [--namespace NS] [--prefix P]``
- ``fort-hub demo [--reset]``                      (fort_hub.dev.demo)
- ``fort-hub facebook-standin --port P --identities FILE``   (fort_hub.dev.facebook)
- ``fort-hub facebook-callback ...``               (fort_hub.dev.facebook)
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

#: subcommand -> "module:function" taking argv (list[str]) and returning an exit code
DELEGATED = {
    "demo": ("fort_hub.dev.demo:main", "run the whole platform on this machine"),
    "facebook-standin": (
        "fort_hub.dev.facebook:main",
        "run the local Facebook stand-in (dev only)",
    ),
    "facebook-callback": (
        "fort_hub.dev.facebook:callback_main",
        "send a signed deauthorize or data-deletion callback (dev only)",
    ),
}


def _check_policy(args) -> int:
    from .policy import PolicyError, load_policy

    try:
        policy = load_policy(args.file)
    except PolicyError as e:
        for err in e.errors:
            print(err)
        print(f"{len(e.errors)} error(s)", file=sys.stderr)
        return 1
    print(
        f"OK: {len(policy.groups)} groups, {len(policy.datasets)} datasets, "
        f"{len(policy.grants)} grants, {len(policy.profiles)} profiles"
    )
    return 0


def _irsa_trust(args) -> int:
    """Print, per study role of the policy, the trust policy ``irsa`` mode needs."""
    from .policy import PolicyError, load_policy
    from .spawners.identity import irsa_trust_policies

    try:
        policy = load_policy(args.file)
        trust = irsa_trust_policies(policy, args.oidc_provider, args.namespace, args.prefix)
    except PolicyError as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(trust, indent=2, sort_keys=True))
    return 0


def _open_store(url: str):
    from sqlalchemy.exc import ArgumentError

    from .store import Store, StoreError

    try:
        return Store(url, create=False)
    except (StoreError, ArgumentError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def _audit(args) -> int:
    from .store import StoreError
    from .store.core import redact_url

    store = _open_store(args.db)
    if store is None:
        return 2
    try:
        if not store.has_audit_log():
            print(
                f"error: there is no audit log in {redact_url(store.url)} (no fort_audit_log "
                "table): check --db, it must be the fort store the hub and services use",
                file=sys.stderr,
            )
            return 2
        if args.audit_cmd == "verify":
            expect = None
            if args.expect_head:
                seq, _, digest = args.expect_head.partition(":")
                if not (seq.isdigit() and len(digest) == 64):
                    raise ValueError(
                        f"--expect-head must be SEQ:HASH as printed by 'fort-hub audit head', "
                        f"not {args.expect_head!r}"
                    )
                expect = (int(seq), digest)
            result = store.audit.verify(expect_head=expect)
            print(result)
            return 0 if result.ok else 1
        if args.audit_cmd == "head":
            seq, digest = store.audit.head()
            print(f"{seq}:{digest}")
            return 0
        from .store.auditsearch import is_subject

        since = _utc_iso(args.since, args.timezone) if args.since else None
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
        try:
            n = 0
            for rec in store.audit.iter_all():
                if args.user and rec.actor != args.user and not is_subject(rec, args.user):
                    continue
                if args.action and not rec.action.startswith(args.action):
                    continue
                if since and rec.ts < since:
                    continue
                out.write(json.dumps(rec.as_dict(), sort_keys=True) + "\n")
                n += 1
        finally:
            if out is not sys.stdout:
                out.close()
        print(f"exported {n} record(s)", file=sys.stderr)
        return 0
    except (StoreError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _utc_iso(value: str, timezone: str) -> str:
    """``--since`` (``today``, ``yesterday``, ``7d``, ``24h``, a date or an ISO date-time, in
    *timezone* unless it has an offset) -> the audit log's UTC ISO form."""
    import datetime as dt

    from .policy import dates
    from .store import isoformat

    try:
        when = dates.parse_since(value, dates.zone(timezone), dt.datetime.now(dt.UTC))
    except ValueError as e:
        raise ValueError(f"--{e}") from None
    return isoformat(when)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fort-hub", description="fort-hub: the command line.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"fort-hub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-policy", help="validate a policy file")
    p.add_argument("file")
    p.set_defaults(func=_check_policy)

    t = sub.add_parser(
        "irsa-trust",
        help="print each study role's trust policy for irsa mode (role ARN -> policy JSON)",
    )
    t.add_argument("file", help="the fort policy file")
    t.add_argument(
        "--oidc-provider",
        required=True,
        help="the cluster's IAM OIDC provider ARN, "
        "arn:aws:iam::ACCOUNT:oidc-provider/oidc.eks.REGION.amazonaws.com/id/ID",
    )
    t.add_argument("--namespace", default="fort", help="the notebooks' namespace (default fort)")
    t.add_argument("--prefix", default="fort",
                   help="the prefix of c.FortKubeSpawner.service_account_name_template "
                   "(default fort)")  # fmt: skip
    t.set_defaults(func=_irsa_trust)

    a = sub.add_parser("audit", help="verify or export the audit log")
    asub = a.add_subparsers(dest="audit_cmd", required=True)
    v = asub.add_parser("verify", help="walk the hash chain; exit 1 naming the first bad record")
    v.add_argument("--db", required=True, help="store URL, e.g. sqlite:///fort.sqlite")
    v.add_argument("--expect-head", help="SEQ:HASH printed earlier by 'fort-hub audit head'")
    h = asub.add_parser("head", help="print the newest record's SEQ:HASH, to keep elsewhere")
    h.add_argument("--db", required=True)
    e = asub.add_parser("export", help="write records as JSON lines")
    e.add_argument("--db", required=True)
    e.add_argument("--user", help="records by this user (actor) or about them (subject)")
    e.add_argument("--action", help="action name or prefix: 'spawn' matches spawn.start, ...")
    e.add_argument(
        "--since",
        help="today, yesterday, 7d, 24h, a date (2026-11-01) or an ISO-8601 time "
        "(2026-11-01T12:00:00), in --timezone unless it has an offset",
    )
    e.add_argument("--timezone", default="UTC", help="time zone of --since (default UTC)")
    e.add_argument("--output", "-o", help="file to write (default: standard output)")
    a.set_defaults(func=_audit)

    for name, (target, help_text) in DELEGATED.items():
        d = sub.add_parser(name, help=help_text, add_help=False)
        d.set_defaults(delegate=target)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        module, _, func = DELEGATED[argv[0]][0].partition(":")
        return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
