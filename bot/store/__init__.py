"""Everything stored: the database, its schema and every SQL statement the bot runs."""
