"""A ZenML store query on the warm start's thread survives ZenML switching the log level
while it runs (ZenML 0.90 does, as it prepares a run; flavors/prestart.py)."""

from __future__ import annotations

import logging

from zenml_compute_engines.flavors import prestart


def test_a_store_session_entered_without_debug_logging_exits_with_it(tmp_path):
    from sqlalchemy import create_engine
    from sqlalchemy.pool import QueuePool
    from zenml.zen_stores import sql_zen_store

    prestart._let_store_sessions_straddle_log_level_changes()
    store_logger = logging.getLogger(sql_zen_store.__name__)
    level = store_logger.level
    try:
        store_logger.setLevel(logging.INFO)
        with sql_zen_store.Session(create_engine(f"sqlite:///{tmp_path}/store.db", poolclass=QueuePool)):
            store_logger.setLevel(logging.DEBUG)  # switched by another thread mid-query
    finally:
        store_logger.setLevel(level)
