"""Opening the centre's store that `[centre] database` names (sync.centre.stores)."""

from __future__ import annotations

from sync.centre.config import CentreSettings
from sync.centre.stores import CentreDB


def open_store(settings: CentreSettings) -> CentreDB:
    """The store of `settings` (not yet open: `await store.open()`). Empty database: SQLite
    in data_dir; a postgresql:// URL: PostgreSQL (asyncpg is imported only then)."""
    if settings.database:
        from sync.centre.pgstore import PgCentre

        return PgCentre(
            settings.database, pool_size=settings.database_pool_size, window_s=settings.max_skew_s
        )
    from sync.centre.sqlitestore import SqliteCentre

    return SqliteCentre(settings.db_path, window_s=settings.max_skew_s)
