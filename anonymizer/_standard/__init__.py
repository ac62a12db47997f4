"""PS3.15 Table E.1-1 as package data (see README.md here)."""
