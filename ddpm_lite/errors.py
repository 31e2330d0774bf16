"""The one exception type that ddpm_lite raises for problems a user can fix.

Plumbing module (hand-written, not exported from a notebook). Every message says what is
wrong and what to do about it; the command line prints it without a traceback.
"""


class DDPMLiteError(Exception):
    """A problem with the user's input, files or environment, with a message that says how to fix it."""


class ConfigError(DDPMLiteError, ValueError):
    """A config field has a bad name, type or value. The message names the field."""


class CheckpointError(DDPMLiteError):
    """A checkpoint file is missing, damaged, unsafe or from another model. The message names the file."""


class DataError(DDPMLiteError):
    """A data set, sample file or weight file is missing, damaged or malformed."""


class TrainingDiverged(DDPMLiteError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
