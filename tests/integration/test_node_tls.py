"""TLS on the node's own port, served with the context `edge serve` builds (edge.serving) and
certificates made by `openssl`: counters that trust the governorate's CA are served; a client
that does not, plain http, and (with client_ca_file) a counter without a certificate the CA
issued are refused in the handshake; the node's local tools verify it by an exact pin.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from nodefixtures import RunningNode, make_bill, start_node
from tlscerts import Authority, Pair

from edge import cli, config, serving
from edge.errors import ConfigError
from edge.ops import probes

ACCOUNT = "0100234567"


class Pki:
    def __init__(self, base: Path) -> None:
        self.ca = Authority.make(base / "governorate")
        self.rogue = Authority.make(base / "rogue", "rogue-ca")
        # The node's certificate may also be its local tools' client identity (mutual TLS).
        self.node = self.ca.issue("edge-node", also_client=True)
        self.server_only = self.ca.issue("edge-server")
        self.counter = self.ca.issue("counter-1", client=True)
        self.foreign_counter = self.rogue.issue("counter-1", client=True)
        self.impostor = self.rogue.issue("impostor")

    def serving(self, pair: Pair | None = None, *, client_ca: bool = False) -> dict[str, Any]:
        pair = self.node if pair is None else pair
        return {"http_cert_file": str(pair.cert), "http_key_file": str(pair.key),
                "http_client_ca_file": str(self.ca.cert) if client_ca else ""}  # fmt: skip

    def client(self, ca: Path | None = None, pair: Pair | None = None) -> ssl.SSLContext:
        """A counter's context: trusts `ca` (ours by default), presents `pair` if given."""
        context = ssl.create_default_context(cafile=str(ca or self.ca.cert))
        if pair is not None:
            context.load_cert_chain(str(pair.cert), str(pair.key))
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


Started = Callable[..., Awaitable[RunningNode]]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Started]:
    started: list[tuple[web.AppRunner, RunningNode]] = []

    async def start(**kw: Any) -> RunningNode:
        runner, rn = await start_node(tmp_path / f"n{len(started)}", [make_bill(ACCOUNT)], **kw)
        started.append((runner, rn))
        return rn

    yield start
    for runner, rn in reversed(started):
        await rn.session.close()
        await runner.cleanup()


async def inquire(rn: RunningNode, context: ssl.SSLContext | bool, url: str = "") -> int:
    """An inquiry on a fresh connection with `context`: the HTTP status it gets."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(
            f"{url or rn.url}/v1/accounts/{ACCOUNT}/bills", headers=rn.headers("viewer")
        ) as resp,
    ):
        if resp.status == 200:
            assert (await resp.json())["account"] == ACCOUNT
        return resp.status


async def status(rn: RunningNode) -> dict[str, Any]:
    async with rn.session.get(f"{rn.url}/v1/status") as resp:
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


async def test_an_inquiry_over_https_is_served_to_a_client_that_trusts_the_ca(
    pki: Pki, node: Started
) -> None:
    rn = await node(client_ssl=pki.client(), **pki.serving())
    assert rn.url.startswith("https://127.0.0.1:")
    assert await inquire(rn, pki.client()) == 200
    assert (await status(rn))["http"] == {
        "tls": True, "client_certificates": False, "insecure": False
    }  # fmt: skip


async def test_a_client_that_does_not_trust_the_ca_fails_the_handshake(
    pki: Pki, node: Started
) -> None:
    rn = await node(client_ssl=pki.client(), **pki.serving())
    for context in (pki.client(ca=pki.rogue.cert), ssl.create_default_context()):
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await inquire(rn, context)


async def test_a_client_that_trusts_the_ca_refuses_an_impostor_node(
    pki: Pki, node: Started
) -> None:
    # Someone on the LAN with a certificate from another CA, answering in the node's place.
    rn = await node(client_ssl=False, **pki.serving(pki.impostor))
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await inquire(rn, pki.client())


async def test_plain_http_to_the_tls_port_gets_no_answer(pki: Pki, node: Started) -> None:
    rn = await node(client_ssl=pki.client(), **pki.serving())
    plain = rn.url.replace("https://", "http://")
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await inquire(rn, False, url=plain)


async def test_with_client_ca_only_counters_with_a_certificate_it_issued_are_served(
    pki: Pki, node: Started
) -> None:
    rn = await node(client_ssl=pki.client(pair=pki.counter), **pki.serving(client_ca=True))
    assert await inquire(rn, pki.client(pair=pki.counter)) == 200
    # TLS 1.3: the refusal comes after the client's side of the handshake, as an alert
    # (an SSL error) or a closed connection; never an HTTP answer.
    for pair in (None, pki.foreign_counter):
        with pytest.raises((aiohttp.ClientSSLError, aiohttp.ClientOSError,
                            aiohttp.ServerDisconnectedError)):  # fmt: skip
            await inquire(rn, pki.client(pair=pair))
    assert (await status(rn))["http"] == {
        "tls": True, "client_certificates": True, "insecure": False
    }  # fmt: skip


async def test_the_system_ca_store_does_not_vouch_for_counters(
    pki: Pki, node: Started, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Make the "system" store the rogue CA: a certificate it issued must still be refused,
    # only http.client_ca_file counts (a public CA must not open the node to its customers).
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.rogue.cert))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    rn = await node(client_ssl=pki.client(pair=pki.counter), **pki.serving(client_ca=True))
    with pytest.raises((aiohttp.ClientSSLError, aiohttp.ClientOSError,
                        aiohttp.ServerDisconnectedError)):  # fmt: skip
        await inquire(rn, pki.client(pair=pki.foreign_counter))
    assert await inquire(rn, pki.client(pair=pki.counter)) == 200


def local(rn: RunningNode) -> config.Settings:
    """The node's settings as its local tools read them: the port it really listens on."""
    return rn.node.settings.replace(http_port=int(rn.url.rsplit(":", 1)[1]))


