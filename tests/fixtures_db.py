"""Database fixtures: every database test runs on SQLite and on PostgreSQL."""

from __future__ import annotations
