"""``FortLocalSpawner``: the fort spawner's behaviour with local ``jupyterhub-singleuser``
processes (the embedded default: ``fort-hub demo`` and the tests).

Same profile filtering, enforcement, audit and ``vending`` AWS identity as ``FortKubeSpawner``;
a profile's image selects a local environment through ``image_environments``::

    c.JupyterHub.spawner_class = "fort-local"
    c.FortLocalSpawner.image_environments = {
        "quay.io/jupyter/pytorch-notebook:*": "/opt/envs/torch",   # a Python prefix
        "*": sys.prefix,                                           # everything else: this env
    }
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import sys
import tempfile
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader
from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner
from jupyterhub.utils import maybe_future
from kubespawner.slugs import safe_slug
from traitlets import Bool, Dict, List, Unicode, Union, default

from .base import FortSpawnerMixin
from .profiles import ProfileError


def _form_environment() -> Environment:
    loader = ChoiceLoader([FileSystemLoader([]), PackageLoader("kubespawner")])
    env = Environment(loader=loader, autoescape=True)
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    return env


class FortLocalSpawner(FortSpawnerMixin, SimpleLocalProcessSpawner):
    """A local-process spawner whose profiles, environment and audit follow the fort policy."""

    system_users = Bool(
        False,
        help="""Run each server as the system user of the same name (JupyterHub's
        `LocalProcessSpawner`: the users must exist and the hub must run as root).

        Off (default): every server runs as the hub's own user in `home_dir_template`
        (`SimpleLocalProcessSpawner`), which is what the demo and the tests need and gives no
        isolation between users.

            c.FortLocalSpawner.system_users = True
        """,
    ).tag(config=True)

    def make_preexec_fn(self, name):
        if self.system_users:
            return LocalProcessSpawner.make_preexec_fn(self, name)
        return super().make_preexec_fn(name)

    def user_env(self, env):
        if self.system_users:
            return LocalProcessSpawner.user_env(self, env)
        return super().user_env(env)

    def move_certs(self, paths):
        if self.system_users:
            return LocalProcessSpawner.move_certs(self, paths)
        return super().move_certs(paths)

    image_environments = Dict(
        key_trait=Unicode(),
        value_trait=Union([Unicode(), List(Unicode())]),
        help="""Which local environment runs a profile's image: `{image glob: environment}`.

        An environment is a Python prefix (a directory with `bin/jupyterhub-singleuser`) or a
        full command (a list). The first glob (in order) matching the image wins; an image with
        no match is refused. Default: every image runs in the hub's own environment.

            c.FortLocalSpawner.image_environments = {"*": "/opt/conda"}
        """,
    ).tag(config=True)

    @default("image_environments")
    def _default_image_environments(self):
        return {"*": sys.prefix}

    aws_config_dir = Unicode(
        help="""Directory under which each server's AWS config file is written
        (`<dir>/<user>[--<server>]/config`, removed when the server stops).
        Default: `fort-hub-aws` in the system temp directory.

            c.FortLocalSpawner.aws_config_dir = "/var/lib/fort/aws"
        """,
    ).tag(config=True)

    @default("aws_config_dir")
    def _default_aws_config_dir(self):
        return os.path.join(tempfile.gettempdir(), "fort-hub-aws")

    @default("options_form")
    def _default_options_form(self):
        return self._render_form

    _fort_prefix: str | None = None

    async def _render_form(self, spawner=None) -> str:
        profile_list = await maybe_future(self.fort_profile_list())
        template = _form_environment().get_template("form.html")
        return template.render(profile_list=profile_list, user_options=self.user_options or {})

    def environment_for(self, image: str) -> str | list[str] | None:
        for pattern, target in self.image_environments.items():
            if fnmatch.fnmatchcase(image, pattern):
                return target
        return None

    def fort_check_selection(self, selection) -> None:
        if self.environment_for(selection.image) is None:
            raise ProfileError(f"image {selection.image} is not available on this hub")

    @property
    def aws_config_path(self) -> Path:
        slug = safe_slug(self.user.name)
        if self.name:
            slug += "--" + safe_slug(self.name)
        return Path(self.aws_config_dir) / slug / "config"

    async def start(self):
        self._fort_plan = None
        plan = await self.fort_prepare()
        target = self.environment_for(plan.selection.image)
        if isinstance(target, list):
            self.cmd, self._fort_prefix = list(target), None
        else:
            self.cmd = [str(Path(target) / "bin" / "jupyterhub-singleuser")]
            self._fort_prefix = target
        self._write_aws_config()
        return await self.fort_run_start(super().start)

    def _write_aws_config(self) -> None:
        path = self.aws_config_path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.fort_aws_config())
        tmp.replace(path)

    def fort_credentials_command(self) -> str:
        """The matched environment's own ``fort-aws-credentials`` when the command is left at its
        default (a local environment's ``bin`` need not be on the notebook's PATH)."""
        if self.aws_credentials_command == "fort-aws-credentials" and self._fort_prefix:
            candidate = Path(self._fort_prefix) / "bin" / "fort-aws-credentials"
            if candidate.exists():
                return str(candidate)
        return self.aws_credentials_command

    def fort_env(self) -> dict[str, str]:
        env = super().fort_env()
        env["AWS_CONFIG_FILE"] = str(self.aws_config_path)
        if self._fort_plan is not None:
            env["JUPYTER_IMAGE"] = env["JUPYTER_IMAGE_SPEC"] = self._fort_plan.selection.image
        return env

    def get_env(self):
        env = super().get_env()
        if self._fort_prefix:
            bindir = str(Path(self._fort_prefix) / "bin")
            env["PATH"] = os.pathsep.join([bindir, env.get("PATH", os.defpath)])
        return env

    async def stop(self, now=False):
        await super().stop(now=now)
        shutil.rmtree(self.aws_config_path.parent, ignore_errors=True)
        await self.fort_audit_stop()
