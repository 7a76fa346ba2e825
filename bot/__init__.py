"""mailbridge: send email from your own Gmail by typing a command in a chat."""

__version__ = "0.1.0"
