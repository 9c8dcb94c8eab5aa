"""fort_hub.naming: the one username rule for names copied into ARNs, S3 prefixes and STS."""

from __future__ import annotations

import pytest

from fort_hub.naming import (
    UnsafeName,
    check_user_prefix_template,
    check_username,
    check_username_problem,
    is_safe_username,
)


@pytest.mark.parametrize(
    "name",
    ["alice", "Alice", "a", "alice@example.org", "alice+lab@gmail.com", "j.doe-2_x", "1234567890",
     "a" * 128],
)  # fmt: skip
def test_allowed_usernames(name):
    assert is_safe_username(name) and check_username(name) == name


@pytest.mark.parametrize(
    "name, bad",
    [("a*", "'*'"), ("a?", "'?'"), ("${aws:username}", "'$'"), ("a/b", "'/'"), ("a b", "' '"),
     ("josé", "'é'"), ("a\n", "'\\n'"), ("a,b", "','"), ("a{b}", "'{'")],
)  # fmt: skip
def test_refused_usernames_name_the_character(name, bad):
    assert not is_safe_username(name)
    with pytest.raises(UnsafeName) as e:
        check_username(name)
    assert f"not allowed: {bad}" in str(e.value)
    assert "a username must be 1-128 characters" in str(e.value)


@pytest.mark.parametrize("name", ["jupyterhub", "anonymous", "facebook", "fort-groups",
                                  "Fort-Query", "fort-credentials"])  # fmt: skip
def test_audit_actors_are_reserved(name):
    assert not is_safe_username(name)
    with pytest.raises(UnsafeName, match="is reserved: fort-hub records its own actions"):
        check_username(name)
    assert is_safe_username(name + "2")


def test_more_reserved_names_are_refused_in_any_case():
    services = ["fort-data", "Announcements"]
    assert check_username_problem("fort-data") == ""
    service = "is reserved: it is the name of a service of this hub"
    assert f"'FORT-DATA' {service}" in check_username_problem("FORT-DATA", services)
    assert f"'announcements' {service}" in check_username_problem("announcements", services)
    assert "fort-hub records" in check_username_problem("jupyterhub", ["jupyterhub"])
    assert check_username_problem("fort-data2", services) == ""
    assert "not allowed: '*'" in check_username_problem("a*", services)


@pytest.mark.parametrize("name", ["", "-a", ".a", "@x", "a" * 129, None, 5])
def test_refused_shapes(name):
    assert not is_safe_username(name)
    with pytest.raises(UnsafeName, match="is not an allowed username"):
        check_username(name)


@pytest.mark.parametrize(
    "template, problem",
    [
        ("users/{username}/", None),
        ("{username}/", None),
        ("home/{username}/data/", None),
        ("users/{username}", "must have '/' right after"),
        ("users/{username}-x/", "must have '/' right after"),
        ("users/", "exactly once"),
        ("{username}/{username}/", "exactly once"),
        ("users/{username}/{username:*<9}/", "may use only the field"),
        ("users/{username!r}/", "exactly once"),
        ("x{{y}}/{username}/", "may use only the field"),
        ("users/*/{username}/", "no wildcard"),
        ("users/?/{username}/", "no wildcard"),
        ("$x/{username}/", "no wildcard"),
        ("/users/{username}/", "leading '/'"),
        ("users//{username}/", "single '/'"),
        (5, "exactly once"),
    ],
)
def test_user_prefix_templates(template, problem):
    got = check_user_prefix_template(template)
    assert got is None if problem is None else problem in got, got
