"""[http] TLS keys: both of cert_file and key_file or neither, client_ca_file only with them,
every file given must exist; whether plain http reaches other machines; the local URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge import config, serving
from edge.errors import ConfigError
from edge.ops import checkconfig


def files(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name in ("node.pem", "node.key", "ca.pem"):
        (tmp_path / name).write_text("PEM is read at start, not here\n")
        out[name] = str(tmp_path / name)
    return out


def load(tmp_path: Path, http: str) -> config.Settings:
    path = tmp_path / "edge.toml"
    path.write_text(f"[http]\n{http}")
    return config.load(path, env={})


def test_cert_file_key_file_and_client_ca_file_are_accepted(tmp_path: Path) -> None:
    f = files(tmp_path)
    s = load(tmp_path, f'cert_file = "{f["node.pem"]}"\nkey_file = "{f["node.key"]}"\n'
                       f'client_ca_file = "{f["ca.pem"]}"\n')  # fmt: skip
    assert (s.http_cert_file, s.http_key_file, s.http_client_ca_file) == (
        f["node.pem"],
        f["node.key"],
        f["ca.pem"],
    )
    assert serving.uses_tls(s) and not serving.insecure(s)
    assert serving.local_url(s, "/v1/status") == "https://127.0.0.1:8080/v1/status"


@pytest.mark.parametrize(
    ("http", "named"),
    [
        ('key_file = "{node.key}"\n', "http.key_file is set without http.cert_file"),
        ('cert_file = "{node.pem}"\n', "http.cert_file is set without http.key_file"),
        ('client_ca_file = "{ca.pem}"\n', "http.client_ca_file is set without http.cert_file"),
        ('cert_file = "/nonexistent/node.pem"\nkey_file = "{node.key}"\n',
         "http.cert_file /nonexistent/node.pem: no such file"),
        ('cert_file = "{node.pem}"\nkey_file = "/nonexistent/node.key"\n',
         "http.key_file /nonexistent/node.key: no such file"),
        # A client CA that is not a file (here a directory) is refused, not silently ignored.
        ('cert_file = "{node.pem}"\nkey_file = "{node.key}"\nclient_ca_file = "{dir}"\n',
         "http.client_ca_file {dir}: no such file"),
    ],
)  # fmt: skip
def test_bad_tls_keys_are_refused_naming_the_key(tmp_path: Path, http: str, named: str) -> None:
    f = files(tmp_path) | {"dir": str(tmp_path)}
    for name, value in f.items():
        http, named = http.replace(f"{{{name}}}", value), named.replace(f"{{{name}}}", value)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, http)
    assert named in str(caught.value)


def test_environment_variables_set_the_tls_keys_too(tmp_path: Path) -> None:
    f = files(tmp_path)
    with pytest.raises(ConfigError, match=r"http\.key_file is set without http\.cert_file"):
        config.load(None, env={"EDGE_HTTP_KEY_FILE": f["node.key"]})
    s = config.load(None, env={"EDGE_HTTP_KEY_FILE": f["node.key"],
                               "EDGE_HTTP_CERT_FILE": f["node.pem"]})  # fmt: skip
    assert serving.uses_tls(s)


@pytest.mark.parametrize(
    ("host", "insecure", "url"),
    [
        ("0.0.0.0", True, "http://127.0.0.1:8080"),
        ("", True, "http://127.0.0.1:8080"),
        ("::", True, "http://127.0.0.1:8080"),
        ("10.20.0.7", True, "http://10.20.0.7:8080"),
        ("edge.dam.lan", True, "http://edge.dam.lan:8080"),
        ("127.0.0.1", False, "http://127.0.0.1:8080"),
        ("127.0.0.53", False, "http://127.0.0.53:8080"),
        ("::1", False, "http://[::1]:8080"),
        ("localhost", False, "http://localhost:8080"),
    ],
)
def test_plain_http_is_insecure_unless_on_loopback_only(
    host: str, insecure: bool, url: str
) -> None:
    s = config.Settings(http_host=host)
    assert serving.insecure(s) is insecure
    assert serving.local_url(s) == url
    warned = [w for w in checkconfig.config_warnings(s) if w.startswith("http.host")]
    assert len(warned) == int(insecure)
    assert all("http.cert_file and http.key_file" in w for w in warned)
    # With TLS nothing is said, whatever the address.
    tls = s.replace(http_cert_file="/n.pem", http_key_file="/n.key")
    assert not serving.insecure(tls)
    assert [w for w in checkconfig.config_warnings(tls) if w.startswith("http.host")] == []
