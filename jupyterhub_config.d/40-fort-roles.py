# fort-hub: custom scopes (custom:fort-...) and the roles of researchers, admins and services.
# Roles of the same name from hub.loadRoles win. See fort_hub/deploy.py and fort_hub/scopes.py.
from fort_hub.deploy import configure_roles

configure_roles(c)  # noqa: F821 - `c` is the hub's config, provided by the loader
