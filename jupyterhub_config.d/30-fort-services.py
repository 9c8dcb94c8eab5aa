# fort-hub: the hub-managed services fort-groups, fort-credentials and fort-query.
# Entries of the same name from hub.services win key by key. See fort_hub/deploy.py.
from fort_hub.deploy import configure_services

configure_services(c)  # noqa: F821 - `c` is the hub's config, provided by the loader
