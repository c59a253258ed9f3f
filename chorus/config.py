"""Where chorus keeps its files, and defaults shared by the CLI and the services."""

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
