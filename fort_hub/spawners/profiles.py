"""Image profiles from the fort policy, in the exact ``profile_list`` shape kubespawner 7 uses,
and the server-side check of what a user submitted.

Everything here is pure (no I/O): the spawners call :func:`build_profile_list` with the user's
effective groups and :func:`validate_user_options` with what arrived from the form or the REST
API, and refuse to start on a :class:`ProfileError`.

A policy profile becomes::

    {"slug": "gpu", "display_name": "GPU", "description": "...", "default": False,
     "kubespawner_override": {"image": "...", "cpu_guarantee": 2.0, "mem_limit": "16G",
                              "extra_resource_limits": {"nvidia.com/gpu": "1"},
                              "node_selector": {...}, "tolerations": [chart's + profile's]}}

and, only when the policy allows the user to type an image (``unlisted_choice``), a
``profile_options.image`` with the policy image as the one listed choice and an enabled
``unlisted_choice`` whose ``validation_regex`` is enforced here as a *full* match.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..policy import Policy, Profile

#: the profile option through which an image is chosen
IMAGE_OPTION = "image"
UNLISTED_SUFFIX = "--unlisted-choice"
#: the value kubespawner's form submits in the select box when "Other..." is chosen
UNLISTED_SENTINEL = "unlisted-choice"
GPU_RESOURCE = "nvidia.com/gpu"
MAX_OPTION_LENGTH = 512


class ProfileError(ValueError):
    """What the user asked for is not allowed. The message is safe to show to that user."""


def _format_number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def merge_tolerations(
    base: Sequence[Mapping[str, Any]], extra: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """*base* (the chart's user tolerations) followed by those of *extra* not already in it."""
    out = [dict(t) for t in base]
    for t in extra:
        if dict(t) not in out:
            out.append(dict(t))
    return out


def profile_override(
    profile: Profile, base_tolerations: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The ``kubespawner_override`` of one policy profile (only the settings it defines, except
    ``tolerations``, which always restates the chart's tolerations so a GPU profile adds to them
    instead of replacing them)."""
    o: dict[str, Any] = {"image": profile.image}
    if profile.cpu_guarantee is not None:
        o["cpu_guarantee"] = float(profile.cpu_guarantee)
    if profile.cpu_limit is not None:
        o["cpu_limit"] = float(profile.cpu_limit)
    if profile.mem_guarantee is not None:
        o["mem_guarantee"] = profile.mem_guarantee
    if profile.mem_limit is not None:
        o["mem_limit"] = profile.mem_limit
    if profile.gpu:
        o["extra_resource_limits"] = {GPU_RESOURCE: str(profile.gpu)}
    if profile.node_selector:
        o["node_selector"] = dict(profile.node_selector)
    if profile.tolerations:
        o["tolerations"] = merge_tolerations(base_tolerations, profile.tolerations)
    return o


def profile_entry(
    profile: Profile, base_tolerations: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """One ``profile_list`` item for *profile*."""
    entry: dict[str, Any] = {
        "slug": profile.slug,
        "display_name": profile.display_name,
        "description": profile.description,
        "default": bool(profile.default),
        "kubespawner_override": profile_override(profile, base_tolerations),
    }
    if profile.unlisted_choice:
        uc = profile.unlisted_choice
        unlisted: dict[str, Any] = {
            "enabled": True,
            "display_name": uc.get("display_name", "Other image"),
            "display_name_in_choices": uc.get("display_name_in_choices", "Other..."),
            "kubespawner_override": {"image": "{value}"},
        }
        if uc.get("validation_regex"):
            unlisted["validation_regex"] = uc["validation_regex"]
            unlisted["validation_message"] = uc.get(
                "validation_message", f"Must match {uc['validation_regex']}"
            )
        entry["profile_options"] = {
            IMAGE_OPTION: {
                "display_name": "Image",
                "choices": {
                    "listed": {
                        "display_name": profile.image,
                        "default": True,
                        "kubespawner_override": {"image": profile.image},
                    }
                },
                "unlisted_choice": unlisted,
            }
        }
    return entry


_ENTRIES: dict[tuple[int, str], tuple[Policy, list[dict[str, Any]]]] = {}


def _entries(policy: Policy, base_tolerations: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Every profile's entry, built once per policy object (policies are immutable; a reload
    makes a new object) and per set of base tolerations."""
    key = (id(policy), repr(base_tolerations))
    hit = _ENTRIES.get(key)
    if hit is None or hit[0] is not policy:
        if len(_ENTRIES) >= 16:
            _ENTRIES.clear()
        hit = (policy, [profile_entry(p, base_tolerations) for p in policy.profiles])
        _ENTRIES[key] = hit
    return hit[1]


def build_profile_list(
    policy: Policy,
    groups: Mapping[str, dt.datetime | None] | Iterable[str],
    *,
    user: str | None = None,
    now: dt.datetime | None = None,
    base_tolerations: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The ``profile_list`` for a member of *groups* (expired memberships are dropped when
    *user* is given), in policy order, with exactly one ``default`` (the policy's default if the
    user may use it, else the first).

    Each item is a fresh dict, but the nested settings are shared with a per-policy cache: treat
    them as read-only (kubespawner deep-copies the list before applying it).
    """
    eff = set(policy.effective_groups(user, groups, now) if user is not None else groups)
    out = [
        {**entry}
        for p, entry in zip(policy.profiles, _entries(policy, base_tolerations), strict=True)
        if not p.groups or not eff.isdisjoint(p.groups)
    ]
    seen_default = False
    for e in out:
        if e["default"]:
            e["default"], seen_default = not seen_default, True
    if out and not seen_default:
        out[0]["default"] = True
    return out


@dataclass(frozen=True)
class Selection:
    """What a validated request resolves to."""

    slug: str
    display_name: str
    image: str
    #: the user typed the image (unlisted choice)
    unlisted: bool
    override: Mapping[str, Any]

    def resources(self) -> dict[str, Any]:
        """Resource settings for the audit log."""
        keys = ("cpu_guarantee", "cpu_limit", "mem_guarantee", "mem_limit")
        out = {k: self.override[k] for k in keys if k in self.override}
        gpu = self.override.get("extra_resource_limits", {}).get(GPU_RESOURCE)
        if gpu:
            out["gpu"] = gpu
        return out


def _option_keys(entry: Mapping[str, Any]) -> set[str]:
    keys = set()
    for name in entry.get("profile_options", {}):
        keys.update((name, name + UNLISTED_SUFFIX))
    return keys


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_option(name: str, option: Mapping[str, Any], options: Mapping[str, Any]) -> str | None:
    """The image an option resolves to, or None for the option's default choice."""
    choice = options.get(name)
    unlisted = options.get(name + UNLISTED_SUFFIX)
    for key, value in ((name, choice), (name + UNLISTED_SUFFIX, unlisted)):
        if value is not None and not isinstance(value, str):
            raise ProfileError(f"option '{key}' must be a string")
        if value is not None and len(value) > MAX_OPTION_LENGTH:
            raise ProfileError(f"option '{key}' is longer than {MAX_OPTION_LENGTH} characters")
    if unlisted:
        uc = option.get("unlisted_choice") or {}
        if not uc.get("enabled"):
            raise ProfileError(f"option '{name}' does not accept a value of your own")
        regex = uc.get("validation_regex")
        if regex and not re.fullmatch(regex, unlisted):
            raise ProfileError(
                f"'{_short(unlisted)}' is not an allowed {name}: it must match {regex}"
            )
        return unlisted
    if choice and choice != UNLISTED_SENTINEL:
        if choice not in option.get("choices", {}):
            allowed = ", ".join(option.get("choices", {}))
            raise ProfileError(
                f"'{_short(choice)}' is not a choice of option '{name}' (choices: {allowed})"
            )
        return option["choices"][choice].get("kubespawner_override", {}).get("image")
    if choice == UNLISTED_SENTINEL:
        raise ProfileError(f"option '{name}': 'Other' was chosen but no value was given")
    return None


def validate_user_options(
    user_options: Any, profile_list: Sequence[Mapping[str, Any]]
) -> Selection:
    """Check *user_options* (form or REST) against the user's own *profile_list*.

    Accepts kubespawner's shapes: ``{}``, ``{"profile": slug}``, and per profile option
    ``{name: choice}`` or ``{name + "--unlisted-choice": value}``. Raises :class:`ProfileError`
    naming the first problem: unknown or forbidden profile, unknown option, a choice that is not
    listed, or a typed value that does not fully match the policy's ``validation_regex``.
    """
    if user_options is None:
        user_options = {}
    if not isinstance(user_options, Mapping):
        raise ProfileError("user_options must be a JSON object")
    if not profile_list:
        raise ProfileError("no image profile is available to your groups")
    slug = user_options.get("profile")
    if slug is not None and not isinstance(slug, str):
        raise ProfileError("'profile' must be a string (a profile slug)")
    if slug:
        entry = next((p for p in profile_list if p["slug"] == slug), None)
        if entry is None:
            allowed = ", ".join(p["slug"] for p in profile_list)
            raise ProfileError(
                f"profile '{_short(slug)}' is not available to your groups (available: {allowed})"
            )
    else:
        entry = next((p for p in profile_list if p.get("default")), profile_list[0])
    unknown = set(user_options) - {"profile"} - _option_keys(entry)
    if unknown:
        raise ProfileError(
            f"profile '{entry['slug']}' has no option(s) {', '.join(sorted(map(str, unknown)))}"
        )
    override = dict(entry.get("kubespawner_override", {}))
    image, unlisted = override.get("image", ""), False
    for name, option in entry.get("profile_options", {}).items():
        chosen = _check_option(name, option, user_options)
        if chosen is not None and name == IMAGE_OPTION:
            unlisted = bool(user_options.get(name + UNLISTED_SUFFIX))
            image = chosen
    override["image"] = image
    return Selection(entry["slug"], entry["display_name"], image, unlisted, override)


def options_from_form(formdata: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """kubespawner's form fields (``profile``, ``profile-option-{slug}--{name}``) to
    ``user_options``, for spawners that render kubespawner's form without being a KubeSpawner."""
    slug = (formdata.get("profile") or [None])[0]
    options: dict[str, str] = {}
    if slug:
        options["profile"] = slug
        prefix = f"profile-option-{slug}--"
        for key, values in formdata.items():
            if key.startswith(prefix) and values:
                options[key[len(prefix) :]] = values[0]
    return options
