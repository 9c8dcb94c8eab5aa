"""The demo's preparation steps, without starting anything: state directory reuse and reset,
the hub config built from the deployment snippets, the welcome text, and clear errors."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

from fort_hub.dev import demo, demo_hub, demo_r, demo_setup
from fort_hub.policy import load_policy
from tests.clientstack import require_r


def test_state_dir_created_reused_and_reset(tmp_path):
    state = tmp_path / "s"
    assert demo_setup.prepare_state(state, reset=False) is True
    (state / "policy.yaml").write_text((state / "policy.yaml").read_text() + "\n# edited\n")
    assert demo_setup.prepare_state(state, reset=False) is False
    assert "# edited" in (state / "policy.yaml").read_text()  # a second run keeps edits
    assert demo_setup.prepare_state(state, reset=True) is True
    assert "# edited" not in (state / "policy.yaml").read_text()


def test_reset_refuses_a_directory_that_is_not_a_demo(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(demo_setup.DemoError, match="not a fort-hub demo directory"):
        demo_setup.prepare_state(tmp_path, reset=True)
    with pytest.raises(demo_setup.DemoError, match="not a fort-hub demo directory"):
        demo_setup.prepare_state(tmp_path, reset=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_secrets_are_kept_across_runs(tmp_path):
    demo_setup.prepare_state(tmp_path / "s", reset=False)
    first = demo_setup.load_secrets(tmp_path / "s")
    assert first == demo_setup.load_secrets(tmp_path / "s")
    assert (tmp_path / "s" / "hub" / "secrets.json").stat().st_mode & 0o077 == 0


def demo_settings(state, **extra) -> demo_setup.Settings:
    return demo_setup.Settings(
        state_dir=str(state), public_url="http://127.0.0.1:8000", hub_port=8081,
        proxy_api_port=8001, services_port=10101, chp=["/bin/chp"],
        store_url=f"sqlite:///{state / 'fort.sqlite'}", facebook_url="http://127.0.0.1:9010",
        facebook_app_id="1", facebook_app_secret="s", aws_endpoint_url="http://127.0.0.1:5000",
        **extra,
    )  # fmt: skip


def hub_config(state, monkeypatch, **extra) -> Config:
    path = demo_setup.write_hub_config(state, demo_settings(state, **extra))
    monkeypatch.setenv("FORT_SERVICES_PORT", "10101")
    c = Config()
    exec(compile(path.read_text(), str(path), "exec"), {"get_config": lambda: c})
    return c


def test_hub_config_is_overlay_plus_deployment_snippets(tmp_path, monkeypatch):
    state = tmp_path / "s"
    demo_setup.prepare_state(state, reset=False)
    settings = demo_settings(state)
    path = demo_setup.write_hub_config(state, settings)
    monkeypatch.setenv("FORT_SERVICES_PORT", "10101")
    c = Config()
    exec(compile(path.read_text(), str(path), "exec"), {"get_config": lambda: c})
    assert c.JupyterHub.authenticator_class == "facebook"
    assert c.JupyterHub.spawner_class.__name__ == "DemoLocalSpawner"
    assert c.FacebookOAuthenticator.dialog_url == "http://127.0.0.1:9010"
    assert [s["name"] for s in c.JupyterHub.services] == [
        "fort-groups", "fort-credentials", "fort-query",
    ]  # fmt: skip
    assert c.JupyterHub.services[0]["url"] == "http://127.0.0.1:10101"
    assert {r["name"] for r in c.JupyterHub.load_roles} >= {"user", "fort-admin"}
    assert "custom:fort-query:use" in c.Spawner.server_token_scopes
    assert c.Spawner.environment["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert demo_hub.snippet_paths()[0].name == "10-fort-authenticator.py"


def test_welcome_text_says_what_each_identity_can_do():
    from fort_hub.dev.demo_hub import DATA

    policy = load_policy(DATA / "demo-policy.yaml")
    lines = "\n".join(
        demo_setup.describe_identities(policy, ["alice", "bob", "carol", "dave", "admin"])
    )
    assert "alice   groups urls-study\n" in lines
    assert "query url_shares; profiles python, urls-large; AWS roles fort-urls-study" in lines
    assert "bob     groups ads-study" in lines and "profiles python, gpu" in lines
    assert "carol   groups urls-study,ads-study; membership urls-study through 2031-12-31" in lines
    assert "dave    no study group" in lines
    assert "admin   groups admins [admin:" in lines


def test_port_in_use_is_a_clear_error(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = demo.main(["--dir", str(tmp_path / "s"), "--port", str(port)])
    assert rc == 1
    out, err = capsys.readouterr()
    assert f"port {port} on 127.0.0.1 is in use" in err and "Traceback" not in err
    other = int(re.search(r'DEMO_ARGS="--port (\d+)"', err).group(1))
    assert other != port and demo_setup.port_free(other)
    assert len(err.strip().splitlines()) == 1 and out == ""  # one line, nothing else


def test_main_in_process_leaves_the_signal_handlers_as_it_found_them(tmp_path):
    """``demo.main`` handles SIGTERM and SIGINT while it runs; called in process (as here) it
    gives them back (before: the test session's own handlers were lost for its remaining
    tests, and a SIGTERM to it then left its hubs running)."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        demo.main(["--dir", str(tmp_path / "s"), "--port", str(s.getsockname()[1])])
    assert {sig: signal.getsignal(sig) for sig in before} == before


