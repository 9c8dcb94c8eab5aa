"""The deployment files: helm values validate against the Z2JH chart's schema, every hub.config
key is a real configurable trait, and the jupyterhub_config.d snippets produce the settings
fort-hub needs (and never override what hub.config set)."""

from __future__ import annotations

import copy
import importlib
import sys
import types
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema
import pytest
import yaml
from traitlets import TraitError
from traitlets.config import Config

from fort_hub import deploy, scopes

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "z2jh"
VALUES = ROOT / "helm-values" / "values.yaml"
VALUES_DEV = ROOT / "helm-values" / "values-dev.yaml"
SNIPPETS = sorted((ROOT / "jupyterhub_config.d").glob("*.py"))

#: hub.config sections Z2JH users set that are not the authenticator or spawner class
BASE_SECTIONS = {
    "JupyterHub": "jupyterhub.app:JupyterHub",
    "Spawner": "jupyterhub.spawner:Spawner",
    "Authenticator": "jupyterhub.auth:Authenticator",
    "OAuthenticator": "oauthenticator.oauth2:OAuthenticator",
    "KubeSpawner": "kubespawner:KubeSpawner",
    "CryptKeeper": "jupyterhub.crypto:CryptKeeper",
    "ConfigurableHTTPProxy": "jupyterhub.proxy:ConfigurableHTTPProxy",
    "FortSettings": "fort_hub.config:FortSettings",
}


def helm_merge(base, override):
    """Merge like helm does for values files: maps deep-merge, anything else replaces, and a
    null in the override deletes the key."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = helm_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def chart():
    if not (SHARED / "values.yaml").exists():
        pytest.fail(f"the Z2JH chart files are missing: expected {SHARED}/values.yaml")
    return load_yaml(SHARED / "values.yaml"), load_yaml(SHARED / "values.schema.yaml")


VARIANTS = {"values": [VALUES], "values+dev": [VALUES, VALUES_DEV]}


def merged(chart_defaults, files):
    out = chart_defaults
    for f in files:
        out = helm_merge(out, load_yaml(f))
    return out


def test_helm_merge_semantics():
    assert helm_merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None, "d": 3}, "l": [2]}) == {
        "a": {"c": 2, "d": 3},
        "l": [2],
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_values_validate_against_chart_schema(chart, variant):
    defaults, schema = chart
    values = merged(defaults, VARIANTS[variant])
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)
    ]
    assert errors == []


def test_schema_check_can_fail(chart):
    defaults, schema = chart
    bad = helm_merge(
        merged(defaults, [VALUES]), {"singleuser": {"cloudMetadata": {"blockWithIptable": True}}}
    )
    assert list(jsonschema.Draft7Validator(schema).iter_errors(bad))


def _load(dotted: str):
    module, _, name = dotted.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{dotted} is not importable ({type(e).__name__}: {e}); hub.config names it")


def _plugin_class(group: str, name: str):
    for ep in entry_points(group=group):
        if ep.name == name:
            return _load(ep.value)
    if "." in name:
        module, _, cls = name.rpartition(".")
        return _load(f"{module}:{cls}")
    pytest.fail(f"{name!r} is neither a {group} entry point nor a dotted class path")


def configured_classes(config: dict) -> dict[str, type]:
    """Section name -> class, for every class a hub.config section may configure."""
    jh = config.get("JupyterHub", {})
    classes = {name: _load(path) for name, path in BASE_SECTIONS.items()}
    for group, key, default in (
        ("jupyterhub.authenticators", "authenticator_class", "dummy"),
        ("jupyterhub.spawners", "spawner_class", "kubespawner.KubeSpawner"),
    ):
        cls = _plugin_class(group, jh.get(key, default))
        for klass in cls.__mro__:
            if hasattr(klass, "class_traits"):
                classes.setdefault(klass.__name__, klass)
    return classes


def check_hub_config(config: dict) -> list[str]:
    problems = []
    classes = configured_classes(config)
    for section, settings in config.items():
        cls = classes.get(section)
        if cls is None:
            problems.append(f"hub.config.{section}: no configured class is called {section}")
            continue
        traits = cls.class_traits(config=True)
        for key, value in settings.items():
            if key not in traits:
                problems.append(
                    f"hub.config.{section}.{key}: {cls.__module__}.{section} has no such setting"
                )
                continue
            try:
                traits[key].validate(cls.__new__(cls), value)
            except TraitError as e:
                problems.append(f"hub.config.{section}.{key}: {e}")
    return problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_hub_config_keys_are_real_traits(chart, variant):
    values = merged(chart[0], VARIANTS[variant])
    assert check_hub_config(values["hub"]["config"]) == []


def test_hub_config_check_can_fail(chart):
    values = merged(chart[0], [VALUES])
    config = helm_merge(
        values["hub"]["config"], {"FacebookOAuthenticator": {"dialog_ur": "x"}, "Nope": {}}
    )
    problems = check_hub_config(config)
    assert any("dialog_ur" in p for p in problems)
    assert any("hub.config.Nope" in p for p in problems)


def test_values_scopes_roles_and_services_match_fort_hub():
    hub = load_yaml(VALUES)["hub"]
    assert hub["config"]["JupyterHub"]["custom_scopes"] == scopes.CUSTOM_SCOPES
    assert hub["config"]["Spawner"]["server_token_scopes"] == scopes.server_token_scopes()
    roles = [{"name": name, **role} for name, role in hub["loadRoles"].items()]
    assert roles == scopes.load_roles(load_yaml(VALUES)["custom"]["fort"]["adminGroup"])
    assert set(hub["services"]) == set(scopes.SERVICES)
    ports = {p["name"]: p["port"] for p in hub["service"]["extraPorts"]}
    for name, (module, offset) in deploy.SERVICE_MODULES.items():
        port = 10101 + offset
        assert hub["services"][name]["url"] == f"http://hub:{port}"
        assert hub["services"][name]["command"][2] == module
        assert ports[name] == port
    su = load_yaml(VALUES)["singleuser"]
    assert su["cloudMetadata"]["blockWithIptables"] is True


def test_production_values_keep_what_the_deployment_guide_relies_on():
    values = load_yaml(VALUES)
    hub, proxy, su = values["hub"], values["proxy"], values["singleuser"]
    assert "fort-hub-hub" in hub["image"]["name"]  # docker/hub.Dockerfile: fort-hub installed
    assert hub["db"]["type"] == "postgres" and hub["db"]["url"].startswith("postgresql")
    assert hub["extraEnv"]["FORT_STORE_URL"]["value"].startswith("postgresql+psycopg://")
    assert hub["config"]["FortSettings"]["policy_file"].startswith(
        next(m["mountPath"] for m in hub["extraVolumeMounts"] if m["name"] == "fort-policy")
    )
    assert any(v.get("configMap", {}).get("name") == "fort-policy" for v in hub["extraVolumes"])
    assert proxy["https"]["enabled"] is True
    assert hub["config"]["FacebookOAuthenticator"]["oauth_callback_url"].startswith("https://")
    assert values["cull"]["enabled"] is True and values["cull"]["timeout"] > 0
    spawner = hub["config"]["FortKubeSpawner"]
    assert spawner["aws_identity_mode"] == "vending"
    if proxy["https"]["type"] in ("letsencrypt", "manual"):
        # autohttps redirects plain HTTP on proxy-public: notebooks must use proxy-http
        assert spawner["services_url"] == "http://proxy-http:8000/services/"
        assert su["extraLabels"]["hub.jupyter.org/network-access-proxy-http"] == "true"


# ----- the jupyterhub_config.d snippets ---------------------------------------------------------


def z2jh_module(values: dict) -> types.ModuleType:
    """A stand-in for the chart's z2jh.py (same get_config semantics)."""

    def get_config(key, default=None):
        value = values
        for level in key.split("."):
            if not isinstance(value, dict) or level not in value:
                return default
            value = value[level]
        return value

    mod = types.ModuleType("z2jh")
    mod.get_config = get_config
    return mod


