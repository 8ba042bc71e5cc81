"""sync.tls without a network: which URLs are insecure, what a failure means, the TLS and
money keys of both configurations (the node's old key names still work)."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

from edge import config
from edge.errors import ConfigError
from edge.ops import checkconfig
from sync import tls
from sync.centre.config import Limits, parse
from sync.errors import CentreConfigError, CentreUnavailable, CentreUntrusted


@pytest.mark.parametrize(
    ("url", "insecure"),
    [
        ("http://127.0.0.1:9090", False), ("http://127.8.9.1", False), ("http://[::1]:9090", False),
        ("http://localhost:9090", False), ("http://api.localhost", False),
        ("https://10.0.0.5", False), ("", False),
        ("http://10.20.0.5:9090", True), ("http://centre.example.sy", True),
        ("http://[2001:db8::1]:80", True), ("http://localhost.example.sy", True),
    ],
)  # fmt: skip
def test_plain_http_is_insecure_only_off_this_machine(url: str, insecure: bool) -> None:
    assert tls.insecure(url) is insecure


def test_origin_drops_credentials_and_paths() -> None:
    assert tls.origin("http://u:secret@10.0.0.5:9090/x?y=1") == "http://10.0.0.5:9090"
    assert tls.origin("https://[2001:db8::1]/") == "https://[2001:db8::1]"


def test_handshake_failures_are_config_faults_and_resets_are_transient() -> None:
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] ...")
    verify.reason, verify.verify_message = "CERTIFICATE_VERIFY_FAILED", "unable to get issuer"
    wrapped = aiohttp.ClientOSError()
    wrapped.__cause__ = verify
    untrusted = tls.transport_failure(wrapped, "https://c")
    assert isinstance(untrusted, CentreUntrusted) and untrusted.config_fault
    assert not untrusted.stale and untrusted.status == 0
    assert "unable to get issuer" in untrusted.detail and untrusted.code == "tls_untrusted"
    plain = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER]")
    plain.reason = "WRONG_VERSION_NUMBER"
    assert "does not speak TLS" in tls.transport_failure(plain).detail
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    assert isinstance(tls.transport_failure(eof), CentreUnavailable)
    closed = tls.transport_failure(aiohttp.ServerDisconnectedError(), "https://c")
    assert isinstance(closed, CentreUnavailable) and "centre.cert_file" in closed.detail
    over_http = tls.transport_failure(aiohttp.ServerDisconnectedError(), "http://c")
    assert "cert_file" not in over_http.detail
    key = aiohttp.client_reqrep.ConnectionKey("c", 443, True, True, None, None, None)
    down = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))
    assert "cert_file" not in tls.transport_failure(down, "https://c").detail


def test_node_tls_keys_and_their_old_names(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('[centre]\nurl = "https://c.example.sy"\nca_file = "/etc/edge/ca.pem"\n'
                    'client_cert = "/etc/edge/node.pem"\nclient_key = "/etc/edge/node.key"\n')  # fmt: skip
    s = config.load(path, env={})
    assert (s.centre_ca_file, s.centre_cert_file, s.centre_key_file) == (
        "/etc/edge/ca.pem", "/etc/edge/node.pem", "/etc/edge/node.key",
    )  # fmt: skip
    rows = {key: source for key, _, source in checkconfig.effective(path, env={})}
    assert rows["centre.cert_file"] == "file" and rows["centre.key_file"] == "file"
    s = config.load(None, env={"EDGE_CENTRE_CLIENT_CERT": "/x.pem"})
    assert s.centre_cert_file == "/x.pem"
    path.write_text('[centre]\ncert_file = "/a.pem"\nclient_cert = "/b.pem"\n')
    with pytest.raises(ConfigError, match="both given"):
        config.load(path, env={})
    path.write_text('[centre]\nkey_file = "/a.key"\n')
    with pytest.raises(ConfigError, match=r"centre\.key_file"):
        config.load(path, env={})


def test_check_config_warns_about_plain_http_and_unused_tls_files() -> None:
    warned = checkconfig.config_warnings(
        config.Settings(
            centre_url="http://10.0.0.5:9090", centre_ca_file="/ca.pem", http_host="127.0.0.1"
        )
    )
    assert len(warned) == 2 and "plain http://" in warned[0] and "centre.ca_file" in warned[1]
    assert checkconfig.config_warnings(config.Settings(http_host="127.0.0.1")) == []


def test_centre_tls_and_money_keys(tmp_path: Path) -> None:
    (tmp_path / "dam-1.secret").write_text("s" * 64)
    (tmp_path / "dam-1.secret").chmod(0o600)
    raw = {
        "centre": {"cert_file": "tls/centre.pem", "key_file": "tls/centre.key",
                   "client_ca_file": "/etc/edge-centre/ca.pem", "max_credit": 500_000},
        "nodes": {"dam-1": {"governorate": "DAM", "secret_file": "dam-1.secret",
                            "max_payment": 10**10, "max_credit": 0},
                  "dam-2": {"governorate": "DAM", "secret_file": "dam-1.secret"}},
    }  # fmt: skip
    s = parse(raw, tmp_path)
    assert s.cert_file == tmp_path / "tls" / "centre.pem"
    assert s.client_ca_file == Path("/etc/edge-centre/ca.pem")
    assert s.limits("dam-1") == Limits(max_payment=10**10, max_credit=0)
    assert s.limits("dam-2") == Limits(max_payment=None, max_credit=500_000)
    assert parse({"nodes": raw["nodes"]}, tmp_path).limits("dam-2") == Limits()
    with pytest.raises(CentreConfigError, match=r"centre\.cert_file .*: no such file"):
        s.ssl_context()
    for bad, named in [
        ({"centre": {"key_file": "k.pem"}}, "need centre.cert_file"),
        ({"centre": {"max_credit": -1}}, "centre.max_credit"),
        ({"centre": {"max_credit": 1.5}}, "centre.max_credit"),
        ({"nodes": {"dam-1": {**raw["nodes"]["dam-1"], "max_payment": 0}}}, "max_payment"),
        ({"nodes": {"dam-1": {**raw["nodes"]["dam-1"], "max_payment": True}}}, "max_payment"),
    ]:
        with pytest.raises(CentreConfigError, match=named):
            parse(bad, tmp_path)
