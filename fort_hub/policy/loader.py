"""Read and validate a policy YAML file, collecting every error with its file, line and key path."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any

import yaml

from ..naming import check_user_prefix_template, check_username_problem, is_safe_username
from . import dates
from .model import (
    DATASET_ACTIONS,
    UTC,
    AwsSettings,
    Dataset,
    Grant,
    Group,
    Member,
    Policy,
    Profile,
    Quota,
)
from .yamltree import INVALID, PolicyError, PolicyIssue, Tree, compose, typename

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
ROLE_ARN_RE = re.compile(
    r"^arn:aws[a-zA-Z-]*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}\Z", re.ASCII
)
#: the key part may not hold an IAM wildcard or policy variable (it is copied into ARNs)
S3_PREFIX_RE = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._@+=/-]*)?\Z")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}\Z")
COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
QUANTITY_RE = re.compile(r"^\d+(\.\d+)?([KMGTPE]i?|[kmgtpe])?\Z")
SIZE_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
SIZE_UNITS |= {"KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40, "PI": 2**50}


class _Validator:
    """Turns the raw tree into a :class:`Policy`, recording every problem on the tree."""

    TOP = {"version", "contact", "timezone", "groups", "datasets", "grants", "profiles", "aws",
           "quotas"}  # fmt: skip

    def __init__(self, tree: Tree, base_dir: Path):
        self.t = tree
        self.base_dir = base_dir
        self.tz: dt.tzinfo = UTC

    # -- small typed getters ---------------------------------------------------------------
    def mapping(self, value, path, allowed: set[str], required: set[str] = frozenset()) -> dict:
        if value is INVALID:  # already reported
            return {}
        if not isinstance(value, dict):
            self.t.error(path, f"must be a mapping, not {typename(value)}")
            return {}
        for key in value:
            if key not in allowed:
                self.t.error(
                    path + (key,), f"unknown key '{key}' (allowed: {', '.join(sorted(allowed))})"
                )
        for key in sorted(required - value.keys()):
            self.t.error(path, f"missing required key '{key}'")
        return value

    def seq(self, value, path) -> list:
        if value is None or value is INVALID:
            return []
        if not isinstance(value, list):
            self.t.error(path, f"must be a list, not {typename(value)}")
            return []
        return value

    def string(self, value, path, *, pattern: re.Pattern | None = None, what: str = "") -> str:
        if value is INVALID:
            return ""
        if not isinstance(value, str) or not value:
            self.t.error(path, f"must be a non-empty string, not {typename(value)}")
            return ""
        if pattern is not None and not pattern.match(value):
            self.t.error(path, f"{value!r} is not {what or 'valid'}")
        return value

    def name(self, value, path) -> str:
        return self.string(value, path, pattern=NAME_RE, what="a valid name (letters, digits, ._-)")

    def names(self, value, path, known: dict | None, kind: str) -> tuple[str, ...]:
        out = []
        for i, item in enumerate(self.seq(value, path)):
            n = self.string(item, path + (i,))
            if n and known is not None and n not in known:
                self.t.error(path + (i,), f"unknown {kind} '{n}'")
            out.append(n)
        return tuple(out)

    def number(self, value, path, *, integer=False, minimum=0) -> Any:
        if value is INVALID:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.t.error(path, f"must be a number, not {typename(value)}")
            return None
        if integer and not isinstance(value, int):
            self.t.error(path, f"must be a whole number, not {value!r}")
            return None
        if value < minimum:
            self.t.error(path, f"must be >= {minimum}, not {value!r}")
            return None
        return value

    def timezone(self, value) -> str:
        """The policy's ``timezone`` (read first: every date in the file is in it)."""
        if value is INVALID:
            return "UTC"
        try:
            if not isinstance(value, str):
                raise ValueError(f"must be a time zone name like UTC or Europe/Oslo, not {value!r}")
            self.tz = dates.zone(value)
        except ValueError as e:
            self.t.error(("timezone",), str(e))
            return "UTC"
        return value

    def expiry(self, value, path) -> dt.datetime | None:
        if value is None or value is INVALID:
            return None
        if isinstance(value, dt.date):
            return dates.as_expiry(value, self.tz)
        if isinstance(value, str):  # a quoted "2026-12-31" means the same day as a bare one
            try:
                return dates.parse_expiry(value, self.tz)
            except ValueError:
                pass
        self.t.error(path, f"must be a date like 2027-01-31, not {value!r}")
        return None

    # -- sections ---------------------------------------------------------------------------
    def policy(self, raw) -> Policy | None:
        raw = self.mapping(raw, (), self.TOP, {"version"})
        version = raw.get("version")
        if "version" in raw and version != 1:
            self.t.error(("version",), f"unsupported policy version {version!r} (supported: 1)")
        timezone = self.timezone(raw.get("timezone", "UTC"))
        groups = self.groups(raw.get("groups"))
        datasets = self.datasets(raw.get("datasets"))
        grants = self.grants(raw.get("grants"), groups, datasets)
        profiles = self.profiles(raw.get("profiles"), groups)
        aws = self.aws(raw.get("aws"), groups)
        default_quota, group_quotas = self.quotas(raw.get("quotas"), groups)
        contact = self.string(raw["contact"], ("contact",)) if "contact" in raw else ""
        if self.t.errors:
            return None
        return Policy(
            version=1,
            groups=groups,
            datasets=datasets,
            grants=grants,
            profiles=profiles,
            aws=aws,
            default_quota=default_quota,
            group_quotas=group_quotas,
            contact=contact,
            timezone=timezone,
            source=self.t.file,
        )

    def _unique(self, seen: dict, name: str, path: tuple, kind: str) -> bool:
        if not name:
            return False
        if name in seen:
            self.t.error(path, f"duplicate {kind} '{name}'")
            return False
        return True

    def groups(self, raw) -> dict[str, Group]:
        out: dict[str, Group] = {}
        for i, g in enumerate(self.seq(raw, ("groups",))):
            p = ("groups", i)
            g = self.mapping(g, p, {"name", "description", "members"}, {"name"})
            name = self.name(g.get("name"), p + ("name",)) if "name" in g else ""
            members = []
            seen_users: set[str] = set()
            for j, m in enumerate(self.seq(g.get("members"), p + ("members",))):
                mp = p + ("members", j)
                if isinstance(m, str):
                    user, expires = m, None
                else:
                    m = self.mapping(m, mp, {"user", "expires"}, {"user"})
                    user = self.string(m.get("user"), mp + ("user",)) if "user" in m else ""
                    expires = self.expiry(m.get("expires"), mp + ("expires",))
                if user and not is_safe_username(user):
                    self.t.error(mp, check_username_problem(user))
                if user in seen_users:
                    self.t.error(mp, f"duplicate member '{user}'")
                seen_users.add(user)
                members.append(Member(user, expires))
            if self._unique(out, name, p + ("name",), "group"):
                out[name] = Group(name, str(g.get("description", "")), tuple(members))
        return out

    def datasets(self, raw) -> dict[str, Dataset]:
        out: dict[str, Dataset] = {}
        keys = {"name", "description", "engine", "location", "tables", "s3_prefixes", "noise"}
        for i, d in enumerate(self.seq(raw, ("datasets",))):
            p = ("datasets", i)
            d = self.mapping(d, p, keys, {"name", "engine"})
            name = self.name(d.get("name"), p + ("name",)) if "name" in d else ""
            engine = d.get("engine")
            if "engine" in d and engine not in ("duckdb", "athena"):
                self.t.error(p + ("engine",), f"unknown engine {engine!r} (known: duckdb, athena)")
            tables = self.names(d.get("tables"), p + ("tables",), None, "table")
            location = self.location(d.get("location"), p + ("location",), engine, tables)
            if engine == "duckdb" and not tables and "paths" in location:
                tables = tuple(location["paths"])
            prefixes = []
            for j, s in enumerate(self.seq(d.get("s3_prefixes"), p + ("s3_prefixes",))):
                s = self.string(
                    s,
                    p + ("s3_prefixes", j),
                    pattern=S3_PREFIX_RE,
                    what="an s3:// URI without wildcards or variables (* ? $ { })",
                )
                prefixes.append(s if s.endswith("/") else s + "/")
            noise = self.noise(d.get("noise"), p + ("noise",))
            if self._unique(out, name, p + ("name",), "dataset"):
                out[name] = Dataset(
                    name, str(engine), str(d.get("description", "")), tables, location,
                    tuple(prefixes), noise,
                )  # fmt: skip
        return out

    def noise(self, raw, path) -> dict:
        """{column: {distribution: gaussian, variance: V}}: the release's additive noise."""
        if raw is None:
            return {}
        cols = self.mapping(raw, path, set(raw) if isinstance(raw, dict) else set())
        out = {}
        for col, spec in cols.items():
            p = path + (col,)
            self.string(col, p, pattern=COLUMN_RE, what="a column name")
            spec = self.mapping(spec, p, {"distribution", "variance"}, {"distribution", "variance"})
            if "distribution" in spec and spec["distribution"] != "gaussian":
                self.t.error(p + ("distribution",), f"unknown distribution "
                             f"{spec['distribution']!r} (known: gaussian)")  # fmt: skip
            if "variance" in spec:
                variance = self.number(spec["variance"], p + ("variance",))
                if variance is not None and len(spec) == 2:
                    out[col] = {"distribution": "gaussian", "variance": float(variance)}
        return out

    def location(self, raw, path, engine, tables) -> dict:
        if engine == "athena":
            loc = self.mapping(
                raw, path, {"catalog", "database", "workgroup", "output_location"},
                {"database", "workgroup"},
            )  # fmt: skip
            for k in loc:
                self.string(loc[k], path + (k,))
            return {"catalog": "AwsDataCatalog", **loc}
        if engine != "duckdb":
            return {}
        loc = self.mapping(raw, path, {"paths", "database"})
        if ("paths" in loc) == ("database" in loc):
            self.t.error(path, "give exactly one of 'paths' (table -> file) or 'database'")
            return {}
        if "database" in loc:
            return {
                "database": str(self._resolve(self.string(loc["database"], path + ("database",))))
            }
        raw_paths = loc["paths"]
        paths = self.mapping(
            raw_paths, path + ("paths",), set(raw_paths) if isinstance(raw_paths, dict) else set()
        )
        resolved = {}
        for table, file in paths.items():
            if tables and table not in tables:
                self.t.error(path + ("paths", table), f"table '{table}' is not in 'tables'")
            resolved[table] = str(self._resolve(self.string(file, path + ("paths", table))))
        return {"paths": resolved}

    def _resolve(self, file: str) -> Path | str:
        if not file or "://" in file:
            return file
        return (self.base_dir / os.path.expanduser(file)).resolve()

    def grants(self, raw, groups, datasets) -> tuple[Grant, ...]:
        out = []
        for i, g in enumerate(self.seq(raw, ("grants",))):
            p = ("grants", i)
            g = self.mapping(
                g, p, {"group", "datasets", "actions"}, {"group", "datasets", "actions"}
            )
            group = self.string(g.get("group"), p + ("group",)) if "group" in g else ""
            if group and group not in groups:
                self.t.error(p + ("group",), f"unknown group '{group}'")
            ds = self.names(g.get("datasets"), p + ("datasets",), datasets, "dataset")
            actions = self.names(g.get("actions"), p + ("actions",), None, "action")
            for j, a in enumerate(actions):
                if a and a not in DATASET_ACTIONS:
                    self.t.error(
                        p + ("actions", j),
                        f"unknown action '{a}' (known: {', '.join(DATASET_ACTIONS)})",
                    )
            out.append(Grant(group, ds, actions, i))
        return tuple(out)

    def profiles(self, raw, groups) -> tuple[Profile, ...]:
        keys = {
            "slug", "display_name", "description", "image", "cpu", "memory", "gpu",
            "node_selector", "tolerations", "groups", "default", "unlisted_choice",
        }  # fmt: skip
        out: list[Profile] = []
        seen: dict[str, bool] = {}
        first_default: int | None = None
        for i, pr in enumerate(self.seq(raw, ("profiles",))):
            p = ("profiles", i)
            pr = self.mapping(pr, p, keys, {"slug", "display_name", "image"})
            slug = self.name(pr.get("slug"), p + ("slug",)) if "slug" in pr else ""
            cpu = self.resources(pr.get("cpu"), p + ("cpu",), memory=False)
            mem = self.resources(pr.get("memory"), p + ("memory",), memory=True)
            gpu = self.number(pr.get("gpu", 0), p + ("gpu",), integer=True) or 0
            default = pr.get("default", False)
            if not isinstance(default, bool):
                self.t.error(p + ("default",), f"must be true or false, not {default!r}")
            if default is True and first_default is not None:
                self.t.error(
                    p + ("default",),
                    f"only one profile may say 'default: true' (profiles[{first_default}] does)",
                )
            elif default is True:
                first_default = i
            ns = pr.get("node_selector") or {}
            ns = self.mapping(
                ns, p + ("node_selector",), set(ns) if isinstance(ns, dict) else set()
            )
            tolerations = tuple(
                self.mapping(t, p + ("tolerations", j), {"key", "operator", "value", "effect", "tolerationSeconds"})
                for j, t in enumerate(self.seq(pr.get("tolerations"), p + ("tolerations",)))
            )  # fmt: skip
            unlisted = self.unlisted(pr.get("unlisted_choice"), p + ("unlisted_choice",))
            if self._unique(seen, slug, p + ("slug",), "profile"):
                seen[slug] = True
                out.append(Profile(
                    slug=slug,
                    display_name=str(pr.get("display_name", "")),
                    image=self.string(pr.get("image"), p + ("image",)) if "image" in pr else "",
                    description=str(pr.get("description", "")),
                    cpu_guarantee=cpu.get("guarantee"), cpu_limit=cpu.get("limit"),
                    mem_guarantee=mem.get("guarantee"), mem_limit=mem.get("limit"),
                    gpu=gpu,
                    node_selector={str(k): str(v) for k, v in ns.items()},
                    tolerations=tolerations,
                    groups=self.names(pr.get("groups"), p + ("groups",), groups, "group"),
                    default=default is True,
                    unlisted_choice=unlisted,
                ))  # fmt: skip
        return tuple(out)

    def resources(self, raw, path, memory: bool) -> dict:
        if raw is None:
            return {}
        r = self.mapping(raw, path, {"guarantee", "limit"})
        out: dict = {}
        for k, v in r.items():
            if memory:
                if not isinstance(v, str | int) or not QUANTITY_RE.match(str(v)):
                    self.t.error(path + (k,), f"{v!r} is not a memory size like 512M or 4G")
                else:
                    out[k] = str(v)
            else:
                n = self.number(v, path + (k,))
                if n is not None:
                    out[k] = float(n)
        if memory and {"guarantee", "limit"} <= out.keys():
            if parse_size(out["guarantee"]) > parse_size(out["limit"]):
                self.t.error(path, "guarantee is larger than limit")
        elif {"guarantee", "limit"} <= out.keys() and out["guarantee"] > out["limit"]:
            self.t.error(path, "guarantee is larger than limit")
        return out

    def unlisted(self, raw, path) -> dict | None:
        if raw is None:
            return None
        u = self.mapping(
            raw, path, {"enabled", "display_name", "validation_regex"}, {"validation_regex"}
        )
        enabled = u.get("enabled", True)
        if not isinstance(enabled, bool):
            self.t.error(path + ("enabled",), f"must be true or false, not {enabled!r}")
            return None
        if not enabled:
            return None
        regex = self.string(u.get("validation_regex"), path + ("validation_regex",))
        try:
            re.compile(regex)
        except re.error as e:
            self.t.error(path + ("validation_regex",), f"invalid regular expression: {e}")
        return {"display_name": str(u.get("display_name", "Image")), "validation_regex": regex}

    def aws(self, raw, groups) -> AwsSettings:
        if raw is None:
            return AwsSettings()
        p = ("aws",)
        a = self.mapping(raw, p, {"region", "roles", "bucket", "user_prefix"})
        roles = a.get("roles") or {}
        roles = self.mapping(
            roles, p + ("roles",), set(roles) if isinstance(roles, dict) else set()
        )
        for g, arn in roles.items():
            if g not in groups:
                self.t.error(p + ("roles", g), f"unknown group '{g}'")
            if not isinstance(arn, str) or not ROLE_ARN_RE.match(arn):
                self.t.error(
                    p + ("roles", g),
                    f"{arn!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)",
                )
        bucket = a.get("bucket", "")
        if bucket:
            self.string(bucket, p + ("bucket",), pattern=BUCKET_RE, what="a valid S3 bucket name")
        prefix = a.get("user_prefix", "users/{username}/")
        problem = check_user_prefix_template(prefix)
        if problem:
            self.t.error(p + ("user_prefix",), f"{prefix!r} {problem}")
        region = self.string(a.get("region", "us-east-1"), p + ("region",), pattern=REGION_RE,
                             what="an AWS region like us-east-1")  # fmt: skip
        return AwsSettings(
            region=region or "us-east-1",
            roles={str(k): str(v) for k, v in roles.items()},
            bucket=str(bucket or ""),
            user_prefix=prefix if isinstance(prefix, str) else "users/{username}/",
        )

    def quota(self, raw, path, base: Quota) -> Quota:
        q = self.mapping(raw, path, set(Quota.FIELDS))
        values = base.as_dict()
        for k, v in q.items():
            if k not in values:
                continue  # reported by mapping()
            if k == "bytes_scanned_per_day" and isinstance(v, str):
                try:
                    values[k] = parse_size(v)
                except ValueError as e:
                    self.t.error(path + (k,), str(e))
                continue
            n = self.number(v, path + (k,), integer=True)
            if n is not None and k in values:
                values[k] = n
        return Quota(**values)

    def quotas(self, raw, groups) -> tuple[Quota, dict[str, Quota]]:
        if raw is None:
            return Quota(), {}
        q = self.mapping(raw, ("quotas",), {"defaults", "groups"})
        default = self.quota(q.get("defaults") or {}, ("quotas", "defaults"), Quota())
        overrides = {}
        per_group = q.get("groups") or {}
        if not isinstance(per_group, dict):
            self.t.error(("quotas", "groups"), "must be a mapping of group name to limits")
            per_group = {}
        for g, v in per_group.items():
            if g not in groups:
                self.t.error(("quotas", "groups", g), f"unknown group '{g}'")
            overrides[g] = self.quota(v or {}, ("quotas", "groups", g), default)
        return default, overrides


