"""The deployment files, rendered by the real Z2JH chart with the real helm (tests/chart.py):
every manifest of every values combination validates against the Kubernetes schemas, helm's own
schema check refuses bad values, every hub.config key is a real configurable trait, and the
jupyterhub_config.d snippets (and hub.extraConfig) produce the settings fort-hub needs, never
override what hub.config set, and refuse a hub that would serve fort services behind another
login or spawner."""

from __future__ import annotations

import copy
import functools
import importlib
import sys
import types
from importlib.metadata import entry_points
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml
from traitlets import TraitError
from traitlets.config import Config

from fort_hub import deploy, scopes
from tests.chart import (
    IRSA_RBAC_CHART,
    K8S_VERSIONS,
    ROOT,
    VALUES,
    VARIANTS,
    HelmError,
    find,
    hub_container,
    hub_values,
    render,
)

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


def load_yaml(path):
    return yaml.safe_load(path.read_text())


@functools.cache
def rendered(variant: str, version: str = K8S_VERSIONS[-1]) -> list[dict]:
    return render(VARIANTS[variant], kube_version=version)


def values_of(variant: str) -> dict:
    """The merged values of *variant*, as helm merged them for the hub."""
    return hub_values(rendered(variant))


def test_every_values_file_is_in_a_rendered_combination():
    files = set((ROOT / "helm-values").glob("*.yaml"))
    assert files == {f for combo in VARIANTS.values() for f in combo}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_manifest_validates(variant, version):
    docs = rendered(variant, version)
    assert {"Deployment", "Secret", "ConfigMap", "Service", "NetworkPolicy"} <= {
        d["kind"] for d in docs
    }
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {e.message}")
    assert errors == []


def test_helm_applies_the_chart_schema():
    """helm validates the merged values against the chart's values.schema.json."""
    with pytest.raises(HelmError, match="blockWithIptable"):
        render([VALUES], sets=("singleuser.cloudMetadata.blockWithIptable=true",))


def test_a_null_extra_env_entry_does_not_render(tmp_path):
    """Why values-dev.yaml replaces values.yaml's secret env entries with strings: a null only
    deletes a key the chart's own defaults have, and the chart's hub.extraEnv is empty."""
    overlay = tmp_path / "null.yaml"
    overlay.write_text("hub: {extraEnv: {FORT_COOKIE_SECRET: null}}\n")
    with pytest.raises(HelmError, match=r"extraEnv\.FORT_COOKIE_SECRET had an unexpected type"):
        render([VALUES, overlay])


