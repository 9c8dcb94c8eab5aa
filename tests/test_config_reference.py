"""docs/configuration.md is generated from the traits' help text and must be up to date."""

from fort_hub.dev import gendocs


def test_configuration_reference_is_up_to_date():
    committed = gendocs.default_output().read_text()
    assert committed == gendocs.render(), (
        "docs/configuration.md is out of date: run python -m fort_hub.dev.gendocs"
    )


def test_reference_covers_every_fort_plugin():
    text = gendocs.render()
    for name in (
        "FortSettings", "FacebookOAuthenticator", "FortKubeSpawner", "FortLocalSpawner",
        "FortServiceApp", "CredentialsService", "QueryService",
    ):  # fmt: skip
        assert f"## `{name}`" in text
    assert "c.FortSettings.policy_file" in text


def test_check_mode_detects_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n")
    assert gendocs.main(["--check", "--output", str(stale)]) == 1
    assert gendocs.main(["--output", str(stale)]) == 0
    assert gendocs.main(["--check", "--output", str(stale)]) == 0
