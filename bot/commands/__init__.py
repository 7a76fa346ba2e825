"""The commands: one table (table.py), the narrow context handlers get, and the handlers."""
