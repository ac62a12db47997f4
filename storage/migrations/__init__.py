"""Alembic environment and versions of the index schema (run by :mod:`storage.schema`)."""
