"""`edge doctor` and `edge check-config` against a real node, a real centre and a real upsd."""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from pathlib import Path

import pytest
from centrefixtures import Link
from helpers import eventually, free_port
from upsd import UPS, Upsd

from edge import cli, config, mirror
from edge.ops import doctor, probes


@pytest.fixture(autouse=True)
def service_user_is_us(monkeypatch: pytest.MonkeyPatch) -> None:
    # The ownership checks compare with the service user; here that is whoever runs the tests
    # (a machine with a real `edge` user must not change the outcome).
    monkeypatch.setattr(doctor, "SERVICE_USER", pwd.getpwuid(os.getuid()).pw_name)


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


async def settled(link: Link) -> config.Settings:
    """The linked node's settings once its mirror holds the centre's bills."""
    node = link.node.node

    async def pulled() -> bool:
        return node.db.read(lambda c: mirror.state(c).bills) > 0

    await eventually(pulled, what="the first mirror pull")
    port = int(link.node.url.rsplit(":", 1)[1])
    return node.settings.replace(http_port=port)


async def test_a_healthy_node_passes(link: Link) -> None:
    s = await settled(link)
    s.centre_secret_file.chmod(0o600)
    checks = by_name(await doctor.run(s))
    assert {name: c.level for name, c in checks.items()} | {"ups": "-"} == {
        "data dir": "OK", "free space": checks["free space"].level, "fsync": checks["fsync"].level,
        "database": "OK", "mirror": "OK", "outbox": "OK", "tokens": "OK", "http tls": "OK", "secret": "OK", "ups": "-",
        "tls": "OK", "centre": "OK", "clock": "OK", "node": "OK",
    }  # fmt: skip
    assert checks["ups"].level == "WARN" and "none" in checks["ups"].detail
    assert "accepted this node's signature" in checks["centre"].detail
    lines: list[str] = []
    assert doctor.report(list(checks.values()), lines.append) == 0
    assert lines[-1].startswith("0 FAIL")


async def test_a_wrong_secret_fails_with_advice(link: Link, tmp_path: Path) -> None:
    s = await settled(link)
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-secret-the-centre-has-0123456789\n")
    wrong.chmod(0o600)
    checks = await doctor.run(s.replace(centre_secret_file=wrong))
    centre = by_name(checks)["centre"]
    assert centre.level == "FAIL" and "401 unauthorized" in centre.detail
    assert "key problem" in centre.advice and "[nodes.dam-1]" in centre.advice
    lines: list[str] = []
    assert doctor.report(checks, lines.append) == 1
    assert any(line.strip().startswith("-> key problem") for line in lines)


@pytest.mark.parametrize(
    ("text", "mode", "seen"),
    [("short\n", 0o600, "at least 32"), ("k" * 64 + "\n", 0o644, "0600 or stricter")],
)
def test_a_secret_that_breaks_the_rules_fails_with_the_fix(
    tmp_path: Path, text: str, mode: int, seen: str
) -> None:
    path = tmp_path / "centre.secret"
    path.write_text(text)
    path.chmod(mode)
    s = config.Settings(node_id="dam-1", centre_secret_file=path, centre_url="http://c")
    check, secret = doctor.check_secret(s)
    assert check.level == "FAIL" and secret is None
    assert str(path) in check.detail and seen in check.detail
    assert "edge secret new" in check.advice
    path.write_text("k" * 64 + "\n")
    path.chmod(0o600)
    check, secret = doctor.check_secret(s)
    assert check.level == "OK" and secret == b"k" * 64 and "key id" in check.detail


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file to another user")
async def test_a_secret_the_service_user_cannot_read_fails(link: Link) -> None:
    s = await settled(link)
    s.centre_secret_file.chmod(0o600)
    os.chown(s.centre_secret_file, 54321, 54321)
    check, _ = doctor.check_secret(s)
    assert check.level == "FAIL" and "cannot read it" in check.advice


async def test_unknown_node_unreachable_centre_and_a_wrong_clock(link: Link) -> None:
    s = await settled(link)
    secret = s.centre_secret_file.read_bytes().strip()
    unknown = await probes.check_centre(s.replace(node_id="dam-9"), secret, None)
    assert unknown[0].level == "FAIL" and "[nodes.dam-9]" in unknown[0].advice

    late = await probes.check_centre(s, secret, None, clock=lambda: time.time() - 900)
    assert [c.level for c in late] == ["FAIL", "FAIL"]
    assert "stale_timestamp" in late[0].detail and "clock" in late[0].advice
    assert late[1].name == "clock" and "behind" in late[1].detail

    gone = await probes.check_centre(
        s.replace(centre_url=f"http://127.0.0.1:{free_port()}"), secret, None
    )
    assert gone[0].level == "FAIL" and "cannot be reached" in gone[0].detail


