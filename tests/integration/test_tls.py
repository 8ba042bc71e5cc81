"""The link over TLS, with real servers on 127.0.0.1 and certificates made by `openssl`: a
pinned CA and client certificates; a wrong CA, a missing or foreign client certificate and
https to a plain centre are refused, with nothing delivered and the link saying why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from centrefixtures import ACCOUNTS, CYCLE, GOV, Link, eventually, start_link
from nodefixtures import make_bill
from tlscerts import Authority, Pair

import outbox
from edge import cli, config, mirror, replication
from edge.errors import ConfigError
from edge.ops import probes

BILL = f"{GOV}-{CYCLE}-{ACCOUNTS[0]}"


class Pki:
    def __init__(self, base: Path) -> None:
        self.ca = Authority.make(base / "ministry")
        self.rogue = Authority.make(base / "rogue", "rogue-ca")
        self.centre = self.ca.issue("centre")
        self.node = self.ca.issue("dam-1", client=True)
        self.foreign_node = self.rogue.issue("dam-1", client=True)

    def serving(self, *, client_ca: bool = True) -> dict[str, Any]:
        """[centre] TLS settings: our certificate, and client certificates required."""
        return {"cert_file": self.centre.cert, "key_file": self.centre.key,
                "client_ca_file": self.ca.cert if client_ca else None}  # fmt: skip

    def client(self, ca: Path | None = None, pair: Pair | None = None) -> dict[str, Any]:
        """[centre] TLS settings of the node (our CA pinned, our client certificate)."""
        pair = self.node if pair is None else pair
        return {"centre_ca_file": str(ca or self.ca.cert),
                "centre_cert_file": str(pair.cert) if pair.cert.name else "",
                "centre_key_file": str(pair.key) if pair.key.name else ""}  # fmt: skip


NO_CERT = Pair(Path(""), Path(""))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


Started = Callable[..., Awaitable[Link]]


@pytest.fixture
async def tls_link(tmp_path: Path) -> AsyncIterator[Started]:
    closers: list[Callable[[], Awaitable[None]]] = []

    async def start(**kw: Any) -> Link:
        site = tmp_path / f"site-{len(closers)}"
        site.mkdir()
        lk, close = await start_link(site, **kw)
        closers.append(close)
        return lk

    yield start
    for close in reversed(closers):
        await close()


async def pay(link: Link, key: str, amount: int = 25_000) -> dict[str, Any]:
    rn = link.node
    async with rn.session.post(
        f"{rn.url}/v1/payments",
        json={"bill_id": BILL, "amount": amount, "method": "cash", "cashier": "huda"},
        headers=rn.headers(**{"Idempotency-Key": key}),
    ) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 201, body
        return body  # type: ignore[no-any-return]


async def status(link: Link) -> dict[str, Any]:
    rn = link.node
    async with rn.session.get(f"{rn.url}/v1/status") as resp:
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


async def seed_mirror(link: Link) -> None:
    """Bills the node holds already: a node refused by the centre can still take payments."""
    bills = [make_bill(a, CYCLE, amount=100_000) for a in ACCOUNTS]
    now = time.time()
    await link.node.node.db.write(lambda c: mirror.apply_changes(c, bills, 1, now=now))


async def refused(link: Link, *, untrusted: bool) -> str:
    """Pay once, then check nothing reached the centre and the link says why; last_error."""
    await seed_mirror(link)
    await pay(link, "k-refused")

    async def failing() -> bool:
        return link.node.node.link.last_error is not None and link.proxy.connections >= 2

    await eventually(failing, what="the loops to fail on the handshake")
    lk = link.node.node.link
    assert lk.state in ("degraded", "down") and lk.last_ok_at is None
    if untrusted:
        # No retry cures a certificate: held as a configuration fault, the link degraded.
        assert lk.state == "degraded" and lk.config_fault
        assert lk.last_error is not None and lk.last_error.startswith("tls_untrusted:")
    assert await link.centre.ledger() == []
    stats = link.node.node.db.read(outbox.stats)
    assert stats.pending == 1 and stats.delivered == 0
    shown = await status(link)
    assert shown["link"]["last_error"] == lk.last_error and shown["link"]["insecure"] is False
    return lk.last_error or ""


async def test_payments_and_bills_cross_tls_with_a_client_certificate(
    pki: Pki, tls_link: Started
) -> None:
    link = await tls_link(scheme="https", centre_overrides=pki.serving(), **pki.client())

    async def bootstrapped() -> bool:
        return link.node.node.db.read(mirror.state).bills == len(ACCOUNTS)

    await eventually(bootstrapped, what="the mirror to bootstrap over TLS")
    body = await pay(link, "k1")

    async def delivered() -> bool:
        return link.node.node.db.read(outbox.stats).delivered == 1

    await eventually(delivered, what="the payment to be delivered over TLS")
    assert [(r[3], r[4], r[5]) for r in await link.centre.ledger()] == [(BILL, 25_000, "applied")]
    assert await link.centre.bill(BILL) == (25_000, 2)
    shown = await status(link)
    assert shown["link"]["state"] == "up" and shown["link"]["insecure"] is False
    assert body["payment_id"]
    s = link.node.node.settings
    assert probes.check_link_security(s).level == "OK"
    secret = s.centre_secret_file.read_bytes().strip()
    assert [c.level for c in await probes.check_centre(s, secret, None)] == ["OK", "OK"]


async def test_a_centre_certificate_from_another_ca_is_refused(pki: Pki, tls_link: Started) -> None:
    # An impostor on the LAN with a certificate of its own: the node trusts only the pinned CA.
    link = await tls_link(
        scheme="https", centre_overrides=pki.serving(), **pki.client(ca=pki.rogue.cert)
    )
    error = await refused(link, untrusted=True)
    assert "not trusted" in error and "centre.ca_file" in error
    s = link.node.node.settings
    secret = s.centre_secret_file.read_bytes().strip()
    checked = await probes.check_centre(s, secret, None)
    assert checked[0].level == "FAIL" and "refused the TLS handshake" in checked[0].detail


async def test_https_to_a_plain_centre_is_refused(pki: Pki, tls_link: Started) -> None:
    link = await tls_link(scheme="https", **pki.client())
    error = await refused(link, untrusted=True)
    assert "does not speak TLS" in error


@pytest.mark.parametrize("cert", ["none", "foreign"])
async def test_a_node_without_a_valid_client_certificate_is_refused(
    pki: Pki, tls_link: Started, cert: str, caplog: pytest.LogCaptureFixture
) -> None:
    pair = NO_CERT if cert == "none" else pki.foreign_node
    link = await tls_link(scheme="https", centre_overrides=pki.serving(), **pki.client(pair=pair))
    # TLS 1.3: the centre refuses the certificate after the client's side of the handshake
    # is done, so the node sees a closed connection (a transport failure), never an answer.
    error = await refused(link, untrusted=False)
    assert error.startswith(("transport:", "tls_untrusted:")), error
    assert "tls_untrusted" in error or "centre.cert_file" in error
    if cert == "none":
        s = link.node.node.settings
        checked = await probes.check_centre(s, s.centre_secret_file.read_bytes().strip(), None)
        assert checked[0].level == "FAIL" and "centre.cert_file" in checked[0].advice


async def test_a_centre_without_client_ca_takes_a_node_without_a_certificate(
    pki: Pki, tls_link: Started
) -> None:
    link = await tls_link(
        scheme="https", centre_overrides=pki.serving(client_ca=False), **pki.client(pair=NO_CERT)
    )
    await seed_mirror(link)
    await pay(link, "k1")

    async def delivered() -> bool:
        return link.node.node.db.read(outbox.stats).delivered == 1

    await eventually(delivered, what="delivery over server-only TLS")


async def test_plain_http_to_another_machine_warns_at_start_hourly_and_in_status(
    tmp_path: Path, tls_link: Started, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(replication, "INSECURE_WARNING_EVERY_S", 0.2)
    caplog.set_level(logging.WARNING, logger="edge.replication")
    # 0.0.0.0 is not a loopback name, so the URL counts as another host's, yet Linux delivers
    # a connection to it on this machine (refused: nothing listens on port 9). No traffic
    # leaves the machine; the warning is about the URL alone.
    link = await tls_link(centre_url="http://user:pw@0.0.0.0:9", centre_timeout_s=0.5)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "plain http://" in r.getMessage()]

    async def repeated() -> bool:
        return len(warnings()) >= 3

    await eventually(repeated, what="the hourly warning (sped up)")
    assert "http://0.0.0.0:9" in warnings()[0] and "pw" not in warnings()[0]
    shown = await status(link)
    assert shown["link"]["insecure"] is True
    assert shown["tasks"]["insecure-link-warning"]["state"] == "running"
    async with link.node.session.get(f"{link.node.url}/metrics") as resp:
        assert "\nedge_link_insecure 1.0\n" in await resp.text()
    s = link.node.node.settings
    check = probes.check_link_security(s)
    assert check.level == "WARN" and "https://" in check.advice


async def test_unloadable_tls_files_stop_the_node_and_the_centre_at_start(
    pki: Pki, tmp_path: Path
) -> None:
    s = config.Settings(centre_url="https://127.0.0.1:1", centre_ca_file=str(tmp_path / "no.pem"))
    with pytest.raises(ConfigError, match=r"centre\.ca_file"):
        replication.make_session(s)
    s = s.replace(centre_ca_file=str(pki.ca.cert), centre_cert_file=str(pki.node.cert),
                  centre_key_file=str(pki.centre.key))  # fmt: skip
    with pytest.raises(ConfigError, match="cannot load the certificate"):
        replication.make_session(s)
    (tmp_path / "n.secret").write_text("x" * 64)
    (tmp_path / "n.secret").chmod(0o600)
    centre_toml = tmp_path / "centre.toml"
    centre_toml.write_text(f'[centre]\ndata_dir = "{tmp_path / "c"}"\ncert_file = "{pki.centre.cert}"\n'
                           f'key_file = "{pki.node.key}"\n[nodes.dam-1]\ngovernorate = "DAM"\n'
                           'secret_file = "n.secret"\n')  # fmt: skip
    assert cli.main(["centre", "serve", "--config", str(centre_toml)]) == 2


@pytest.mark.parametrize(
    ("changes", "level", "seen"),
    [
        ({"centre_url": "http://127.0.0.1:9090"}, "OK", "on this machine"),
        ({"centre_url": "http://10.20.0.5:9090"}, "WARN", "plain http://"),
        ({"centre_url": "https://centre.example.sy"}, "WARN", "every CA"),
        ({"centre_url": "https://c.example.sy", "centre_ca_file": "/nonexistent/ca.pem"}, "FAIL",
         "/nonexistent/ca.pem"),
    ],
)  # fmt: skip
def test_doctor_tls_check(changes: dict[str, str], level: str, seen: str) -> None:
    check = probes.check_link_security(config.Settings().replace(**changes))
    assert check.level == level and seen in check.detail, check


def test_doctor_tls_check_with_a_pinned_ca_and_a_bad_key(pki: Pki) -> None:
    s = config.Settings(centre_url="https://127.0.0.1:1", centre_ca_file=str(pki.ca.cert))
    assert probes.check_link_security(s).level == "OK"
    with_key = s.replace(centre_cert_file=str(pki.node.cert), centre_key_file=str(pki.node.key))
    assert probes.check_link_security(with_key).level == "OK"
    pki.node.key.chmod(0o644)
    try:
        check = probes.check_link_security(with_key)
        assert check.level == "WARN" and "chmod 600" in check.advice
    finally:
        pki.node.key.chmod(0o600)
    bad = s.replace(centre_cert_file=str(pki.node.cert), centre_key_file=str(pki.centre.key))
    check = probes.check_link_security(bad)
    assert check.level == "FAIL" and str(pki.centre.key) in check.detail
