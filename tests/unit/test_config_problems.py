"""Every problem in the node's settings at once, each naming `[section] key`, the EDGE_*
variable and the fix: strict types, ranges, unknown keys and variables (did you mean)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge import config
from edge.errors import ConfigError
from edge.ops import tokencli


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[str, ...]:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        config.load(path, env=env or {})
    return caught.value.problems


def test_every_problem_is_reported_at_once_not_only_the_first(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        '[node]\nid = "Bad Id"\n[http]\nport = "8080"\nprot = 1\n[centre]\nbatch_size = 0\n'
        "[audit]\nenabled = 1\n[limts]\nx = 1\n",
        {"EDGE_CENTRE_BATCHSIZE": "5", "EDGE_UPS_PORT": "abc"},
    )
    named = ["node.id", "http.port", "http.prot", "centre.batch_size", "audit.enabled",
             "[limts]", "EDGE_CENTRE_BATCHSIZE", "ups.port"]  # fmt: skip
    assert len(found) == len(named), found
    for name in named:
        assert sum(name in line for line in found) >= 1, (name, found)


def test_each_value_problem_names_the_toml_key_and_the_variable(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, "[limits.offline]\nmax_count = -1\n")
    assert line.startswith("limits.offline.max_count must be 0 (off) or positive, not -1")
    assert "[limits.offline] max_count in the file" in line
    assert "EDGE_LIMITS_OFFLINE_MAX_COUNT" in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[http]\nport = "8080"\n',
         'http.port must be an integer, not the string "8080": write port = 8080, without quotes'),
        ("[http]\nport = true\n", "http.port must be an integer, not true"),
        ("[http]\nport = 80.5\n", "http.port must be an integer, not 80.5"),
        ("[centre]\nbatch_size = 2.0\n",
         "centre.batch_size must be an integer, not 2.0: write batch_size = 2"),
        ('[centre]\ntimeout_s = "30"\n', 'centre.timeout_s must be a number, not the string "30"'),
        ("[centre]\ntimeout_s = true\n", "centre.timeout_s must be a number, not true"),
        ("[centre]\ntimeout_s = inf\n", "centre.timeout_s must be a finite number, not inf"),
        ('[audit]\nenabled = "true"\n',
         'audit.enabled must be true or false, not the string "true": write true or false,'
         " without quotes"),
        ("[audit]\nenabled = 0\n", "audit.enabled must be true or false, not 0"),
        ("[node]\nid = 7\n", "node.id must be a string, not 7"),
        ('[node]\ndata_dir = ""\n',
         'node.data_dir must be a path (a non-empty string), not the string ""'),
        ("[storage]\nmin_free_mb = 9223372036854775808\n",
         "storage.min_free_mb must be at most 2^63-1"),
    ],
)  # fmt: skip
def test_toml_types_are_strict(tmp_path: Path, text: str, expected: str) -> None:
    (line,) = problems(tmp_path, text)
    assert line.startswith(expected), line


def test_an_integer_is_a_number_for_a_float_key(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text("[centre]\ntimeout_s = 30\n")
    settings = config.load(path, env={})
    assert settings.centre_timeout_s == 30.0 and type(settings.centre_timeout_s) is float


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"EDGE_HTTP_PORT": "80.0"},
         "http.port must be an integer, not '80.0' from EDGE_HTTP_PORT"),
        ({"EDGE_CENTRE_TIMEOUT_S": "soon"},
         "centre.timeout_s must be a number, not 'soon' from EDGE_CENTRE_TIMEOUT_S"),
        ({"EDGE_AUDIT_ENABLED": "maybe"},
         "audit.enabled must be true or false (or 1/0, yes/no), not 'maybe' from"
         " EDGE_AUDIT_ENABLED"),
        ({"EDGE_NODE_DATA_DIR": ""}, "node.data_dir must be a path (a non-empty string)"),
    ],
)  # fmt: skip
def test_variables_are_text_parsed_as_the_key_says(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    (line,) = problems(tmp_path, "", env)
    assert line.startswith(expected), line


def test_variables_parse_what_toml_would_refuse_as_a_string() -> None:
    s = config.load(None, env={"EDGE_HTTP_PORT": " 8181 ", "EDGE_AUDIT_ENABLED": "no",
                               "EDGE_CENTRE_TIMEOUT_S": "2.5"})  # fmt: skip
    assert (s.http_port, s.audit_enabled, s.centre_timeout_s) == (8181, False, 2.5)


def test_no_message_says_a_int() -> None:
    """The grammar of every type's message: 'an integer', 'a number', never 'a int'."""
    env = {f"EDGE_{f.name.upper()}": "\x00" for f in config.fields(config.Settings)}
    with pytest.raises(ConfigError) as caught:
        config.load(None, env=env)
    text = str(caught.value)
    assert "must be an integer" in text and "must be a number" in text
    assert "must be true or false" in text
    for wrong in ("a int", "a float", "a bool", "a Path", "a str,"):
        assert wrong not in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[http]\nport = 70000\n", "http.port must be a TCP port, 0-65535, not 70000"),
        ("[centre]\nbatch_size = 5001\n", "centre.batch_size must be between 1 and 5000, not 5001"),
        ("[ups]\ntimeout_s = 0\n", "ups.timeout_s must be positive (seconds), not 0.0"),
        ("[power]\ndead_time_s = -1\n", "power.dead_time_s must not be negative, not -1.0"),
        ("[limits]\nhold_s = 11\n", "limits.hold_s must be between 0 (answer at once) and 10"),
        ('[ups]\nsource = "apc"\n', "ups.source must be one of nut, psutil, none, not 'apc'"),
        ("[centre]\nretry_base_s = 10.0\nretry_cap_s = 5.0\n",
         "centre.retry_cap_s must be at least centre.retry_base_s"),
    ],
)  # fmt: skip
def test_values_out_of_range_name_the_range(tmp_path: Path, text: str, expected: str) -> None:
    (line,) = problems(tmp_path, text)
    assert line.startswith(expected), line