def test_dev_values_replace_the_production_secrets():
    env = {e["name"]: e for e in hub_container(rendered("values+dev"))["env"]}
    assert not any("valueFrom" in env[k] for k in ("OAUTH_CLIENT_SECRET", "FORT_COOKIE_SECRET"))
    assert env["FORT_STORE_URL"]["value"].startswith("sqlite:")
    prod = {e["name"]: e for e in hub_container(rendered("values"))["env"]}
    assert prod["FORT_COOKIE_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "fort-secrets"


@pytest.mark.parametrize("variant", VARIANTS)
def test_notebooks_reach_the_services_on_a_rendered_service(variant):
    """services_url names a Service (and port) the release has, and the proxy's network policy
    admits the notebooks' label on that port."""
    docs, values = rendered(variant), values_of(variant)
    url = urlparse(values["hub"]["config"]["FortKubeSpawner"]["services_url"])
    service = find(docs, "Service", url.hostname)
    port = next(p for p in service["spec"]["ports"] if p["port"] == (url.port or 80))
    labels = values["singleuser"]["extraLabels"]
    netpol = find(docs, "NetworkPolicy", "proxy")
    admitted = [
        r
        for r in netpol["spec"]["ingress"]
        if any(
            labels.get(k) == v
            for src in r.get("from", [])
            for k, v in src.get("podSelector", {}).get("matchLabels", {}).items()
        )
    ]
    assert any(p["port"] == port["targetPort"] for r in admitted for p in r["ports"])


def test_dev_usernames_are_the_policy_names():
    """With the dev values, the stand-in's identities log in as the names the dev policy lists."""
    from fort_hub.authenticators.facebook import FacebookOAuthenticator

    hub = values_of("values+dev")["hub"]
    auth = FacebookOAuthenticator(**hub["config"]["FacebookOAuthenticator"])
    identities = yaml.safe_load(hub["extraFiles"]["facebook-identities"]["stringData"])
    names = {auth.user_info_to_username(i) for i in identities["identities"].values()}
    members = {
        m if isinstance(m, str) else m["user"]
        for g in hub["extraFiles"]["fort-policy"]["data"]["groups"]
        for m in g["members"]
    }
    assert members <= names


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_irsa_rbac_chart_is_for_the_release_namespace(version):
    docs = render((), chart=IRSA_RBAC_CHART, namespace="lab", kube_version=version)
    role, binding = find(docs, "Role", "fort-hub-irsa"), find(docs, "RoleBinding", "fort-hub-irsa")
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "lab"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "lab"}]
    (rule,) = role["rules"]
    assert rule["resources"] == ["serviceaccounts"] and rule["apiGroups"] == [""]
    # FortKubeSpawner reads, creates, patches and deletes ServiceAccounts
    assert {"get", "create", "patch", "delete"} <= set(rule["verbs"])
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert not list((ROOT / "helm-values").glob("*rbac*"))  # manifests are not values files


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
def test_hub_config_keys_are_real_traits(variant):
    assert check_hub_config(values_of(variant)["hub"]["config"]) == []


def test_hub_config_check_can_fail():
    config = copy.deepcopy(values_of("values")["hub"]["config"])
    config["FacebookOAuthenticator"]["dialog_ur"] = "x"
    config["Nope"] = {}
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


def run_snippets(c: Config, check: bool = True) -> Config:
    assert [p.name[:3] for p in SNIPPETS] == ["10-", "20-", "30-", "40-", "90-"]
    for path in SNIPPETS if check else SNIPPETS[:-1]:
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


def test_snippets_in_a_z2jh_hub(monkeypatch):
    values = values_of("values")
    monkeypatch.setitem(sys.modules, "z2jh", z2jh_module(values))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/fort-hub")
    monkeypatch.setenv("FORT_STORE_URL", "postgresql+psycopg://fort:pw@db/fort")
    c = run_snippets(z2jh_config(values))
    assert c.JupyterHub.authenticator_class == "facebook"
    assert c.JupyterHub.spawner_class == "fort-kubernetes"
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert sorted(services) == sorted(scopes.SERVICES)  # helm sorts hub.services by name
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
    run_snippets(c, check=False)
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


def test_extra_config_alone_turns_fort_hub_on(monkeypatch):
    """values.yaml's hub.extraConfig does what the image's snippets do (no files needed)."""
    values = values_of("values")
    monkeypatch.setitem(sys.modules, "z2jh", z2jh_module(values))
    c = z2jh_config(values)
    exec(values["hub"]["extraConfig"]["fort-hub"], {"c": c})
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services["fort-query"]["environment"]["FORT_POLICY_FILE"].endswith("fort/policy.yaml")
    assert c.JupyterHub.custom_scopes == scopes.CUSTOM_SCOPES
    assert c.Spawner.server_token_scopes == scopes.server_token_scopes()
    twice = run_snippets(copy.deepcopy(c))  # image snippets and extraConfig: no duplicates
    assert twice.JupyterHub.services == c.JupyterHub.services
    assert twice.JupyterHub.load_roles == c.JupyterHub.load_roles


# ----- fail closed: fort services only behind fort's authenticator and spawner ----------------


def fort_config(**jupyterhub) -> Config:
    c = Config()
    c.JupyterHub.update(jupyterhub)
    c.FortSettings.policy_file = "/etc/fort/policy.yaml"
    deploy.configure_services(c)
    return c