def parse_size(value: str | int) -> int:
    """``"10G"`` -> 10_000_000_000, ``"1Ti"`` -> 2**40, ``512`` -> 512."""
    if isinstance(value, int):
        return value
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?)?B?\s*$", str(value), re.IGNORECASE)
    if not m:
        raise ValueError(f"{value!r} is not a size like 500G or 1Ti")
    return int(float(m.group(1)) * SIZE_UNITS[(m.group(2) or "").upper()])


def parse_policy(text: str, file: str = "<string>", base_dir: Path | None = None) -> Policy:
    """Validate policy YAML *text*. Raises :class:`PolicyError` listing every problem."""
    tree = Tree(file)
    try:
        node = compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context = getattr(e, "context", None)
        where = f" (column {mark.column + 1}{', ' + context if context else ''})" if mark else ""
        raise PolicyError(
            [PolicyIssue(file, line, "", f"not valid YAML: {problem}{where}")]
        ) from None
    if node is None:
        raise PolicyError([PolicyIssue(file, 1, "", "the policy file is empty")])
    raw = tree.build(node)
    policy = _Validator(tree, base_dir or Path.cwd()).policy(raw)
    if tree.errors or policy is None:
        raise PolicyError(sorted(tree.errors, key=lambda e: e.line))
    return policy


def load_policy(path: str | os.PathLike) -> Policy:
    """Read the policy at *path*. Relative data paths resolve against the file's folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(
            [PolicyIssue(str(p), 0, "", f"cannot read the policy file: {e}")]
        ) from None
    return parse_policy(text, str(p), p.parent.resolve())


__all__ = ["UTC", "PolicyError", "PolicyIssue", "load_policy", "parse_policy", "parse_size"]
