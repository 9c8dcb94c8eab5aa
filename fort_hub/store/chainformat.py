"""The audit chain's hashing format: the canonical bytes of a record and their SHA-256.

A record's hash covers every field but ``hash`` (``prev_hash`` and ``seq`` included), as sorted
compact JSON; :func:`canonical_parts` cuts those bytes around ``prev_hash`` and ``seq`` so that
PostgreSQL can chain a record under its lock without re-encoding JSON.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical(fields: dict[str, Any]) -> bytes:
    """The bytes that are hashed: every field but ``hash``, as sorted compact JSON."""
    data = {k: v for k, v in fields.items() if k != "hash"}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(fields)).hexdigest()


def _enc(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_parts(fields: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    """:func:`canonical` of *fields* plus ``prev_hash`` and ``seq``, cut around those two
    values: ``canonical(full) == pre + prev_hash + mid + str(seq) + suf``. Lets PostgreSQL chain
    a record whose seq and prev_hash are only known under the lock, without re-encoding JSON."""
    keys = sorted(
        [*(k for k in fields if k not in ("hash", "seq", "prev_hash")), "prev_hash", "seq"]
    )
    parts: list[str] = []
    cur = "{"
    for i, key in enumerate(keys):
        cur += ("," if i else "") + _enc(key) + ":"
        if key == "prev_hash":
            parts.append(cur + '"')
            cur = '"'
        elif key == "seq":
            parts.append(cur)
            cur = ""
        else:
            cur += _enc(fields[key])
    parts.append(cur + "}")
    pre, mid, suf = (p.encode() for p in parts)
    return pre, mid, suf


__all__ = ["canonical", "canonical_parts", "compute_hash"]
