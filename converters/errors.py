"""The converters' own errors: the package imports nothing from starchat_cli, so the CLI maps
these to its exit codes (``starchat_cli.services.conversion``)."""

from __future__ import annotations


class ConverterError(Exception):
    """Base class: ``message`` is one line that names the problem and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConversionError(ConverterError):
    """A checkpoint cannot be converted, or a GGUF cannot be quantized: bad or unsupported input."""


class OutOfSpaceError(ConverterError):
    """Not enough free disk space for the output, or the disk filled up while writing it."""


class InputFileError(ConverterError):
    """The input GGUF is missing (``missing``) or cannot be read as a GGUF."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


class OutputPathError(ConverterError):
    """The output path cannot be written (``error`` says why); the CLI words it for the user."""

    def __init__(self, path: object, error: OSError) -> None:
        super().__init__(f"cannot write {path}: {error.strerror or error}")
        self.path = path
        self.error = error
