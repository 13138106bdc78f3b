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


class TrainingError(SFGError, RuntimeError):
    """Training cannot go on (a non-finite loss, a missing checkpoint)."""
