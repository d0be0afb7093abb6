"""The converters package behind starchat's errors: its own error types become exit codes here.

``converters`` imports nothing from starchat_cli (an import contract checks it); every
call into it from the CLI or ``pull`` goes through :func:`converter_errors`.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from starchat_cli.core.errors import (
    ConversionError,
    ExitCode,
    ModelLoadError,
    ModelNotFoundError,
    StarchatError,
)


@contextlib.contextmanager
def converter_errors() -> Iterator[None]:
    """Re-raise a :mod:`converters.errors` error as the :class:`StarchatError` with its exit code."""
    from converters import errors

    try:
        yield
    except errors.InputFileError as exc:
        raise (ModelNotFoundError if exc.missing else ModelLoadError)(exc.message) from None
    except errors.OutputPathError as exc:
        from starchat_cli.core.fsutil import output_error

        raise output_error(str(exc.path), exc.error) from None
    except errors.OutOfSpaceError as exc:
        raise StarchatError(exc.message, exit_code=ExitCode.ERROR) from None
    except errors.ConversionError as exc:
        raise ConversionError(exc.message) from None
    except errors.ConverterError as exc:  # pragma: no cover - every subclass is mapped above
        raise StarchatError(exc.message) from None
