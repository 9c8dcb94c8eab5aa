# fort-hub: Facebook Login and the shared fort settings (policy file).
# Loaded by Z2JH after hub.config; values set in hub.config win. See fort_hub/deploy.py.
from fort_hub.deploy import configure_authenticator

configure_authenticator(c)  # noqa: F821 - `c` is the hub's config, provided by the loader