def test_an_unknown_variable_names_the_closest_known_one(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, "", {"EDGE_CENTRE_BATCHSIZE": "5"})
    assert line == "unknown variable EDGE_CENTRE_BATCHSIZE: did you mean EDGE_CENTRE_BATCH_SIZE?"
    (line,) = problems(tmp_path, "", {"EDGE_FOO": "1"})
    assert line.startswith("unknown variable EDGE_FOO: unset it")
    (line,) = problems(tmp_path, "", {"EDGE_CENTRE_CLIENT_CRT": "/x"})
    assert line.endswith("did you mean EDGE_CENTRE_CLIENT_CERT?")


def test_variables_that_are_not_settings_are_allowed(tmp_path: Path) -> None:
    assert tokencli.ENV in config.NOT_SETTINGS
    env = dict.fromkeys(config.NOT_SETTINGS, "1") | {"PATH": "/bin", "EDGEWISE": "x"}
    assert config.load(None, env=env) == config.Settings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[http]\nprot = 80\n", "unknown key http.prot ([http] prot): did you mean [http] port?"),
        ("[limits]\noffline_max_count = 1\n",
         "unknown key limits.offline_max_count ([limits] offline_max_count): did you mean"
         " [limits.offline] max_count?"),
        ("[mirror]\nzzz = 1\n",
         "unknown key mirror.zzz ([mirror] zzz): [mirror] has stale_after_s"),
        ("[limts]\nx = 1\n", "unknown section [limts]: did you mean [limits]? the sections are"),
        ("port = 1\n", "port is outside any section: put it under one of [node], [http]"),
    ],
)  # fmt: skip
def test_an_unknown_key_or_section_names_the_closest_known_one(
    tmp_path: Path, text: str, expected: str
) -> None:
    (line,) = problems(tmp_path, text)
    assert line.startswith(expected), line


def test_a_key_given_under_both_its_names_is_one_problem(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, '[centre]\ncert_file = "/a"\nclient_cert = "/b"\n')
    assert line.startswith("centre.cert_file and its older name are both given: keep one")
    (line,) = problems(
        tmp_path, "", {"EDGE_CENTRE_CERT_FILE": "/a", "EDGE_CENTRE_CLIENT_CERT": "/b"}
    )
    assert line.startswith("centre.cert_file and its older name are both given: keep one")


ROOT = Path(__file__).resolve().parents[2]
READS = re.compile(r"""(?:environ(?:\.get)?\(|environ\[|getenv\(|\$\{?)["']?(EDGE_[A-Z0-9_]+)""")
# The code's own environments for the processes it starts (notify.exec's program).
GIVES = re.compile(r"""["'](EDGE_[A-Z0-9_]+)["']\s*:""")


def test_every_edge_variable_the_code_reads_is_a_setting_or_allowed() -> None:
    """A new EDGE_* knob read anywhere (code, tests, CI), or given to a program the node runs,
    must be a setting or on the allow-list, or an `edge` command started with it set (by a
    test, or by notify.exec's program) would refuse to start."""
    names = [f.name for f in config.fields(config.Settings)] + list(config.ALIASES)
    settings = {config.variable_of(n) for n in names}
    read: set[str] = set()
    for top in ("edge", "sync", "outbox", "tests", ".ci", "deploy"):
        for path in (ROOT / top).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".sh", "") and ".venv" not in path.parts:
                text = path.read_text(errors="replace")
                read |= set(READS.findall(text))
                if top != "tests":  # tests give bad variables on purpose
                    read |= set(GIVES.findall(text))
    assert {"EDGE_CRASH_AT", "EDGE_CI_BENCH", "EDGE_SEVERITY"} <= read  # code, CI, notifier
    assert read - settings - config.NOT_SETTINGS == set()
