# fort-hub: refuse to start a hub that runs fort services behind another authenticator or
# spawner (fail closed; the message names the setting). See fort_hub/deploy.py check_deployment.
from fort_hub.deploy import check_deployment

check_deployment(c)  # noqa: F821 - `c` is the hub's config, provided by the loader
