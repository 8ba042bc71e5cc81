"""Settings: TOML then EDGE_* variables, validated with errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from edge import config
from edge.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "deploy" / "edge.toml.example"


def test_example_file_documents_every_key_with_its_default() -> None:
    flat = config.flatten(tomllib.loads(EXAMPLE.read_text()), EXAMPLE)
    defaults = config.Settings()
    assert set(flat) == {f.name for f in config.fields(config.Settings)}
    for name, value in flat.items():
        expected = getattr(defaults, name)
        assert (str(expected) if isinstance(expected, Path) else expected) == value, name


def test_toml_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('[node]\nid = "ale-2"\ngovernorate = "ALE"\n[http]\nport = 9000\n')
    settings = config.load(
        path, env={"EDGE_HTTP_PORT": "9100", "EDGE_NODE_DATA_DIR": "/srv/x", "OTHER": "1"}
    )
    assert (settings.node_id, settings.node_governorate) == ("ale-2", "ALE")
    assert settings.http_port == 9100
    assert settings.node_data_dir == Path("/srv/x")


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ('[node]\ngovernorate = "XXX"\n', {}, "node.governorate"),
        ('[node]\nid = "Bad Id"\n', {}, "node.id"),
        ("[http]\nport = 70000\n", {}, "http.port"),
        ('[http]\nport = "eighty"\n', {}, "http.port"),
        ("[http]\nprot = 80\n", {}, "http.prot"),
        ("[nodes]\nx = 1\n", {}, "[nodes]"),
        ("", {"EDGE_HTTP_PORT": "abc"}, "http.port"),
        ('[ups]\nsource = "apcupsd"\n', {}, "ups.source"),
        ('[power]\non_low = "panic"\n', {}, "power.on_low"),
        ('[storage]\nsynchronous = "NORMAL"\n', {}, "storage.synchronous"),
        ('[centre]\nurl = "ftp://x"\n', {}, "centre.url"),
        ('[node]\ntimezone = "Mars/Olympus"\n', {}, "node.timezone"),
        ("this is not toml", {}, "cannot read"),
        ("[http]\nheader_timeout_s = 0\n", {}, "http.header_timeout_s"),
        ("[http]\nbody_timeout_s = -1\n", {}, "http.body_timeout_s"),
        ("", {"EDGE_HTTP_KEEPALIVE_TIMEOUT_S": "0"}, "http.keepalive_timeout_s"),
        ("[http]\nmax_connections_per_address = 0\n", {}, "http.max_connections_per_address"),
    ],
)
def test_invalid_settings_name_the_key(
    tmp_path: Path, text: str, env: dict[str, str], named: str
) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace(".", r"\.")):
        config.load(path, env=env)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("host", "probe"),
    [("0.0.0.0", "127.0.0.1"), ("::", "127.0.0.1"), ("", "127.0.0.1"), ("10.1.2.3", "10.1.2.3")],
)
def test_a_server_listening_everywhere_is_probed_on_loopback(host: str, probe: str) -> None:
    assert config.probe_host(host) == probe
