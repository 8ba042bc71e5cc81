"""Fixtures for integration tests: a running node, a node linked to a real centre, and a
headless Chromium with a page for the browser tests."""

import pytest
from browser import chromium, page
from centrefixtures import STORES, centre_store, link
from nodefixtures import running

__all__ = ["centre_store", "chromium", "link", "page", "running"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module marked `both_stores` runs each test on the SQLite and the PostgreSQL centre."""
    if metafunc.definition.get_closest_marker("both_stores") is not None:
        metafunc.parametrize("centre_store", STORES, indirect=True)


@pytest.fixture(autouse=True)
def _on_centre_store(centre_store: str) -> str:
    # Every integration test has a centre store (SQLite unless parametrized): the centre
    # fixtures read it through centrefixtures.on_store.
    return centre_store
