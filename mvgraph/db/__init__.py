"""Talking to PostgreSQL: connecting, the embedded server, migrations and the named queries."""
