"""Persistent state: SQLAlchemy models, the repositories (the only SQL) and session handling."""
