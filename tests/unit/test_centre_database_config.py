"""`[centre] database` and `database_pool_size`: SQLite by default, a postgresql:// URL
without a password, a pool of 1-100; every other value is refused naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.centre.config import CentreSettings, parse
from sync.centre.connect import open_store
from sync.errors import CentreConfigError


def test_the_default_is_the_embedded_sqlite_store(tmp_path: Path) -> None:
    settings = parse({"centre": {"data_dir": "data"}}, tmp_path)
    assert (settings.database, settings.database_pool_size) == ("", 10)
    store = open_store(settings)
    assert store.kind == "sqlite"


def test_a_postgresql_url_picks_the_postgresql_store(tmp_path: Path) -> None:
    url = "postgresql://centre@db.internal:5432/centre"
    settings = parse({"centre": {"database": url, "database_pool_size": 4}}, tmp_path)
    assert (settings.database, settings.database_pool_size) == (url, 4)
    assert open_store(settings).kind == "postgresql"  # nothing connects before open()


@pytest.mark.parametrize(
    ("centre", "needle"),
    [
        ({"database": "mysql://centre@db/centre"}, "centre.database"),
        ({"database": 5}, "centre.database"),
        ({"database": "postgresql://centre:hunter2@db/centre"}, "password"),
        ({"database_pool_size": 0}, "centre.database_pool_size"),
        ({"database_pool_size": 101}, "centre.database_pool_size"),
        ({"database_pool_size": "4"}, "centre.database_pool_size"),
    ],
)
def test_bad_database_settings_are_refused(
    tmp_path: Path, centre: dict[str, object], needle: str
) -> None:
    with pytest.raises(CentreConfigError) as caught:
        parse({"centre": centre}, tmp_path)
    assert needle in caught.value.detail
    assert "hunter2" not in caught.value.detail  # never echoed back


def test_settings_built_in_code_default_to_sqlite() -> None:
    assert CentreSettings().database == ""
