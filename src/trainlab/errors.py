"""User-facing errors: the CLI prints their message on one line, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TrainlabError(Exception):
    """Base of every error caused by input the user can fix; the message says how."""


class DataError(TrainlabError):
    """A dataset cannot be found, downloaded, verified or read."""


class ModelError(TrainlabError):
    """An unknown model name or option, or a checkpoint that cannot be rebuilt."""


class RunError(TrainlabError):
    """A run folder that cannot be written, read or resumed."""


class StudyError(TrainlabError):
    """A study store that cannot be reached, or a study that is missing or inconsistent."""


class WriteError(RunError, OSError):
    """A file that cannot be written, named as the user knows it (not its temporary name). Also
    an OSError, so code that tolerates a failed write (a read-only cache) still does."""


def did_you_mean(typed: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'cnn'?)`` for a near miss among ``choices`` (case-insensitive), else
    ``""``: appended to an "unknown ..." message, so a typo's fix is on the same line."""
    if not isinstance(typed, str) or not typed:
        return ""
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(typed.lower(), list(by_lower), n=1, cutoff=0.7)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
