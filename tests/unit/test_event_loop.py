"""http.loop: the setting's values, the error that names the extra, the loop `edge serve`
runs on, and the loop the tests themselves run on (EDGE_TEST_LOOP, tests/conftest.py)."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest
import uvloop
from helpers import TEST_LOOP

from edge import config, serving
from edge.errors import ConfigError


def test_the_default_is_asyncio_own_loop() -> None:
    settings = config.Settings()
    config.validate(settings)
    assert settings.http_loop == "asyncio"
    assert serving.loop_factory(settings) is None


def test_uvloop_is_served_on_when_asked_for() -> None:
    settings = config.Settings(http_loop="uvloop")
    config.validate(settings)
    factory = serving.loop_factory(settings)
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_an_unknown_loop_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"http\.loop must be one of asyncio, uvloop, not 'trio'"):
        config.validate(config.Settings(http_loop="trio"))


def test_uvloop_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else found(name, *a)
    )
    with pytest.raises(ConfigError, match=r"governorate-edge\[fast\]"):
        config.validate(config.Settings(http_loop="uvloop"))


async def test_the_tests_run_on_the_loop_edge_test_loop_names() -> None:
    running = asyncio.get_running_loop()
    assert isinstance(running, uvloop.Loop) == (TEST_LOOP == "uvloop")
