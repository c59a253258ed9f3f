"""Who is at fault, once for the whole package.

Code deep inside chorus raises one of three kinds of error and says nothing about HTTP or
exit codes; the two edges (``http_status`` for the miner and gateway, ``exit_code`` for
the CLI) map the kinds, here and nowhere else::

    raise CallerError("reference audio is silent")      # the miner answers 422
    raise CallerError("too large", status=413)          # a caller fault with its own status
    except ChorusError as e: return exit_code(e)        # the CLI exits 2 (1 for a bug)

Anything that is not a ``ChorusError`` is a bug: HTTP 500, or a traceback and exit 1.
"""

from __future__ import annotations


class ChorusError(Exception):
    """Base of every error chorus raises on purpose. ``status`` is the HTTP status an edge
    answers with; ``reason`` the one-line message a person can act on."""

    status = 500

    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        if status is not None:
            self.status = status


class CallerError(ChorusError, ValueError):
    """The caller's fault: bad input, a refused request, a mistake on the command line.
    HTTP 4xx (422 unless a more precise status is given), CLI exit 2."""

    status = 422


class ChainFault(ChorusError, RuntimeError):
    """The chain cannot be read or written now (unreachable, refused an extrinsic).
    HTTP 503; the CLI exits 2 with the chain's reason; a validator backs off and retries."""

    status = 503


class InternalError(ChorusError):
    """Our own bug or a broken installation: HTTP 500, CLI exit 1."""

    status = 500


EXIT_USAGE = 2  # a caller or chain fault: the message says what to change
EXIT_BUG = 1


def http_status(error: BaseException) -> int:
    """The HTTP status for any exception: its own for a ``ChorusError``, else 500."""
    return error.status if isinstance(error, ChorusError) else 500


def exit_code(error: BaseException) -> int:
    """The CLI exit code: 2 for what the user can fix (their input, the chain), else 1."""
    if isinstance(error, CallerError | ChainFault | FileNotFoundError):
        return EXIT_USAGE
    return EXIT_BUG
