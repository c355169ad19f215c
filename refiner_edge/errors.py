"""One exception hierarchy for every domain error; the CLI turns them into one-line messages and exit codes."""


class RefinerEdgeError(Exception):
    """Base class: anything the user can fix (bad input, missing dependency, failed check)."""

    exit_code = 1


class InputError(RefinerEdgeError):
    """A file, image, option or checkpoint the user gave is unusable."""

    exit_code = 2


class CheckpointError(InputError):
    """A checkpoint cannot be read safely or does not match the model."""


class MissingDependencyError(RefinerEdgeError):
    """An optional package (tensorrt, onnx_graphsurgeon, ...) is needed for this stage but not installed."""

    exit_code = 3


class VerificationError(RefinerEdgeError):
    """An artifact was produced but failed its accuracy or validity check; nothing was written."""

    exit_code = 4


class NoSpaceError(InputError):
    """An output could not be written: the disk (or quota, or file size limit) is full; nothing was published."""
