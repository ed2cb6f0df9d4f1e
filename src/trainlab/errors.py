"""User-facing errors: the CLI prints their message on one line, without a traceback."""


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
