"""Test support for tests/test_replicas.py: the environment of a fort service replica run
against tests/query_support.py's FakeHubApi (the processes and fronts: fort_hub/dev/replicas.py)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def service_env(hub_api_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        JUPYTERHUB_API_TOKEN="service-token",
        JUPYTERHUB_API_URL=hub_api_url,
        FORT_COOKIE_SECRET="ab" * 32,  # one secret for every replica: cookies work on any
    )
    env.update(extra or {})
    return env
