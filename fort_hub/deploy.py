"""What the ``jupyterhub_config.d/`` snippets call: fort-hub's defaults for a hub's config.

The snippets (installed in the hub image at ``/usr/local/etc/jupyterhub/jupyterhub_config.d/``,
which Z2JH loads *after* ``hub.config``) are one line each; the logic is here, as plain
functions tested by comparing data. The rule throughout: **fill in, never override**. A value
set in ``hub.config`` (or an earlier ``jupyterhub_config.py``) wins; a list or dict we own (the
services, roles, custom scopes, server token scopes) is merged by name.

What varies between deployments is read, in order, from the Z2JH chart values under
``custom.fort`` (``z2jh.get_config``, only inside a Z2JH hub) and then from the environment:

=====================  ==========================  ========================================
``custom.fort.<key>``  environment                 meaning
=====================  ==========================  ========================================
``policyFile``         ``FORT_POLICY_FILE``        the fort policy (also ``c.FortSettings``)
``servicesHost``       ``FORT_SERVICES_HOST``      host the proxy reaches the services on
                                                   (``127.0.0.1``; ``hub`` in Z2JH)
``servicesBindHost``   ``FORT_SERVICES_BIND_HOST``  interface they listen on (default: the
                                                   host; ``0.0.0.0`` in Z2JH)
``servicesPort``       ``FORT_SERVICES_PORT``      first of three ports (default 10101)
``adminGroup``         ``FORT_ADMIN_GROUP``        group whose members get ``fort-admin``
``authenticatorClass`` ``FORT_AUTHENTICATOR_CLASS`` default authenticator (``facebook``)
``spawnerClass``       ``FORT_SPAWNER_CLASS``      default spawner (``fort-local``)
=====================  ==========================  ========================================

The fort store URL normally holds a password: give it to the hub as ``FORT_STORE_URL`` from a
Kubernetes Secret (``hub.extraEnv``), or as ``c.FortSettings.store_url``.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Mapping
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

#: variables the hub passes on to the services when it has them (AWS SDK settings, IRSA's web
#: identity, the fort store). JupyterHub gives a managed service only a few variables of its own.
PASSTHROUGH_ENV = (
    "FORT_STORE_URL",
    "FORT_COOKIE_SECRET",
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
    "authenticatorClass": ("FORT_AUTHENTICATOR_CLASS", "facebook"),
    "spawnerClass": ("FORT_SPAWNER_CLASS", "fort-local"),
}


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
        if value not in (None, ""):
            return str(value)
    return env.get(var) or default


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
) -> list[dict]:
    """The ``c.JupyterHub.services`` entries of the three fort services (pure)."""
    env = os.environ if env is None else env
    python = python or sys.executable
    environment = {"FORT_POLICY_FILE": policy_file} if policy_file else {}
    environment.update({k: env[k] for k in PASSTHROUGH_ENV if env.get(k)})
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
                "display": name == scopes.GROUPS_SERVICE,
                "info": {"fort": True},
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
    fill(c.JupyterHub, {"authenticator_class": setting("authenticatorClass")})
    policy_file = _policy_file(c)
    if policy_file:
        fill(c.FortSettings, {"policy_file": policy_file})
    # tokens and the Facebook id are kept in auth_state (encrypted with JUPYTERHUB_CRYPT_KEY)
    fill(c.Authenticator, {"enable_auth_state": True})


def configure_spawner(c) -> None:
    """``20-fort-spawner.py``: the fort spawner and the scopes of the notebook's token."""
    fill(c.JupyterHub, {"spawner_class": setting("spawnerClass")})
    existing = (
        list(c.Spawner.server_token_scopes) if _is_set(c.Spawner, "server_token_scopes") else []
    )
    c.Spawner.server_token_scopes = list(dict.fromkeys([*existing, *scopes.server_token_scopes()]))


def configure_services(c) -> None:
    """``30-fort-services.py``: the three fort services, hub-managed."""
    host = setting("servicesHost")
    ours = service_entries(
        _policy_file(c),
        host=host,
        first_port=int(setting("servicesPort")),
        bind_host=setting("servicesBindHost"),
    )
    existing = list(c.JupyterHub.services) if _is_set(c.JupyterHub, "services") else []
    c.JupyterHub.services = merge_by_name(existing, ours)


def configure_roles(c) -> None:
    """``40-fort-roles.py``: custom scopes and the roles of researchers, admins and services."""
    custom = dict(c.JupyterHub.custom_scopes) if _is_set(c.JupyterHub, "custom_scopes") else {}
    c.JupyterHub.custom_scopes = {**copy.deepcopy(scopes.CUSTOM_SCOPES), **custom}
    existing = list(c.JupyterHub.load_roles) if _is_set(c.JupyterHub, "load_roles") else []
    c.JupyterHub.load_roles = merge_roles(existing, scopes.load_roles(setting("adminGroup")))