def run_snippets(c: Config) -> Config:
    assert [p.name[:3] for p in SNIPPETS] == ["10-", "20-", "30-", "40-"]
    for path in SNIPPETS:
        exec(compile(path.read_text(), path.name, "exec"), {"c": c})
    return c


def z2jh_config(values: dict) -> Config:
    """What Z2JH's jupyterhub_config.py has built by the time it loads jupyterhub_config.d."""
    c = Config()
    c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
    c.JupyterHub.services = []
    c.JupyterHub.load_roles = []
    for name, service in copy.deepcopy(values["hub"].get("services", {})).items():
        service.setdefault("name", name)
        service["api_token"] = "secret-from-chart"
        c.JupyterHub.services.append(service)
    for name, role in copy.deepcopy(values["hub"].get("loadRoles", {})).items():
        role.setdefault("name", name)
        c.JupyterHub.load_roles.append(role)
    for section, cfg in copy.deepcopy(values["hub"]["config"]).items():
        c[section].update(cfg)
    return c


def test_snippets_in_a_z2jh_hub(chart, monkeypatch):
    values = merged(chart[0], [VALUES])
    monkeypatch.setitem(sys.modules, "z2jh", z2jh_module(values))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/fort-hub")
    monkeypatch.setenv("FORT_STORE_URL", "postgresql+psycopg://fort:pw@db/fort")
    c = run_snippets(z2jh_config(values))
    assert c.JupyterHub.authenticator_class == "facebook"
    assert c.JupyterHub.spawner_class == "fort-kubernetes"
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert list(services) == list(scopes.SERVICES)
    groups = services["fort-groups"]
    assert groups["url"] == "http://hub:10101"
    assert groups["api_token"] == "secret-from-chart"  # hub.services' own keys are kept
    assert groups["command"][-1] == "--bind-url=http://0.0.0.0:10101"
    assert groups["environment"]["FORT_POLICY_FILE"] == "/usr/local/etc/jupyterhub/fort/policy.yaml"
    assert groups["environment"]["AWS_ROLE_ARN"].endswith("role/fort-hub")
    assert groups["environment"]["FORT_STORE_URL"].startswith("postgresql")
    assert groups["oauth_no_confirm"] is True
    assert scopes.GROUPS_ADMIN in groups["oauth_client_allowed_scopes"]
    names = [r["name"] for r in c.JupyterHub.load_roles]
    assert sorted(names) == sorted(r["name"] for r in scopes.load_roles())  # no duplicates
    assert c.Spawner.server_token_scopes == scopes.server_token_scopes()
    assert c.JupyterHub.custom_scopes == scopes.CUSTOM_SCOPES


