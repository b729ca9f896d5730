"""Fixtures every test module can use: a fresh throwaway database per test (``db_url``, migrated;
``blank_db_url``, no tables), dropped afterwards. They live in ``tests/dbutil.py``."""

from tests.dbutil import blank_db_url, db_url

__all__ = ["blank_db_url", "db_url"]
