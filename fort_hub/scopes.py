"""Custom JupyterHub scopes used by the fort services, and the roles a deployment loads.

One place for every scope name, so the services, the spawner's ``server_token_scopes``, the
``jupyterhub_config.d`` snippets and the helm values agree::

    from fort_hub import scopes
    c.JupyterHub.custom_scopes = scopes.CUSTOM_SCOPES
    c.JupyterHub.load_roles = scopes.load_roles()
    c.Spawner.server_token_scopes = scopes.server_token_scopes()
"""

from __future__ import annotations

GROUPS_SERVICE = "fort-groups"
CREDENTIALS_SERVICE = "fort-credentials"
QUERY_SERVICE = "fort-query"
SERVICES = (GROUPS_SERVICE, CREDENTIALS_SERVICE, QUERY_SERVICE)

#: a researcher reads their own groups, grants, profiles and quotas (GET me)
GROUPS_READ = "custom:fort-groups:read"
#: another service asks "may user U do A on R?" (POST authorize)
GROUPS_AUTHORIZE = "custom:fort-groups:authorize"
#: add, remove and extend memberships; the admin page
GROUPS_ADMIN = "custom:fort-groups:admin"
#: read the audit log
GROUPS_AUDIT = "custom:fort-groups:audit"
#: fetch one's own short-lived AWS credentials
CREDENTIALS_AWS = "custom:fort-credentials:aws"
#: submit queries and read one's own queries and results
QUERY_USE = "custom:fort-query:use"
#: see every user's queries and results
QUERY_ADMIN = "custom:fort-query:admin"

CUSTOM_SCOPES: dict[str, dict[str, str]] = {
    GROUPS_READ: {"description": "Read your own fort groups, grants, profiles and quotas."},
    GROUPS_AUTHORIZE: {
        "description": "Ask fort-groups for authorization decisions about any user."
    },
    GROUPS_ADMIN: {"description": "Manage fort group memberships and their expiry."},
    GROUPS_AUDIT: {"description": "Read the fort audit log."},
    CREDENTIALS_AWS: {
        "description": "Fetch your own short-lived AWS credentials from fort-credentials."
    },
    QUERY_USE: {"description": "Submit queries to fort-query and read your own results."},
    QUERY_ADMIN: {"description": "See every user's fort-query queries and results."},
}


def access(service: str) -> str:
    return f"access:services!service={service}"


def user_scopes() -> list[str]:
    """What every researcher gets (added to the built-in ``user`` role)."""
    return [
        "self",
        *(access(s) for s in SERVICES),
        GROUPS_READ,
        CREDENTIALS_AWS,
        QUERY_USE,
    ]


def server_token_scopes() -> list[str]:
    """Scopes of the single-user server's ``JUPYTERHUB_API_TOKEN`` (``c.Spawner.server_token_scopes``),
    so the notebook's ``FortClient`` and ``fort-aws-credentials`` can reach the services as the user."""
    return [
        "users:activity!user",
        "access:servers!server",
        *(access(s) for s in SERVICES),
        GROUPS_READ,
        CREDENTIALS_AWS,
        QUERY_USE,
    ]


def load_roles(admin_group: str = "admins", services: tuple[str, ...] = SERVICES) -> list[dict]:
    """``c.JupyterHub.load_roles`` for a fort deployment.

    - ``user``: the default role of every user, plus the fort researcher scopes.
    - ``fort-admin``: members of *admin_group* manage memberships, read the audit log and see all
      queries.
    - one role per service with the hub API scopes that service itself needs, for each of
      *services* (the hub refuses roles naming services it does not define, so list only the
      services the deployment runs).
    """
    roles = [
        {"name": "user", "scopes": user_scopes()},
        {
            "name": "fort-admin",
            "description": "fort platform administrators",
            "scopes": [GROUPS_ADMIN, GROUPS_AUDIT, QUERY_ADMIN, *(access(s) for s in SERVICES)],
            "groups": [admin_group],
        },
        {
            "name": "fort-groups-service",
            "scopes": [
                "admin:groups",
                "list:users",
                "read:users:name",  # it reads the hub's user names only
                "read:users:groups",
                GROUPS_AUDIT,
            ],
            "services": [GROUPS_SERVICE],
        },
        {
            "name": "fort-credentials-service",
            "scopes": ["read:users:groups", "list:users", GROUPS_AUTHORIZE],
            "services": [CREDENTIALS_SERVICE],
        },
        {
            "name": "fort-query-service",
            "scopes": ["read:users:groups", "list:users", GROUPS_AUTHORIZE, access(GROUPS_SERVICE)],
            "services": [QUERY_SERVICE],
        },
    ]
    return [r for r in roles if not set(r.get("services", ())) - set(services)]
