"""Where chorus keeps its files, whether it can listen on a port, how settings are checked,
and defaults shared by the CLI and the services."""

from __future__ import annotations

import os
from pathlib import Path


def chorus_home() -> Path:
    """``$CHORUS_HOME`` or ``~/.chorus``: the local chain, validator state and samples."""
    path = Path(os.environ.get("CHORUS_HOME", Path.home() / ".chorus")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_wallet_path() -> str:
    """Where bittensor keeps wallets unless told otherwise (``$CHORUS_WALLET_PATH``)."""
    return os.environ.get("CHORUS_WALLET_PATH", "~/.bittensor/wallets")


def check_port(host: str, port: int) -> None:
    """Refuse, before anything is announced or loaded, a port another server listens on
    (uvicorn would print a traceback-like error and exit 3 after our "serving" line):
    CallerError with the reason."""
    import errno
    import socket

    from chorus.errors import CallerError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except (OSError, OverflowError) as e:
            busy = isinstance(e, OSError) and e.errno == errno.EADDRINUSE
            why = (e.strerror if isinstance(e, OSError) else None) or str(e)
            hint = "; is another server using it? choose another --port" if busy else ""
            raise CallerError(f"cannot listen on {host}:{port}: {why}{hint}") from None


def check_counts(*counts: tuple[str, float]) -> None:
    """Refuse, with CallerError naming the setting, a count below 1 (``(flag, value)``)."""
    from chorus.errors import CallerError

    for flag, value in counts:
        if not value >= 1:
            raise CallerError(f"{flag} must be at least 1, not {value}")


def check_seconds(*seconds: tuple[str, float]) -> None:
    """Refuse, with CallerError naming the setting, a time that is not a finite number of
    seconds above 0 (NaN included)."""
    from chorus.errors import CallerError

    for flag, value in seconds:
        if not 0 < value < float("inf"):
            raise CallerError(f"{flag} must be a number of seconds above 0, not {value}")


def check_output_file(path: str | Path, flag: str) -> None:
    """Refuse, before the work whose result it is to hold, a file that cannot be written:
    a folder, or a place under a file or in a folder this user may not write to (the
    missing folders on its way are made when it is written)."""
    from chorus.errors import CallerError

    path = Path(path).expanduser()
    if path.is_dir():
        raise CallerError(f"{flag} {path} is a folder, not a file")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise CallerError(f"{flag} {path}: permission denied")
        return
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise CallerError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CallerError(f"{flag} {path}: permission denied in {existing}")


def quiet_dependency_warnings() -> None:
    """resemblyzer's webrtcvad and pyworld import pkg_resources, which warns on every start
    (in `chorus` and in the processes `chorus bench` measures in)."""
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
