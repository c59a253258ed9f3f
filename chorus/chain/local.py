"""A whole chain in one SQLite file, so a network runs on one machine with no service.

It keeps what a subnet's metagraph keeps: neurons (uid, hotkey, coldkey, axon, stake,
validator permit), the last weights each validator set, and a block clock that advances
with wall time (``block_seconds`` per block, 12 s like Bittensor by default). Every call
opens its own connection in WAL mode, so miners, validators and the CLI can share the
file from separate processes.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import closing, contextmanager
from pathlib import Path

from chorus.chain import ChainError, Neuron

MAX_NEURONS = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS neurons (
    uid INTEGER PRIMARY KEY,
    hotkey TEXT NOT NULL UNIQUE,
    coldkey TEXT NOT NULL,
    host TEXT,
    port INTEGER,
    stake REAL NOT NULL DEFAULT 0,
    validator_permit INTEGER NOT NULL DEFAULT 0,
    registered_block INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS weights (
    validator_uid INTEGER PRIMARY KEY,
    block INTEGER NOT NULL,
    weights TEXT NOT NULL
);
"""


class LocalChain:
    """The local chain backend; see chorus.chain.Chain for the interface."""

    def __init__(
        self, path: str | Path, block_seconds: float | None = None, busy_timeout_s: float = 10.0
    ):
        self.path = Path(path).expanduser()
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._tx() as db:
            db.executescript(SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('genesis', ?)", (repr(time.time()),))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('block_seconds', '12')")
            if block_seconds is not None:
                if not block_seconds > 0:
                    raise ChainError("block_seconds must be positive")
                db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'block_seconds'", (repr(block_seconds),)
                )

    @contextmanager
    def _tx(self):
        try:
            with closing(sqlite3.connect(self.path, timeout=self.busy_timeout_s)) as db:
                db.execute("PRAGMA journal_mode=WAL")
                with db:
                    yield db
        except sqlite3.OperationalError as e:
            raise ChainError(f"local chain {self.path} is unavailable: {e}") from e

    # -- reading -----------------------------------------------------------------

    def block(self) -> int:
        with self._tx() as db:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        return int((time.time() - float(meta["genesis"])) / float(meta["block_seconds"]))

    def neurons(self) -> list[Neuron]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT uid, hotkey, coldkey, host, port, stake, validator_permit"
                " FROM neurons ORDER BY uid"
            ).fetchall()
        return [_neuron(r) for r in rows]

    def neuron(self, hotkey: str) -> Neuron | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT uid, hotkey, coldkey, host, port, stake, validator_permit"
                " FROM neurons WHERE hotkey = ?",
                (hotkey,),
            ).fetchone()
        return _neuron(row) if row else None

    def weights(self) -> dict[int, dict[int, float]]:
        with self._tx() as db:
            rows = db.execute("SELECT validator_uid, weights FROM weights").fetchall()
        return {uid: {int(k): v for k, v in json.loads(w).items()} for uid, w in rows}

    # -- writing -----------------------------------------------------------------

    def register(
        self, hotkey: str, coldkey: str, stake: float = 0.0, validator_permit: bool = False
    ) -> Neuron:
        """Register a hotkey in the lowest free uid; registering again updates it."""
        if not math.isfinite(stake) or stake < 0:
            raise ChainError("stake must be a non-negative number")
        block = self.block()
        with self._tx() as db:
            row = db.execute("SELECT uid FROM neurons WHERE hotkey = ?", (hotkey,)).fetchone()
            if row:
                db.execute(
                    "UPDATE neurons SET coldkey = ?, stake = ?, validator_permit = ? WHERE uid = ?",
                    (coldkey, stake, int(validator_permit), row[0]),
                )
            else:
                used = {u for (u,) in db.execute("SELECT uid FROM neurons")}
                free = next((u for u in range(MAX_NEURONS) if u not in used), None)
                if free is None:
                    raise ChainError(f"the subnet is full ({MAX_NEURONS} neurons)")
                db.execute(
                    "INSERT INTO neurons (uid, hotkey, coldkey, stake, validator_permit,"
                    " registered_block) VALUES (?, ?, ?, ?, ?, ?)",
                    (free, hotkey, coldkey, stake, int(validator_permit), block),
                )
        neuron = self.neuron(hotkey)
        assert neuron is not None
        return neuron

    def serve_axon(self, hotkey: str, host: str, port: int) -> None:
        with self._tx() as db:
            n = db.execute(
                "UPDATE neurons SET host = ?, port = ? WHERE hotkey = ?", (host, port, hotkey)
            ).rowcount
        if n == 0:
            raise ChainError(f"hotkey {hotkey} is not registered on the local chain")

    def set_weights(self, hotkey: str, weights: dict[int, float]) -> None:
        """Store a validator's weights, normalised to sum to 1 (non-finite and negative
        entries are dropped)."""
        me = self.neuron(hotkey)
        if me is None:
            raise ChainError(f"hotkey {hotkey} is not registered on the local chain")
        if not me.validator_permit:
            raise ChainError(f"hotkey {hotkey} has no validator permit")
        clean = {int(u): float(w) for u, w in weights.items() if math.isfinite(w) and w > 0}
        total = sum(clean.values())
        normalised = {u: w / total for u, w in clean.items()} if total > 0 else {}
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO weights VALUES (?, ?, ?)",
                (me.uid, self.block(), json.dumps(normalised)),
            )


def _neuron(row: tuple) -> Neuron:
    uid, hotkey, coldkey, host, port, stake, permit = row
    return Neuron(uid, hotkey, coldkey, host, port, float(stake), bool(permit))