def test_the_chart_defaults_with_fort_services_refuse_to_start(monkeypatch, capsys):
    """Z2JH's defaults (DummyAuthenticator, plain KubeSpawner) with the fort services: exit 1."""
    monkeypatch.setattr(deploy, "_z2jh_get_config", lambda: None)
    monkeypatch.delenv("FORT_TRUSTED_AUTHENTICATORS", raising=False)
    defaults = load_yaml(ROOT.parent / "shared" / "z2jh" / "chart" / "values.yaml")
    assert defaults["hub"]["config"]["JupyterHub"]["authenticator_class"] == "dummy"
    c = fort_config(authenticator_class="dummy", spawner_class="kubespawner.KubeSpawner")
    with pytest.raises(SystemExit) as e:
        deploy.check_deployment(c)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "FATAL: fort-hub: this hub runs fort services (fort-groups" in err
    assert "c.JupyterHub.authenticator_class is 'dummy'" in err and "'facebook'" in err
    assert "c.JupyterHub.spawner_class is 'kubespawner.KubeSpawner'" in err
    assert "'fort-kubernetes'" in err


@pytest.mark.parametrize(
    ("jupyterhub", "trusted", "problems"),
    [
        ({"authenticator_class": "facebook", "spawner_class": "fort-kubernetes"}, "", []),
        ({"authenticator_class": "local-facebook", "spawner_class": "fort-local"}, "", []),
        ({"authenticator_class": "github", "spawner_class": "fort-local"}, "", ["authenticator"]),
        ({"authenticator_class": "github", "spawner_class": "fort-local"}, "github", []),
        (
            {"authenticator_class": "oauthenticator.github.GitHubOAuthenticator"},
            "github, dummy",
            ["spawner_class is 'localprocess'"],  # JupyterHub's default spawner
        ),
        ({"spawner_class": "fort-local"}, "", ["authenticator_class is 'pam'"]),
        ({"authenticator_class": "facebook", "spawner_class": "github"}, "", ["spawner"]),
        (
            {"authenticator_class": "no.such.Auth", "spawner_class": "fort-local"},
            "no.such.Auth",
            ["'no.such.Auth' cannot be imported"],
        ),
    ],
)
def test_deployment_problems(monkeypatch, jupyterhub, trusted, problems):
    monkeypatch.setattr(deploy, "_z2jh_get_config", lambda: None)
    found = deploy.deployment_problems(fort_config(**jupyterhub), trusted=trusted)
    assert len(found) == (len(problems) + 1 if problems else 0), found
    for expected, got in zip(problems, found[1:], strict=True):
        assert expected in got


def test_trusted_authenticators_from_chart_values(monkeypatch):
    monkeypatch.setattr(
        deploy, "_z2jh_get_config", lambda: z2jh_module({"custom": {"fort": {
            "trustedAuthenticators": ["github"]}}}).get_config,
    )  # fmt: skip
    c = fort_config(authenticator_class="github", spawner_class="fort-kubernetes")
    assert deploy.deployment_problems(c) == []


def test_a_hub_without_fort_services_is_left_alone():
    c = Config()
    c.JupyterHub.authenticator_class = "dummy"
    c.JupyterHub.services = [{"name": "other", "command": ["x"]}]
    assert deploy.deployment_problems(c, trusted="") == []


def test_fort_services_without_a_policy_file_refuse_to_start(monkeypatch):
    monkeypatch.setattr(deploy, "_z2jh_get_config", lambda: None)
    monkeypatch.delenv("FORT_POLICY_FILE", raising=False)
    c = Config()
    c.JupyterHub.authenticator_class = "facebook"
    c.JupyterHub.spawner_class = "fort-local"
    deploy.configure_services(c)
    (_, problem) = deploy.deployment_problems(c, trusted="")
    assert "fort-groups, fort-credentials, fort-query would start without a policy file" in problem
    assert "hub.config.FortSettings.policy_file" in problem
