"""The chorus command as tests run it: ``python -m chorus.cli`` in a subprocess started in
the repository root, with its home and wallets in a test folder (``root/home``,
``root/wallets``: where ``make_net`` creates wallets) and any ``env`` added (such as
``CHORUS_SERVICES`` for a plug-in service)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

CHORUS = [sys.executable, "-m", "chorus.cli"]
REPO = Path(__file__).resolve().parent.parent  # so that ``tests.*`` modules import


def cli_env(root: Path | None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, with chorus's home and wallets under ``root``."""
    out = dict(os.environ)
    if root is not None:
        out["CHORUS_HOME"] = str(root / "home")
        out["CHORUS_WALLET_PATH"] = str(root / "wallets")
    return out | dict(env or {})


def run_chorus(
    *args: str,
    root: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run ``chorus ARGS`` to completion; its output is captured as text."""
    return subprocess.run(
        [*CHORUS, *args],
        cwd=REPO,
        env=cli_env(root, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def chorus_process(
    *args: str,
    root: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | None = subprocess.DEVNULL,
    stderr: int | None = subprocess.DEVNULL,
) -> Iterator[subprocess.Popen]:
    """``chorus ARGS`` running in the background (pass ``subprocess.PIPE`` to read its
    output as text); stopped, if it is still running, when the block ends."""
    proc = subprocess.Popen(
        [*CHORUS, *args], cwd=REPO, env=cli_env(root, env), stdout=stdout, stderr=stderr, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
