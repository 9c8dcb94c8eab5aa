"""The demo's hub-side overlay: what ``fort-hub demo`` adds to the deployment snippets.

The generated ``.fort-demo/hub/jupyterhub_config.py`` calls :func:`overlay` (the demo's
equivalent of Z2JH's ``hub.config``) and then executes the same ``jupyterhub_config.d/*.py``
snippets an admin deploys, which fill in everything the overlay leaves unset. DEVELOPMENT ONLY:
loopback addresses, the local Facebook stand-in, moto as AWS.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from pathlib import Path

import fort_hub
from fort_hub.dev.demo_r import R_NOTEBOOK
from fort_hub.redaction import install_redaction

DATA = Path(__file__).parent / "data"
NOTEBOOK = DATA / "getting-started.ipynb"
#: each demo user's JupyterLab settings, under her notebook directory ($JUPYTERLAB_SETTINGS_DIR)
LAB_SETTINGS = Path(".jupyter", "lab", "user-settings")
#: what the demo sets in JupyterLab unless the user changed it: no "fetch news?" prompt, no
#: update check (both would contact jupyter.org from a development demo)
LAB_DEFAULTS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def snippet_paths() -> list[Path]:
    """The ``jupyterhub_config.d`` snippets: the checkout's, else the installed copy."""
    candidates = [
        Path(fort_hub.__file__).resolve().parent.parent / "jupyterhub_config.d",
        Path(sys.prefix) / "share" / "fort-hub" / "jupyterhub_config.d",
    ]
    for d in candidates:
        found = sorted(d.glob("*.py"))
        if found:
            return found
    raise FileNotFoundError(
        "cannot find the jupyterhub_config.d snippets (looked in "
        + ", ".join(str(d) for d in candidates)
        + ")"
    )


def prepare_user_dir(spawner, notebooks: tuple[Path, ...] = (NOTEBOOK,)) -> None:
    """``pre_spawn_hook``: the user's notebook directory, with the getting-started examples."""
    root = Path(spawner.format_string(spawner.notebook_dir))
    (root / "examples").mkdir(parents=True, exist_ok=True)
    for name, settings in LAB_DEFAULTS.items():
        path = root / LAB_SETTINGS / name
        if not path.exists():  # the user's own choice stays
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(settings, indent=2))
    for notebook in notebooks:
        target = root / "examples" / notebook.name
        if notebook.exists() and not target.exists():
            shutil.copyfile(notebook, target)


def demo_spawner_class():
    """``FortLocalSpawner`` without switching to a system user per hub user (the demo's users
    are not accounts on this machine): every server runs as the user who started the demo,
    with HOME set to its own directory under ``.fort-demo/users/``."""
    from fort_hub.spawners.local import FortLocalSpawner

    class DemoLocalSpawner(FortLocalSpawner):
        def make_preexec_fn(self, name):
            return None

        def user_env(self, env):
            env["USER"] = self.user.name
            env["HOME"] = self.format_string(self.notebook_dir)
            env["JUPYTERLAB_SETTINGS_DIR"] = str(Path(env["HOME"]) / LAB_SETTINGS)
            return env

    return DemoLocalSpawner


def overlay(c, settings_file: str) -> None:
    """Apply the demo's settings (written by ``fort-hub demo`` as JSON) to the hub config."""
    s = json.loads(Path(settings_file).read_text())
    state = Path(s["state_dir"])
    public = s["public_url"]

    c.JupyterHub.bind_url = public + "/"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{s['hub_port']}"
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s['proxy_api_port']}"
    c.ConfigurableHTTPProxy.command = list(s["chp"])
    c.ConfigurableHTTPProxy.should_start = True
    c.JupyterHub.db_url = f"sqlite:///{state / 'hub' / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "hub" / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(state / "hub" / "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = True
    c.JupyterHub.log_level = "INFO"
    # JupyterHub scrubs its access log, but tornado's warning for a failed request (e.g. a
    # reloaded /hub/oauth_callback: "400 GET /hub/oauth_callback?code=...&state=...") prints
    # the whole URI: redact OAuth codes, states and tokens in every hub log line
    install_redaction("JupyterHub")
    c.JupyterHub.authenticator_class = "facebook"
    c.JupyterHub.spawner_class = demo_spawner_class()

    c.FortSettings.policy_file = str(state / "policy.yaml")
    c.FortSettings.store_url = s["store_url"]

    fb = c.FacebookOAuthenticator
    fb.client_id = s["facebook_app_id"]
    fb.client_secret = s["facebook_app_secret"]
    fb.dialog_url = fb.graph_url = s["facebook_url"]
    fb.oauth_callback_url = public + "/hub/oauth_callback"
    fb.strip_email_domains = {"example.org"}
    fb.admin_users = {"admin"}
    fb.access_contact = "the demo's admin (admin@example.org)"
    fb.enable_auth_state = True

    c.Spawner.notebook_dir = str(state / "users" / "{username}")
    c.Spawner.default_url = "/lab"
    notebooks = (NOTEBOOK, R_NOTEBOOK) if s.get("r_jupyter_path") else (NOTEBOOK,)
    c.Spawner.pre_spawn_hook = functools.partial(prepare_user_dir, notebooks=notebooks)
    c.Spawner.start_timeout = 180
    c.Spawner.http_timeout = 180
    c.Spawner.environment = {
        "AWS_ENDPOINT_URL": s["aws_endpoint_url"],
        # never a real AWS credentials file: only credential_process (fort-credentials)
        "AWS_SHARED_CREDENTIALS_FILE": str(state / "aws" / "no-shared-credentials"),
    }
    if s.get("r_jupyter_path"):  # the R kernel (fort_hub.dev.demo_r)
        c.Spawner.environment["JUPYTER_PATH"] = s["r_jupyter_path"]
    if os.geteuid() == 0:  # containers often run as root; the servers run as the demo's user
        c.Spawner.args = ["--allow-root"]
    c.FortLocalSpawner.services_url = public + "/services/"
    c.FortLocalSpawner.aws_config_dir = str(state / "aws")
    c.FortLocalSpawner.image_environments = {"*": sys.prefix}
    os.environ.setdefault("FORT_DEMO", "1")
