"""PolicyWatcher: reload on change; an invalid new file keeps the last good policy, loudly."""

from __future__ import annotations

import logging
import os

import pytest

from fort_hub.policy import PolicyError, PolicyWatcher

GOOD = "version: 1\ngroups: [{name: a}]\n"
BETTER = "version: 1\ngroups: [{name: a}, {name: b}]\n"
BAD = "version: 1\ngroups: [{name: a}]\ngrants:\n  - {group: ghost, datasets: [], actions: []}\n"


def write(path, text):
    """Write and make sure the stat stamp changes even on a coarse-clock filesystem."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def test_reload_on_change(tmp_path):
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    seen = []
    watcher = PolicyWatcher(path, on_change=seen.append)
    assert list(watcher.policy.groups) == ["a"]
    assert watcher.check() is False  # unchanged
    write(path, BETTER)
    assert watcher.check() is True
    assert list(watcher.policy.groups) == ["a", "b"]
    assert seen == [watcher.policy]
    assert watcher.check() is False


def test_invalid_new_file_keeps_the_last_good_policy(tmp_path, caplog):
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    watcher = PolicyWatcher(path)
    good = watcher.policy
    write(path, BAD)
    with caplog.at_level(logging.ERROR, logger="fort_hub.policy"):
        assert watcher.check() is False
    assert watcher.policy is good
    assert [str(e) for e in watcher.last_errors] == [
        f"{path}:4: grants[0].group: unknown group 'ghost'"
    ]
    [rec] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "invalid; keeping the last good policy" in rec.getMessage()
    assert f"{path}:4: grants[0].group: unknown group 'ghost'" in rec.getMessage()
    # fixing the file brings reloads back
    write(path, BETTER)
    assert watcher.check() is True
    assert watcher.last_errors == []
    assert list(watcher.policy.groups) == ["a", "b"]


def test_removed_file_keeps_the_policy(tmp_path, caplog):
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    watcher = PolicyWatcher(path)
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="fort_hub.policy"):
        assert watcher.check() is False
    assert list(watcher.policy.groups) == ["a"]
    assert "cannot read the policy file" in caplog.text


def test_replaced_by_rename(tmp_path):
    """Config management often writes a new file and renames it over the old one."""
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    watcher = PolicyWatcher(path)
    new = tmp_path / "policy.yaml.new"
    new.write_text(BETTER)
    os.replace(new, path)
    assert watcher.check() is True
    assert list(watcher.policy.groups) == ["a", "b"]


def test_failing_callback_does_not_stop_the_reload(tmp_path, caplog):
    path = tmp_path / "policy.yaml"
    write(path, GOOD)
    calls = []

    def broken(policy):
        raise RuntimeError("boom")

    watcher = PolicyWatcher(path, on_change=broken)
    watcher.on_change(calls.append)
    write(path, BETTER)
    with caplog.at_level(logging.ERROR, logger="fort_hub.policy"):
        assert watcher.check() is True
    assert calls == [watcher.policy]
    assert "on_change callback" in caplog.text


def test_a_broken_policy_at_start_is_refused(tmp_path):
    path = tmp_path / "policy.yaml"
    write(path, BAD)
    with pytest.raises(PolicyError, match="unknown group 'ghost'"):
        PolicyWatcher(path)
