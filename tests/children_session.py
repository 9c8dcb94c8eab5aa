"""A test session for tests/test_children.py to interrupt (not collected by the suite: its
name does not start with ``test_``): it starts a real hub (jupyterhub and its
configurable-http-proxy) or a plain child with the project's helpers, says so in the file named by
``FORT_CHILDREN_READY`` and waits to be killed."""

from __future__ import annotations

import os
import sys
import time

from tests import children
from tests.hubproc import RunningHub


def test_a_hub_waits_for_the_session_to_be_killed(tmp_path):
    hub = RunningHub(tmp_path / "hub").start()
    with open(os.environ["FORT_CHILDREN_READY"], "w") as f:
        f.write(str(hub.proc.pid))
    time.sleep(300)


def test_a_child_waits_for_the_session_to_be_killed():
    child = children.spawn([sys.executable, "-c", "import time; time.sleep(300)"])
    with open(os.environ["FORT_CHILDREN_READY"], "w") as f:
        f.write(str(child.pid))
    time.sleep(300)
