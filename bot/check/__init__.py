"""`mailbridge check --online`: each configured service asked whether the setup works."""
