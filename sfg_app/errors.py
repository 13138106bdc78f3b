"""The project's exception types.

Every error a user can cause by a config, a file or a command is one of these, and its
message names what was wrong (the file, section, key or subject), what was expected and
what was received. Programming errors stay ordinary Python exceptions.
"""


class SFGError(Exception):
    """Base class of the errors a user can cause and fix."""


class ConfigError(SFGError, ValueError):
    """A config file, a command-line override or a settings value is invalid."""


class DataError(SFGError, ValueError):
    """An input image, dataset folder, split file or label map is unusable."""


class OutputError(SFGError, OSError):
    """An output cannot be written where it would go: its name leaves its folder, a file
    is already there (and overwriting was not asked for), or the system refuses (no
    permission, no space, a file where a folder should be)."""


class TrainingError(SFGError, RuntimeError):
    """Training cannot go on (a non-finite loss, a missing checkpoint)."""


class TrainingStopped(Exception):
    """Training was asked to stop (SIGTERM, as clusters stop jobs) and stopped cleanly:
    the step finished and a checkpoint was saved. Not an SFGError: nothing was wrong; the
    command exits with 128 + SIGTERM (143) and the message says how to resume."""


class SFGWarning(UserWarning):
    """Something a user should know and may want to fix, that does not stop the run (a
    volume thinner than the window, a corrupt checkpoint skipped). The commands print it as
    ``prog: warning: message`` and write it to their log file."""
