"""The exceptions that ddpm_lite raises for problems a user can fix.

Plumbing module (hand-written, not exported from a notebook). Every one is a DDPMLiteError
(ConfigError is also a ValueError), and every message says what is wrong and what to do about
it; the command line prints it as one line starting with `error:`, without a traceback.
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


class FolderLocked(DDPMLiteError):
    """Another process is writing a run folder or a plan's folders (ddpm_lite.runlock).

    `folder` is the folder; `holder` the record of the process holding it (pid, host, started,
    command), or None when it could not be read."""

    def __init__(self, message: str, folder=None, holder: dict | None = None):
        super().__init__(message)
        self.folder, self.holder = folder, holder