@pytest.mark.parametrize("client_ca", [False, True])
async def test_local_tools_verify_the_node_by_its_certificate(
    pki: Pki, node: Started, client_ca: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The certificate names 127.0.0.1 and localhost here, but the pin does not rely on it.
    rn = await node(client_ssl=False, **pki.serving(client_ca=client_ca))
    s = local(rn)
    check = await probes.check_node(s)
    assert check.level == "OK" and check.detail.startswith("https://127.0.0.1:"), check
    toml = tmp_path / "edge.toml"
    toml.write_text(
        f'[http]\nhost = "0.0.0.0"\nport = {s.http_port}\ncert_file = "{s.http_cert_file}"\n'
        f'key_file = "{s.http_key_file}"\nclient_ca_file = "{s.http_client_ca_file}"\n'
    )
    # `edge status` blocks (urllib): in a thread, so this loop keeps serving it.
    assert await asyncio.to_thread(cli.main, ["status", "--config", str(toml)]) == 0
    assert '"tls": true' in capsys.readouterr().out


async def test_local_tools_fail_with_advice_when_the_pin_or_their_certificate_is_wrong(
    pki: Pki, node: Started
) -> None:
    # The file renewed but the node not restarted: it still serves the old certificate.
    rn = await node(client_ssl=False, **pki.serving(pki.server_only))
    check = await probes.check_node(local(rn).replace(**pki.serving()))
    assert check.level == "FAIL" and "restart the node" in check.advice, check
    # Mutual TLS with a node certificate that may not be a client's (serverAuth only).
    rn = await node(client_ssl=False, **pki.serving(pki.server_only, client_ca=True))
    check = await probes.check_node(local(rn))
    assert check.level == "FAIL" and "extendedKeyUsage clientAuth" in check.advice, check


def test_unloadable_files_stop_the_start_naming_the_keys(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    bad = {"mismatched key": pki.serving() | {"http_key_file": str(pki.counter.key)},
           "garbage client CA": pki.serving() | {"http_client_ca_file": str(garbage)},
           "garbage certificate": pki.serving() | {"http_cert_file": str(garbage)}}  # fmt: skip
    for what, changes in bad.items():
        with pytest.raises(ConfigError, match=r"http\.cert_file/key_file/client_ca_file"):
            serving.server_context(config.Settings().replace(**changes))
            pytest.fail(what)
    toml = tmp_path / "edge.toml"
    toml.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\n[http]\nhost = "127.0.0.1"\nport = 0\n'
        f'cert_file = "{pki.node.cert}"\nkey_file = "{pki.node.key}"\n'
        f'client_ca_file = "{garbage}"\n[centre]\nurl = ""\n'
    )
    assert cli.main(["serve", "--config", str(toml)]) == 2
    assert not (tmp_path / "data").exists()  # refused before anything opened


@pytest.mark.parametrize(
    ("host", "insecure"), [("127.0.0.1", False), ("localhost", False), ("0.0.0.0", True)]
)
async def test_status_says_whether_plain_http_reaches_other_machines(
    node: Started, host: str, insecure: bool
) -> None:
    # The socket is on 127.0.0.1 whatever http.host says: the document follows the setting.
    rn = await node(http_host=host)
    assert (await status(rn))["http"] == {
        "tls": False, "client_certificates": False, "insecure": insecure
    }  # fmt: skip
    assert serving.insecure(rn.node.settings) is insecure
    assert (probes.check_http_security(rn.node.settings).level == "WARN") is insecure
