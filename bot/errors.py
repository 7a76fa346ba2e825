"""Errors the core knows about.

Every error here carries a sentence for the user: what went wrong and what to do next. Anything
that is not a ``BotError`` is a bug: it is logged with its traceback and the user gets a fixed
apology, never the exception text.

    BotError
     +-- UsageError          the command was malformed; the text includes usage and an example
     +-- AddressError        an address could not be accepted
     +-- NotAllowedError     the chat user is not on the allow-list
     +-- RateLimitError      the user's per-minute or per-day send budget is spent
     +-- NotConnectedError   the user has no Google account linked
    ConfigError             the configuration file is wrong; names the key (not a chat error)
    StoreError              the database cannot be used (e.g. newer than the code)
    InstallError            a library the configuration needs cannot be imported
    InUseError              another process holds the database
    NotEmptyError           the database to copy into already holds data (migrate)
"""

from __future__ import annotations


class BotError(Exception):
    """A failure the user can act on; ``str(error)`` is the sentence shown in chat."""


class UsageError(BotError):
    """The command was malformed."""


class AddressError(BotError):
    """An email address could not be accepted."""


class NotAllowedError(BotError):
    """The chat user may not use this bot."""


class RateLimitError(BotError):
    """The user has sent too many mails in a short time."""


class NotConnectedError(BotError):
    """The user has not linked a Google account yet."""


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


class StoreError(Exception):
    """The database cannot be opened or migrated."""


class InstallError(Exception):
    """A library the configuration needs is missing or broken; the message names it."""

    @classmethod
    def missing(cls, what: str, exc: ImportError) -> InstallError:
        """Say that ``what`` cannot be used because of ``exc``, naming the missing module."""
        # Libraries often re-raise with a message of their own: the module is in the chain.
        seen: BaseException | None = exc
        name = None
        while seen is not None:
            if isinstance(seen, ImportError) and seen.name:
                name = seen.name
            seen = seen.__cause__ or seen.__context__
        why = f"the Python module {name!r} is missing" if name else " ".join(str(exc).split())
        return cls(
            f"{what} cannot be used: {why}. The installation is incomplete: install mailbridge "
            "again with `pip install .`"
        )


class InUseError(Exception):
    """Another mailbridge process holds the database; the message names it and the process."""


class NotEmptyError(Exception):
    """A copy would go into a database that is not empty; the message says what it holds."""
