"""Every pluggable class is registered under an entry point name and configurable by it."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from traitlets import TraitError
from traitlets.config import Config

from fort_hub.services.credentials.backends import StsBackend, StubStsBackend
from fort_hub.services.query.engines.athena import AssumeRoleProvider, AthenaEngine
from fort_hub.services.query.engines.duckdb import DuckDBEngine

REGISTERED = {
    ("jupyterhub.authenticators", "facebook"): "fort_hub.authenticators.facebook:FacebookOAuthenticator",
    ("jupyterhub.authenticators", "local-facebook"): "fort_hub.authenticators.facebook:LocalFacebookOAuthenticator",
    ("jupyterhub.spawners", "fort-kubernetes"): "fort_hub.spawners.kubernetes:FortKubeSpawner",
    ("jupyterhub.spawners", "fort-local"): "fort_hub.spawners.local:FortLocalSpawner",
    ("fort_hub.sts_backends", "sts"): "fort_hub.services.credentials.backends:StsBackend",
    ("fort_hub.sts_backends", "stub"): "fort_hub.services.credentials.backends:StubStsBackend",
    ("fort_hub.query_engines", "duckdb"): "fort_hub.services.query.engines.duckdb:DuckDBEngine",
    ("fort_hub.query_engines", "athena"): "fort_hub.services.query.engines.athena:AthenaEngine",
    ("fort_hub.result_stores", "local"): "fort_hub.services.query.results:LocalResultStore",
    ("fort_hub.result_stores", "s3"): "fort_hub.services.query.results_s3:S3ResultStore",
    ("fort_hub.athena_credentials", "assume-role"): "fort_hub.services.query.engines.athena:AssumeRoleProvider",
}  # fmt: skip


@pytest.mark.parametrize(("group", "name"), sorted(REGISTERED))
def test_entry_point_is_registered_and_loads(group, name):
    eps = {ep.name: ep for ep in entry_points(group=group)}
    assert name in eps, f"{group}:{name} is not registered (pip install -e . again?)"
    assert eps[name].value == REGISTERED[group, name]
    module, _, attr = REGISTERED[group, name].partition(":")
    assert eps[name].load().__name__ == attr and eps[name].load().__module__ == module


def test_hub_plugins_resolve_by_name_as_jupyterhub_does():
    from jupyterhub.app import JupyterHub

    from fort_hub.authenticators.facebook import FacebookOAuthenticator
    from fort_hub.spawners.local import FortLocalSpawner

    hub = JupyterHub(authenticator_class="facebook", spawner_class="fort-local")
    assert hub.authenticator_class is FacebookOAuthenticator
    assert hub.spawner_class is FortLocalSpawner


def test_service_backends_resolve_by_name(tmp_path):
    from fort_hub.services.credentials.app import CredentialsService
    from fort_hub.services.query.app import QueryService

    cred = CredentialsService(sts_backend_class="stub")
    assert cred.sts_backend_class is StubStsBackend
    assert CredentialsService(sts_backend_class="STS").sts_backend_class is StsBackend  # any case
    q = QueryService(duckdb_engine_class="duckdb", athena_engine_class="athena")
    assert (q.duckdb_engine_class, q.athena_engine_class) == (DuckDBEngine, AthenaEngine)
    from fort_hub.services.query.results import LocalResultStore
    from fort_hub.services.query.results_s3 import S3ResultStore

    assert QueryService().result_store_class is LocalResultStore  # the default
    assert QueryService(result_store_class="s3").result_store_class is S3ResultStore
    c = Config()
    c.AthenaEngine.credentials_provider_class = "assume-role"
    assert AthenaEngine(config=c).credentials_provider_class is AssumeRoleProvider


def test_unknown_backend_name_is_a_clear_error_naming_the_setting():
    from fort_hub.services.credentials.app import CredentialsService

    with pytest.raises(TraitError, match="sts_backend_class"):
        CredentialsService(sts_backend_class="no-such-backend")