async def test_database_and_node_checks_without_a_node(tmp_path: Path) -> None:
    s = config.Settings(node_data_dir=tmp_path / "none", centre_url="", ups_source="none",
                        http_host="127.0.0.1", http_port=free_port())  # fmt: skip
    checks = by_name(await doctor.run(s))
    assert checks["data dir"].level == "FAIL" and "install -d" in checks["data dir"].advice
    assert checks["node"].level == "WARN" and "systemctl start edge" in checks["node"].advice
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "edge.db").write_bytes(b"this is not a database" * 200)
    checks = by_name(await doctor.run(s))
    assert checks["database"].level == "FAIL" and "edge restore" in checks["database"].advice


async def test_ups_through_a_real_upsd(upsd: Upsd) -> None:
    s = config.Settings(ups_source="nut", ups_port=upsd.port, ups_name=UPS, ups_timeout_s=2.0)
    ok = await probes.check_ups(s)
    assert ok.level == "OK" and ok.detail.startswith("OL")
    wrong = await probes.check_ups(s.replace(ups_name="other"))
    assert wrong.level == "FAIL" and UPS in wrong.detail and "ups.name" in wrong.advice
    down = await probes.check_ups(s.replace(ups_port=free_port()))
    assert down.level == "FAIL" and "nut-server" in down.advice


async def test_doctor_command_exit_codes(link: Link, tmp_path: Path) -> None:
    s = await settled(link)
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[node]\ndata_dir = "{s.node_data_dir}"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {s.http_port}\n'
        f'[centre]\nurl = "{s.centre_url}"\nsecret_file = "{s.centre_secret_file}"\n'
        '[ups]\nsource = "none"\n'
    )
    assert await asyncio.to_thread(cli.main, ["doctor", "--config", str(cfg)]) == 0
    (tmp_path / "edge.toml").write_text(cfg.read_text().replace('"none"', '"nut"') +
                                        f"port = {free_port()}\n")  # fmt: skip
    assert await asyncio.to_thread(cli.main, ["doctor", "--config", str(cfg)]) == 1
    cfg.write_text("[http]\nport = 70000\n")
    assert await asyncio.to_thread(cli.main, ["doctor", "--config", str(cfg)]) == 2


def test_check_config_prints_effective_settings_and_names_bad_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = Path(__file__).parents[2] / "deploy" / "edge.toml.example"
    # As serve would, check-config refuses the example's /etc/edge/centre.secret if missing.
    assert cli.main(["check-config", "--config", str(example)]) == 2
    assert "centre.secret_file is refused" in capsys.readouterr().err
    assert cli.main(["secret", "new", str(tmp_path / "centre.secret")]) == 0
    monkeypatch.setenv("EDGE_CENTRE_SECRET_FILE", str(tmp_path / "centre.secret"))
    assert cli.main(["check-config", str(example)]) == 0
    out = capsys.readouterr().out
    assert "node.data_dir" in out and '"/var/lib/edge"' in out and "# file" in out

    cfg = tmp_path / "edge.toml"
    cfg.write_text('[node]\nid = "hms-2"\ngovernorate = "HMS"\n')
    monkeypatch.setenv("EDGE_HTTP_PORT", "8181")
    assert cli.main(["check-config", str(cfg)]) == 0
    rows = {line.split("=")[0].strip(): line for line in capsys.readouterr().out.splitlines()}
    assert rows["node.id"].endswith("# file") and '"hms-2"' in rows["node.id"]
    assert "8181" in rows["http.port"] and rows["http.port"].endswith("# env EDGE_HTTP_PORT")
    assert rows["centre.batch_size"].endswith("# default")
    monkeypatch.delenv("EDGE_HTTP_PORT")

    for text, key in [('[http]\nport = "eighty"\n', "http.port"),
                      ('[centre]\nbatch = 5\n', "centre.batch"),
                      ('[power]\non_low = "panic"\n', "power.on_low"),
                      ("[node\n", "line 1")]:  # fmt: skip
        cfg.write_text(text)
        assert cli.main(["check-config", str(cfg)]) == 2
        assert key in capsys.readouterr().err
