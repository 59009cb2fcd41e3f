"""Recording: every interception in a database (SQLite by default, or PostgreSQL),
kept off the data path."""
