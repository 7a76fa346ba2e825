"""Chat networks: each module turns its platform's events into core messages and back."""
