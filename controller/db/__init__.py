"""SQLite persistence: one writer connection, a few readers, numbered migrations (WAL, foreign keys on)."""

from controller.db.database import Database

__all__ = ["Database"]