def test_snippets_without_z2jh_fill_defaults_from_environment(monkeypatch):
    monkeypatch.delitem(sys.modules, "z2jh", raising=False)
    monkeypatch.setattr(deploy, "_z2jh_get_config", lambda: None)
    monkeypatch.setenv("FORT_POLICY_FILE", "/etc/fort/policy.yaml")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5555")
    monkeypatch.setenv("FORT_SERVICES_PORT", "20201")
    monkeypatch.delenv("FORT_SERVICES_HOST", raising=False)
    monkeypatch.delenv("FORT_SERVICES_BIND_HOST", raising=False)
    c = run_snippets(Config())
    assert c.JupyterHub.authenticator_class == "facebook"
    assert c.JupyterHub.spawner_class == "fort-local"
    assert c.FortSettings.policy_file == "/etc/fort/policy.yaml"
    assert c.Authenticator.enable_auth_state is True
    services = {s["name"]: s for s in c.JupyterHub.services}
    query = services["fort-query"]
    assert query["url"] == "http://127.0.0.1:20203"
    assert query["command"] == [sys.executable, "-m", "fort_hub.services.query"]
    assert query["environment"] == {
        "FORT_POLICY_FILE": "/etc/fort/policy.yaml",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5555",
        **{
            k: v
            for k, v in query["environment"].items()
            if k not in ("FORT_POLICY_FILE", "AWS_ENDPOINT_URL")
        },
    }
    assert services["fort-credentials"]["display"] is False
    assert {r["name"] for r in c.JupyterHub.load_roles} >= {"user", "fort-admin"}


def test_snippets_never_override(monkeypatch):
    monkeypatch.setattr(deploy, "_z2jh_get_config", lambda: None)
    c = Config()
    c.JupyterHub.authenticator_class = "dummy"
    c.JupyterHub.spawner_class = "simple"
    c.FortSettings.policy_file = "/mine.yaml"
    c.Authenticator.enable_auth_state = False
    c.JupyterHub.services = [
        {"name": "fort-query", "url": "http://10.0.0.9:7000"},
        {"name": "other"},
    ]
    c.JupyterHub.load_roles = [
        {"name": "user", "scopes": ["self", "read:users:activity"]},
        {"name": "fort-admin", "scopes": ["admin:users"], "users": ["root"]},
    ]
    c.JupyterHub.custom_scopes = {"custom:mine:x": {"description": "mine"}}
    c.Spawner.server_token_scopes = ["read:users:name!user"]
    run_snippets(c)
    assert c.JupyterHub.authenticator_class == "dummy"
    assert c.JupyterHub.spawner_class == "simple"
    assert c.Authenticator.enable_auth_state is False
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services["fort-query"]["url"] == "http://10.0.0.9:7000"
    assert services["fort-query"]["environment"]["FORT_POLICY_FILE"] == "/mine.yaml"
    assert "other" in services and "fort-groups" in services
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["fort-admin"] == {
        "name": "fort-admin",
        "scopes": ["admin:users"],
        "users": ["root"],
    }
    assert roles["user"]["scopes"][:2] == ["self", "read:users:activity"]
    assert set(scopes.user_scopes()) <= set(roles["user"]["scopes"])
    assert "custom:mine:x" in c.JupyterHub.custom_scopes
    assert set(scopes.CUSTOM_SCOPES) <= set(c.JupyterHub.custom_scopes)
    assert c.Spawner.server_token_scopes[0] == "read:users:name!user"
    assert set(scopes.server_token_scopes()) <= set(c.Spawner.server_token_scopes)


def test_snippet_result_is_accepted_by_jupyterhub(monkeypatch, tmp_path):
    """The services and roles the snippets build pass JupyterHub's own trait validation."""
    from jupyterhub.app import JupyterHub

    monkeypatch.setattr(deploy, "_z2jh_get_config", lambda: None)
    monkeypatch.setenv("FORT_POLICY_FILE", str(tmp_path / "policy.yaml"))
    c = run_snippets(Config())
    app = JupyterHub(config=c)
    assert [s["name"] for s in app.services] == list(scopes.SERVICES)
    assert app.custom_scopes == scopes.CUSTOM_SCOPES
    from jupyterhub.services.service import Service

    allowed = set(Service.class_trait_names(input=True))
    for spec in app.services:
        assert set(spec) <= allowed, set(spec) - allowed
