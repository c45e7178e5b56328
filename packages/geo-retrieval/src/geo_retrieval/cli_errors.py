"""Command-line error handling shared by the toolkit's commands (``python -m geo_retrieval.convert``,
``geo-bench``): a fault the user can fix becomes one message and exit status 2, Ctrl-C one line and
130; anything else (a bug) keeps its traceback.

Convention: :data:`USER_ERRORS` are the faults a user can fix (bad argument, missing, unreadable,
unsafe or damaged file, missing optional dependency); :func:`user_error_message` states one, naming
the file; :func:`guarded` runs a command's work and reports through ``logging`` (the full message,
``-v``/DEBUG adds the traceback) or through ``report`` (one line: ``error: <first line>``).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable

__all__ = ["EXIT_INTERRUPTED", "EXIT_USER_ERROR", "USER_ERRORS", "guarded", "user_error_message"]

#: Exit status for a fault the user can fix; argparse uses the same status for bad options.
EXIT_USER_ERROR = 2
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

#: Errors a user can fix. ``OSError`` covers unreadable / unwritable files and full disks (the
#: message names the file); ``pickle.UnpicklingError`` unsafe or garbage pickles (never unpickled
#: further); ``ImportError`` a missing optional dependency (the message says what to install).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, pickle.UnpicklingError, ImportError)

_log = logging.getLogger(__name__)


def user_error_message(exc: BaseException) -> str:
    """The message of a user-fixable fault: the exception's text (its type when empty), prefixed
    with the file name of an ``OSError`` that does not name it, and marked for an unsafe pickle.

    Example:
        >>> user_error_message(FileNotFoundError(2, "No such file or directory", "x.pth"))
        "[Errno 2] No such file or directory: 'x.pth'"
        >>> user_error_message(PermissionError("cannot write"))
        'cannot write'
    """
    # the first line says what is wrong and where; further lines (a dataset's expected layout, the
    # list of missing files) are details
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in message:
        message = f"{exc.filename}: {message}"
    if isinstance(exc, pickle.UnpicklingError):
        message = f"unsafe checkpoint refused (not unpickled): {message}"
    return message


def guarded(
    fn: Callable[[], int],
    *,
    interrupted: str = "nothing was written; run the same command again",
    errors: tuple[type[BaseException], ...] = USER_ERRORS,
    report: Callable[[str], None] | None = None,
    logger: logging.Logger | None = None,
) -> int:
    """Run a command's work; faults a user can fix become one message and exit status 2.

    Args:
        fn: the work, returning the exit status.
        interrupted: what a rerun will do, reported after Ctrl-C (``interrupted: ...``).
        errors: the exception types reported as user faults (default :data:`USER_ERRORS`).
        report: called with one line (``error: <first line of the message>`` or ``interrupted:
            ...``) instead of logging, for commands that print to stderr.
        logger: where faults are logged when ``report`` is None (default this module's); DEBUG
            enabled adds the traceback.

    Returns:
        ``fn()``'s status, :data:`EXIT_USER_ERROR` for a fault in ``errors``, or
        :data:`EXIT_INTERRUPTED` after Ctrl-C. Other exceptions (bugs) propagate with their
        traceback.
    """
    log = logger or _log
    try:
        return fn()
    except KeyboardInterrupt:
        if report is not None:
            report(f"interrupted: {interrupted}")
        else:
            log.error("interrupted: %s", interrupted)
        return EXIT_INTERRUPTED
    except errors as exc:
        message = user_error_message(exc)
        if report is not None:
            report(f"error: {message.splitlines()[0]}")
        else:
            log.error("%s", message, exc_info=log.isEnabledFor(logging.DEBUG))
        return EXIT_USER_ERROR