@pytest.fixture
def other_process():
    """A live process that is not this one (the pid of "another demo")."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_state_folder_held_by_a_running_demo_is_refused_naming_it(
    tmp_path, capsys, other_process
):
    state = tmp_path / "s"
    demo_setup.prepare_state(state, reset=False)
    (state / demo_setup.LOCK).write_text(f"{other_process}\n")
    (state / "policy.yaml").write_text((state / "policy.yaml").read_text() + "# mine\n")
    for extra in ([], ["--reset"]):
        rc = demo.main(["--dir", str(state), "--port", str(demo_setup.free_port()), *extra])
        assert rc == 1
        err = capsys.readouterr().err
        assert f"{state} is in use by another fort-hub demo (pid {other_process})" in err
        assert len(err.strip().splitlines()) == 1
    assert "# mine" in (state / "policy.yaml").read_text()  # --reset deleted nothing
    assert (state / demo_setup.LOCK).read_text().strip() == str(other_process)


def test_a_lock_left_by_a_dead_demo_is_taken_over_and_released(tmp_path):
    state = tmp_path / "s"
    demo_setup.prepare_state(state, reset=False)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (state / demo_setup.LOCK).write_text(f"{gone.pid}\n")
    assert demo_setup.lock_holder(state) is None
    path = demo_setup.acquire_lock(state)
    assert path.read_text().strip() == str(os.getpid())
    assert demo_setup.lock_holder(state) is None  # our own lock holds nobody else out of it
    demo_setup.release_lock(state)
    assert not path.exists()


def test_the_lock_is_taken_atomically(tmp_path, other_process):
    state = tmp_path / "s"
    demo_setup.prepare_state(state, reset=False)
    (state / demo_setup.LOCK).write_text(f"{other_process}\n")
    with pytest.raises(demo_setup.DemoError, match=f"pid {other_process}"):
        demo_setup.acquire_lock(state)
    demo_setup.release_lock(state)  # not ours: left alone
    assert (state / demo_setup.LOCK).exists()


class FakeSpawner:
    def __init__(self, root):
        self.notebook_dir = str(root / "{username}")

    def format_string(self, s):
        return s.format(username="alice")


def test_jupyterlab_news_prompt_is_off_unless_the_user_changed_it(tmp_path):
    spawner = FakeSpawner(tmp_path)
    demo_hub.prepare_user_dir(spawner)
    settings = (tmp_path / "alice" / demo_hub.LAB_SETTINGS / "@jupyterlab" / "apputils-extension"
                / "notification.jupyterlab-settings")  # fmt: skip
    assert json.loads(settings.read_text()) == {"fetchNews": "false", "checkForUpdates": False}
    settings.write_text('{"fetchNews": "true"}')
    demo_hub.prepare_user_dir(spawner)
    assert json.loads(settings.read_text()) == {"fetchNews": "true"}  # her choice stays


def test_free_port_run_skips_used_ports():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        used = s.getsockname()[1]
        start = demo_setup.free_port_run(used, 3)
        assert used not in range(start, start + 3)


def test_without_r_the_demo_says_how_to_add_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no Rscript
    r_kernel = demo_r.setup_r_kernel(tmp_path / "s")
    assert not r_kernel.ready and r_kernel.jupyter_path == ""
    assert "apt-get install r-base-core r-cran-irkernel r-cran-httr2" in r_kernel.note
    state = tmp_path / "s"
    demo_setup.prepare_state(state, reset=False)
    text = demo_setup.banner(demo_settings(state, r_note=r_kernel.note), state, ["alice"])
    assert "R notebooks are off: to add them, install R with IRkernel" in text
    c = hub_config(state, monkeypatch)
    assert "JUPYTER_PATH" not in c.Spawner.environment
    assert c.Spawner.pre_spawn_hook.keywords["notebooks"] == (demo_hub.NOTEBOOK,)


def test_with_r_the_demo_registers_the_r_kernel(tmp_path, monkeypatch):
    """The kernel itself is started by the end-to-end test (getting-started-r.ipynb runs on it)."""
    require_r(("IRkernel", "httr2", "jsonlite"))
    state = tmp_path / "s"
    demo_setup.prepare_state(state, reset=False)
    r_kernel = demo_r.setup_r_kernel(state)
    assert r_kernel.ready, r_kernel.note
    assert "examples/getting-started-r.ipynb" in r_kernel.note
    spec = json.loads((state / "jupyter" / "kernels" / "ir" / "kernel.json").read_text())
    assert Path(spec["argv"][0]).name == "R" and "IRkernel::main()" in spec["argv"]
    assert spec["env"] == {"R_LIBS": str(state / "R" / "library")}
    description = state / "R" / "library" / "fortclient" / "DESCRIPTION"
    assert "Package: fortclient" in description.read_text()
    installed = description.stat().st_mtime_ns
    assert demo_r.setup_r_kernel(state).ready  # a second run reuses the installed package
    assert description.stat().st_mtime_ns == installed
    c = hub_config(state, monkeypatch, r_jupyter_path=r_kernel.jupyter_path)
    assert c.Spawner.environment["JUPYTER_PATH"] == str(state / "jupyter")
    assert c.Spawner.pre_spawn_hook.keywords["notebooks"] == (demo_hub.NOTEBOOK, demo_r.R_NOTEBOOK)
