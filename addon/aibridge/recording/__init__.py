"""Recording: every interception in a database (SQLite by default, PostgreSQL), off the data path."""
