"""A real PostgreSQL server for the tests (Debian's, started in a temporary directory)."""
