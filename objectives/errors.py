"""Errors a user can act on: each message is one line that says what is wrong and how to fix it."""


class DkdError(Exception):
    """Base of every error dkd-tune reports as a one-line message (the CLI exits 2 on it)."""


class ConfigError(DkdError):
    """A study config (file or override) is malformed, unknown or out of range."""


class DataError(DkdError):
    """A dataset's files are missing or unreadable."""


class FederationError(DkdError):
    """A federation cannot be built as asked (e.g. a participant would be too small)."""


class ParticipantError(DkdError):
    """A participant given as ``[[participants]]`` (model string, checkpoint) cannot be used."""


class TrialError(DkdError):
    """A one-round KD trial was asked with bad arguments."""


class NonFiniteLoss(DkdError):
    """The KD loss became NaN or infinite during a round; the trial's result is meaningless."""
