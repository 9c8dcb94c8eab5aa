"""What the ``jupyterhub_config.d/`` snippets call: fort-hub's defaults for a hub's config.

The snippets (installed in the hub image at ``/usr/local/etc/jupyterhub/jupyterhub_config.d/``,
which Z2JH loads *after* ``hub.config``) are one line each; the logic is here, as plain
functions tested by comparing data. A Z2JH deployment need not rely on the snippets being in the
image: ``hub.extraConfig`` (run by the chart after them) can call :func:`configure_z2jh`, which
runs all four and then :func:`check_deployment`. Running both is harmless (each step is idempotent). The rule throughout: **fill in, never override**. A value
set in ``hub.config`` (or an earlier ``jupyterhub_config.py``) wins; a list or dict we own (the
services, roles, custom scopes, server token scopes) is merged by name.

What varies between deployments is read, in order, from the Z2JH chart values under
``custom.fort`` (``z2jh.get_config``, only inside a Z2JH hub) and then from the environment:

=========================  ================================  ================================
``custom.fort.<key>``      environment                       meaning
=========================  ================================  ================================
``policyFile``             ``FORT_POLICY_FILE``              the fort policy (also
                                                             ``c.FortSettings``)
``servicesHost``           ``FORT_SERVICES_HOST``            host the proxy reaches the
                                                             services on (``127.0.0.1``;
                                                             ``hub`` in Z2JH)
``servicesBindHost``       ``FORT_SERVICES_BIND_HOST``       interface they listen on
                                                             (default: the host; ``0.0.0.0``
                                                             in Z2JH)
``servicesPort``           ``FORT_SERVICES_PORT``            first of three ports (10101)
``adminGroup``             ``FORT_ADMIN_GROUP``              group whose members get
                                                             ``fort-admin``
``hubGroups``              ``FORT_HUB_GROUPS``               keep study members in hub
                                                             groups too (``false``, the
                                                             default, or ``true``; also
                                                             ``c.FortSettings.hub_groups``)
``trustedAuthenticators``  ``FORT_TRUSTED_AUTHENTICATORS``   authenticator classes other
                                                             than fort's that a hub with fort
                                                             services may run (a list, or
                                                             comma-separated; default none)
=========================  ================================  ================================

The authenticator and the spawner are not deployment settings: a hub running fort services must
run fort's (``authenticator_class: facebook``, ``spawner_class: fort-kubernetes`` or
``fort-local``, or subclasses), and :func:`check_deployment` refuses to let it start otherwise,
since a hub with fort's services but another login (the chart's default is ``dummy``: anyone)
would hand out study data to whoever signs in. Only an authenticator class named in
``trustedAuthenticators`` is accepted instead of fort's (it must then do the membership check).

The fort store URL normally holds a password: give it to the hub as ``FORT_STORE_URL`` from a
Kubernetes Secret (``hub.extraEnv``), or as ``c.FortSettings.store_url``.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from . import scopes

#: service name -> (python module run with ``python -m``, offset from the first port)
SERVICE_MODULES = {
    scopes.GROUPS_SERVICE: ("fort_hub.services.groups", 0),
    scopes.CREDENTIALS_SERVICE: ("fort_hub.services.credentials", 1),
    scopes.QUERY_SERVICE: ("fort_hub.services.query", 2),
}

#: scopes each service's browser (OAuth) tokens may carry; the user must also hold them
SERVICE_OAUTH_SCOPES = {
    scopes.GROUPS_SERVICE: [scopes.GROUPS_READ, scopes.GROUPS_ADMIN, scopes.GROUPS_AUDIT],
    scopes.CREDENTIALS_SERVICE: [scopes.CREDENTIALS_AWS],
    scopes.QUERY_SERVICE: [scopes.QUERY_USE, scopes.QUERY_ADMIN],
}

#: the hub's Services menu (the hub's page.html from HUB_TEMPLATES reads ``info``): "My access"
#: (fort-query's root) for everyone, fort-groups only for holders of its admin scope
MENU = {
    scopes.QUERY_SERVICE: {"menu_label": "My access"},
    scopes.GROUPS_SERVICE: {"menu_label": "fort-groups (admin)", "menu_scope": scopes.GROUPS_ADMIN},
}
#: fort's hub templates: the Services menu above and the no-access page of the authenticator
HUB_TEMPLATES = os.path.join(os.path.dirname(__file__), "hub_templates")

#: variables the hub passes on to the services when it has them (AWS SDK settings, IRSA's web
#: identity, the fort store). JupyterHub gives a managed service only a few variables of its own.
PASSTHROUGH_ENV = (
    "FORT_STORE_URL",
    "FORT_COOKIE_SECRET",
    "FORT_SUPPORT_CONTACT",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
)

DEFAULTS = {
    "policyFile": ("FORT_POLICY_FILE", ""),
    "servicesHost": ("FORT_SERVICES_HOST", "127.0.0.1"),
    "servicesBindHost": ("FORT_SERVICES_BIND_HOST", ""),
    "servicesPort": ("FORT_SERVICES_PORT", "10101"),
    "adminGroup": ("FORT_ADMIN_GROUP", "admins"),
    "hubGroups": ("FORT_HUB_GROUPS", "false"),
    "trustedAuthenticators": ("FORT_TRUSTED_AUTHENTICATORS", ""),
}

#: what the snippets fill in when nothing set the classes (outside Z2JH: the chart always sets
#: the spawner, and its default authenticator is ``dummy``, which :func:`check_deployment` refuses)
DEFAULT_AUTHENTICATOR = "facebook"
DEFAULT_SPAWNER = "fort-local"
FORT_AUTHENTICATOR = "fort_hub.authenticators.facebook:FacebookOAuthenticator"
FORT_SPAWNER = "fort_hub.spawners.base:FortSpawnerMixin"


def _z2jh_get_config():
    try:
        from z2jh import get_config  # only importable inside a Z2JH hub pod
    except ImportError:
        return None
    return get_config


def setting(key: str, env: Mapping[str, str] | None = None, z2jh_get=None) -> str:
    """One deployment setting: ``custom.fort.<key>`` in Z2JH, else its variable, else default."""
    env = os.environ if env is None else env
    get = _z2jh_get_config() if z2jh_get is None else z2jh_get
    var, default = DEFAULTS[key]
    if get is not None:
        value = get(f"custom.fort.{key}")
        if isinstance(value, list):
            return ",".join(map(str, value))
        if value not in (None, ""):
            return str(value)
    return env.get(var) or default


def parse_yes_no(value) -> bool | None:
    """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``, any case, or a
    YAML boolean); None for anything else."""
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    return None


def yes_no(value, key: str) -> bool:
    """A yes/no deployment setting; a ValueError naming it for anything else."""
    parsed = parse_yes_no(value)
    if parsed is None:
        raise ValueError(
            f"custom.fort.{key} (${DEFAULTS[key][0]}) must be true or false, not {value!r}"
        )
    return parsed


def _is_set(section, name: str) -> bool:
    return name in section


def fill(section, values: Mapping[str, Any]) -> None:
    """Set each of *values* on a traitlets config section unless it is already set."""
    for name, value in values.items():
        if not _is_set(section, name):
            section[name] = value


def merge_by_name(existing: list[dict], ours: list[dict]) -> list[dict]:
    """Entries of *existing* first (as given, but missing keys filled from ours of the same
    name), then ours that *existing* does not name."""
    by_name = {e["name"]: e for e in ours}
    out = []
    for entry in existing:
        entry = dict(entry)
        for key, value in by_name.pop(entry.get("name"), {}).items():
            entry.setdefault(key, copy.deepcopy(value))
        out.append(entry)
    return out + [copy.deepcopy(e) for e in ours if e["name"] in by_name]


def service_entries(
    policy_file: str,
    host: str = "127.0.0.1",
    first_port: int = 10101,
    bind_host: str = "",
    env: Mapping[str, str] | None = None,
    python: str | None = None,
    hub_groups: bool = False,
    admin_group: str = "admins",
) -> list[dict]:
    """The ``c.JupyterHub.services`` entries of the three fort services (pure). *hub_groups*,
    *admin_group*: the hub's ``FortSettings``, given to the services as ``FORT_HUB_GROUPS`` and
    ``FORT_ADMIN_GROUP`` (:func:`shared_settings_env`)."""
    env = os.environ if env is None else env
    python = python or sys.executable
    environment = {"FORT_POLICY_FILE": policy_file} if policy_file else {}
    environment.update({k: env[k] for k in PASSTHROUGH_ENV if env.get(k)})
    environment.update(shared_settings_env(hub_groups, admin_group))
    entries = []
    for name, (module, offset) in SERVICE_MODULES.items():
        port = first_port + offset
        command = [python, "-m", module]
        if bind_host and bind_host != host:
            command.append(f"--bind-url=http://{bind_host}:{port}")
        entries.append(
            {
                "name": name,
                "url": f"http://{host}:{port}",
                "command": command,
                "environment": dict(environment),
                "oauth_no_confirm": True,
                "oauth_client_allowed_scopes": list(SERVICE_OAUTH_SCOPES[name]),
                "display": name in MENU,
                "info": {"fort": True, **MENU.get(name, {})},
            }
        )
    return entries


def merge_roles(existing: list[dict], ours: list[dict]) -> list[dict]:
    """Roles by name: a role already configured wins, except the built-in ``user`` role, whose
    scopes are the union (so a deployment adding scopes to ``user`` keeps fort's)."""
    names = {r["name"]: r for r in ours}
    out = []
    for role in existing:
        role = dict(role)
        mine = names.pop(role.get("name"), None)
        if mine is not None and role["name"] == "user":
            role["scopes"] = list(dict.fromkeys([*role.get("scopes", []), *mine["scopes"]]))
        out.append(role)
    return out + [copy.deepcopy(r) for r in ours if r["name"] in names]


# ----- what each snippet calls ------------------------------------------------------------------


def _policy_file(c) -> str:
    if _is_set(c.FortSettings, "policy_file"):
        return c.FortSettings.policy_file
    return setting("policyFile")


def configure_authenticator(c) -> None:
    """``10-fort-authenticator.py``: the Facebook authenticator and the shared fort settings."""
    fill(c.JupyterHub, {"authenticator_class": DEFAULT_AUTHENTICATOR})
    policy_file = _policy_file(c)
    if policy_file:
        fill(c.FortSettings, {"policy_file": policy_file})
    # tokens and the Facebook id are kept in auth_state (encrypted with JUPYTERHUB_CRYPT_KEY)
    fill(c.Authenticator, {"enable_auth_state": True})


def configure_spawner(c) -> None:
    """``20-fort-spawner.py``: the fort spawner and the scopes of the notebook's token."""
    fill(c.JupyterHub, {"spawner_class": DEFAULT_SPAWNER})
    existing = (
        list(c.Spawner.server_token_scopes) if _is_set(c.Spawner, "server_token_scopes") else []
    )
    c.Spawner.server_token_scopes = list(dict.fromkeys([*existing, *scopes.server_token_scopes()]))


def shared_settings_env(hub_groups: bool, admin_group: str) -> dict[str, str]:
    """The hub's settings every fort service must share with it, as their variables."""
    return {"FORT_HUB_GROUPS": "true" if hub_groups else "false", "FORT_ADMIN_GROUP": admin_group}


def _admin_group(c) -> str:
    if _is_set(c.FortSettings, "admin_group"):
        return c.FortSettings.admin_group
    return setting("adminGroup")


def configure_services(c) -> None:
    """``30-fort-services.py``: the three fort services, hub-managed, with the hub's
    ``FortSettings.hub_groups`` and ``admin_group`` (the chart's ``hubGroups`` and
    ``adminGroup`` unless set in the hub's config). A fort service entry the deployment wrote
    keeps its environment, except for those two, which always follow the hub's."""
    host = setting("servicesHost")
    fill(c.FortSettings, {"hub_groups": yes_no(setting("hubGroups"), "hubGroups"),
                          "admin_group": _admin_group(c)})  # fmt: skip
    shared = (yes_no(c.FortSettings.hub_groups, "hubGroups"), c.FortSettings.admin_group)
    ours = service_entries(
        _policy_file(c),
        host=host,
        first_port=int(setting("servicesPort")),
        bind_host=setting("servicesBindHost"),
        hub_groups=shared[0],
        admin_group=shared[1],
    )
    existing = list(c.JupyterHub.services) if _is_set(c.JupyterHub, "services") else []
    services = merge_by_name(existing, ours)
    for entry in services:
        if entry.get("name") in SERVICE_MODULES and isinstance(entry.get("environment"), dict):
            entry["environment"] = {**entry["environment"], **shared_settings_env(*shared)}
    c.JupyterHub.services = services
    # fort's page.html (the Services menu) after the deployment's own templates, before the hub's
    paths = list(c.JupyterHub.template_paths) if _is_set(c.JupyterHub, "template_paths") else []
    if HUB_TEMPLATES not in paths:
        c.JupyterHub.template_paths = [*paths, HUB_TEMPLATES]


def configure_roles(c) -> None:
    """``40-fort-roles.py``: custom scopes and the roles of researchers, admins and services."""
    custom = dict(c.JupyterHub.custom_scopes) if _is_set(c.JupyterHub, "custom_scopes") else {}
    c.JupyterHub.custom_scopes = {**copy.deepcopy(scopes.CUSTOM_SCOPES), **custom}
    existing = list(c.JupyterHub.load_roles) if _is_set(c.JupyterHub, "load_roles") else []
    c.JupyterHub.load_roles = merge_roles(existing, scopes.load_roles(_admin_group(c)))


# ----- the fail-closed check: fort services only behind fort's login and spawner ---------------


def load_class(value, group: str) -> type:
    """A class named as JupyterHub names them: a class, an entry point of *group*
    (``facebook``), or an import path (``pkg.mod.Class`` or ``pkg.mod:Class``)."""
    if isinstance(value, type):
        return value
    name = str(value)
    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()
    module, sep, attr = name.partition(":") if ":" in name else name.rpartition(".")
    if not sep or not module:
        raise ValueError(f"{name!r} is neither a {group} entry point nor an import path")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{name!r} cannot be imported ({type(e).__name__}: {e})") from None


def _runs_fort_services(c) -> list[str]:
    services = c.JupyterHub.services if _is_set(c.JupyterHub, "services") else []
    modules = {module for module, _ in SERVICE_MODULES.values()}
    return [
        s.get("name", "?")
        for s in services
        if s.get("name") in SERVICE_MODULES or modules & set(map(str, s.get("command") or ()))
    ]


def deployment_problems(c, trusted: str | None = None) -> list[str]:
    """Why a hub with this config must not start: empty when it runs no fort service, or runs
    them behind fort's authenticator (or one named in ``trustedAuthenticators``) and spawner."""
    names = _runs_fort_services(c)
    if not names:
        return []
    trusted = setting("trustedAuthenticators") if trusted is None else trusted
    fort_auth, fort_spawner = (load_class(n, "") for n in (FORT_AUTHENTICATOR, FORT_SPAWNER))
    problems = []
    checks = (
        ("authenticator_class", "jupyterhub.authenticators", "pam", fort_auth, "facebook"),
        ("spawner_class", "jupyterhub.spawners", "localprocess", fort_spawner, "fort-kubernetes"),
    )
    for trait, group, default, base, ours in checks:
        value = c.JupyterHub[trait] if _is_set(c.JupyterHub, trait) else default
        try:
            cls = load_class(value, group)
        except ValueError as e:
            problems.append(f"c.JupyterHub.{trait}: {e}")
            continue
        if isinstance(cls, type) and issubclass(cls, base):
            continue
        if trait == "authenticator_class" and _trusted(cls, trusted):
            continue
        problems.append(
            f"c.JupyterHub.{trait} is {value!r} ({cls.__module__}.{cls.__name__}), not fort's: "
            f"set it to {ours!r} (Z2JH: hub.config.JupyterHub.{trait})"
            + (
                ", or name this class in custom.fort.trustedAuthenticators "
                "($FORT_TRUSTED_AUTHENTICATORS) if it enforces study membership itself"
                if trait == "authenticator_class"
                else ""
            )
        )
    problems += _missing_policy(c)
    if problems:
        problems.insert(0, f"this hub runs fort services ({', '.join(names)}) but:")
    return problems


def _missing_policy(c) -> list[str]:
    services = c.JupyterHub.services if _is_set(c.JupyterHub, "services") else []
    lacking = [
        s["name"]
        for s in services
        if s.get("name") in SERVICE_MODULES
        and not (s.get("environment") or {}).get("FORT_POLICY_FILE")
    ]
    if not lacking:
        return []
    return [
        f"{', '.join(lacking)} would start without a policy file: set "
        "c.FortSettings.policy_file (Z2JH: hub.config.FortSettings.policy_file, or "
        "custom.fort.policyFile; elsewhere $FORT_POLICY_FILE) before the fort snippets run, or "
        "FORT_POLICY_FILE in the service's environment"
    ]


def _trusted(cls: type, trusted: str) -> bool:
    for name in filter(None, (t.strip() for t in trusted.split(","))):
        try:
            if load_class(name, "jupyterhub.authenticators") is cls:
                return True
        except ValueError:
            continue
    return False


def check_deployment(c) -> None:
    """``90-fort-check.py``: refuse to start (exit 1, saying why) a hub that would serve fort's
    services behind another login or spawner (fail closed), or start them without a policy
    (they would exit, and JupyterHub exits when a managed service does not come up)."""
    problems = deployment_problems(c)
    if problems:
        print("FATAL: fort-hub: " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)


def configure_z2jh(c) -> None:
    """Everything the snippets do, then :func:`check_deployment`; for Z2JH's ``hub.extraConfig``,
    so the helm values alone turn fort-hub on (no files beside the chart or in the image)."""
    configure_authenticator(c)
    configure_spawner(c)
    configure_services(c)
    configure_roles(c)
    check_deployment(c)
