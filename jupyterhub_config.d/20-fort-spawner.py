# fort-hub: the fort spawner and the scopes of the notebook's JupyterHub token.
# Loaded by Z2JH after hub.config; values set in hub.config win. See fort_hub/deploy.py.
from fort_hub.deploy import configure_spawner

configure_spawner(c)  # noqa: F821 - `c` is the hub's config, provided by the loader
