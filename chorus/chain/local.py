"""A whole chain in one SQLite file, so a network runs on one machine with no service.

It keeps what a subnet's metagraph keeps: neurons (uid, hotkey, coldkey, axon, stake,
validator permit), the last weights each validator set, and a block clock that advances
with wall time (``block_seconds`` per block, 12 s like Bittensor by default). Every
``tempo`` blocks it runs a Yuma Consensus epoch (chorus.yuma) over the weights and keeps
the results (rank, trust, consensus, incentive, dividends, emission, validator trust)
and the bonds, as the real chain does. Nothing runs in the background: whoever touches
the chain first after an epoch's block runs the epochs that are due, before any change,
so each epoch sees the weights as they stood at its block. Every call opens its own
connection in WAL mode, so miners, validators and the CLI can share the file from
separate processes.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from chorus import yuma
from chorus.chain import ChainError, Epoch, Neuron, Standing, WeightCommit

log = logging.getLogger("chorus.chain.local")

MAX_NEURONS = 256
# A real subnet's tempo is 360 blocks of 12 s (72 minutes); `chorus localnet` shortens it.
DEFAULT_TEMPO = 360
# What a subnet emits per block (alpha), before the owner's cut.
EMISSION_PER_BLOCK = 1.0
# Epochs missed while nobody touched the chain are run in order, up to this many (bonds
# forget faster than that); older ones are skipped.
MAX_CATCH_UP = 100
# Epoch results kept; older ones are pruned.
KEEP_EPOCHS = 2000
# A catch-up commits after this many epochs (each takes ~0.2 s at 256 neurons).
EPOCHS_PER_TRANSACTION = 10

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
CREATE TABLE IF NOT EXISTS bonds (
    validator_uid INTEGER NOT NULL,
    miner_uid INTEGER NOT NULL,
    bond REAL NOT NULL,
    PRIMARY KEY (validator_uid, miner_uid)
);
CREATE TABLE IF NOT EXISTS epochs (
    block INTEGER PRIMARY KEY,
    owner_emission REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS standings (
    block INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    hotkey TEXT NOT NULL,
    stake REAL NOT NULL,
    validator_permit INTEGER NOT NULL,
    rank REAL NOT NULL,
    trust REAL NOT NULL,
    consensus REAL NOT NULL,
    incentive REAL NOT NULL,
    dividends REAL NOT NULL,
    emission REAL NOT NULL,
    validator_trust REAL NOT NULL,
    PRIMARY KEY (block, uid)
);
"""

STANDING_COLUMNS = ", ".join(f.name for f in fields(Standing))


class LocalChain:
    """The local chain backend; see chorus.chain.Chain for the interface."""

    def __init__(
        self,
        path: str | Path,
        block_seconds: float | None = None,
        busy_timeout_s: float = 10.0,
        tempo: int | None = None,
        yuma_version: int | None = None,
    ):
        """Open (creating if needed) the chain in ``path``. ``block_seconds``, ``tempo``
        (blocks per epoch) and ``yuma_version`` (2 or 3) are stored in the file when given,
        so every process sharing it uses the same clock and consensus."""
        self.path = Path(path).expanduser()
        self.busy_timeout_s = busy_timeout_s
        if block_seconds is not None and not (0 < block_seconds < math.inf):
            raise ChainError("block_seconds must be a positive number")
        if tempo is not None and not (_whole(tempo) and 1 <= tempo <= 65535):
            raise ChainError("tempo must be a whole number of blocks from 1 to 65535")
        if yuma_version is not None and not (_whole(yuma_version) and yuma_version in (2, 3)):
            raise ChainError("the Yuma version must be 2 or 3")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._tx() as db:
            db.executescript(SCHEMA)
            db.execute("BEGIN IMMEDIATE")
            now_s = time.time()
            db.execute("INSERT OR IGNORE INTO meta VALUES ('genesis', ?)", (repr(now_s),))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('block_seconds', '12')")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('tempo', ?)", (str(DEFAULT_TEMPO),))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('yuma', '3')")
            meta = _meta(db)
            if block_seconds is not None and float(meta["block_seconds"]) != block_seconds:
                # a new block length from now on: the current block stays where it is
                elapsed = (now_s - float(meta["genesis"])) / float(meta["block_seconds"])
                _set(db, genesis=repr(now_s - elapsed * block_seconds))
                _set(db, block_seconds=repr(float(block_seconds)))
            if yuma_version is not None:
                _set(db, yuma=str(yuma_version))
            new_tempo = tempo is not None and int(meta["tempo"]) != tempo
            if new_tempo:
                _set(db, tempo=str(tempo))
            if new_tempo or "last_epoch" not in meta:
                # epochs run at multiples of the tempo from here on, none for the past
                meta = _meta(db)
                now = _block_of(meta)
                _set(db, last_epoch=str(now - now % int(meta["tempo"])))

    @contextmanager
    def _tx(self):
        try:
            with closing(sqlite3.connect(self.path, timeout=self.busy_timeout_s)) as db:
                db.execute("PRAGMA journal_mode=WAL")
                with db:
                    yield db
        except sqlite3.IntegrityError:
            raise  # a constraint our own code broke: a bug, not the file's fault
        except sqlite3.DatabaseError as e:  # locked, unreadable, or not SQLite at all
            raise ChainError(f"local chain {self.path} is unavailable: {e}") from e

    # -- reading -----------------------------------------------------------------

    def block(self) -> int:
        with self._tx() as db:
            return _block_of(_meta(db))

    @property
    def tempo(self) -> int:
        with self._tx() as db:
            return int(_meta(db)["tempo"])

    def params(self) -> yuma.YumaParams:
        """The consensus hyperparameters of this chain (subtensor's defaults but the
        Yuma version, which the chain file records)."""
        with self._tx() as db:
            return yuma.YumaParams(yuma=int(_meta(db)["yuma"]))

    def last_epoch(self) -> Epoch | None:
        self.run_due_epochs()
        with self._tx() as db:
            row = db.execute("SELECT MAX(block) FROM epochs").fetchone()
            return _epoch(db, row[0]) if row[0] is not None else None

    def epochs(self, limit: int | None = None) -> list[Epoch]:
        """Past epochs, oldest first (the last ``limit`` if given)."""
        self.run_due_epochs()
        with self._tx() as db:
            blocks = [
                b
                for (b,) in db.execute(
                    "SELECT block FROM epochs ORDER BY block DESC LIMIT ?",
                    (-1 if limit is None else limit,),
                )
            ]
            return [_epoch(db, b) for b in reversed(blocks)]

    def weight_commits(self) -> list[WeightCommit]:
        """None: the local chain has no commit-reveal; weights are public when set."""
        return []

    def bonds(self) -> dict[int, dict[int, float]]:
        """Each validator's bonds per miner after the last epoch."""
        with self._tx() as db:
            rows = db.execute("SELECT validator_uid, miner_uid, bond FROM bonds").fetchall()
        out: dict[int, dict[int, float]] = {}
        for v, m, b in rows:
            out.setdefault(v, {})[m] = b
        return out

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

    @contextmanager
    def _write(self):
        """A transaction for a change, after the epochs due: a change stamped at block B
        comes after B's epoch, as an extrinsic in block B does on chain."""
        self.run_due_epochs()  # a long catch-up in chunks, others' calls in between
        with self._tx() as db:
            db.execute("BEGIN IMMEDIATE")
            _catch_up(db, MAX_CATCH_UP)  # any that came due since
            yield db

    def register(
        self, hotkey: str, coldkey: str, stake: float = 0.0, validator_permit: bool = False
    ) -> Neuron:
        """Register a hotkey in the lowest free uid; registering again updates it."""
        if not math.isfinite(stake) or stake < 0:
            raise ChainError("stake must be a non-negative number")
        with self._write() as db:
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
                    (free, hotkey, coldkey, stake, int(validator_permit), _block_of(_meta(db))),
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
        clean = {int(u): float(w) for u, w in weights.items() if math.isfinite(w) and w > 0}
        total = sum(clean.values())
        normalised = {u: w / total for u, w in clean.items()} if total > 0 else {}
        with self._write() as db:
            row = db.execute(
                "SELECT uid, validator_permit FROM neurons WHERE hotkey = ?", (hotkey,)
            ).fetchone()
            if row is None:
                raise ChainError(f"hotkey {hotkey} is not registered on the local chain")
            if not row[1]:
                raise ChainError(f"hotkey {hotkey} has no validator permit")
            db.execute(
                "INSERT OR REPLACE INTO weights VALUES (?, ?, ?)",
                (row[0], _block_of(_meta(db)), json.dumps(normalised)),
            )

    def deregister(self, hotkey: str) -> None:
        """Free a hotkey's uid (as pruning does on the real chain): its weights and bonds
        go; others' weights to the uid stop counting once someone registers into it."""
        with self._write() as db:
            row = db.execute("SELECT uid FROM neurons WHERE hotkey = ?", (hotkey,)).fetchone()
            if row is None:
                raise ChainError(f"hotkey {hotkey} is not registered on the local chain")
            db.execute("DELETE FROM neurons WHERE uid = ?", row)
            db.execute("DELETE FROM weights WHERE validator_uid = ?", row)
            db.execute("DELETE FROM bonds WHERE validator_uid = ? OR miner_uid = ?", row * 2)

    # -- epochs ------------------------------------------------------------------

    def run_due_epochs(self) -> int:
        """Run the epochs whose block has passed since the last one; returns how many.
        Called before every change and read of results, so it is rarely needed directly.
        A long catch-up commits every ``EPOCHS_PER_TRANSACTION`` epochs, so other
        processes' calls never wait long for the file."""
        with self._tx() as db:
            meta = _meta(db)
            if _due(meta, _block_of(meta)) is None:
                return 0
        total = 0
        while True:
            with self._tx() as db:
                db.execute("BEGIN IMMEDIATE")  # one process runs them; others then see them
                ran = _catch_up(db, EPOCHS_PER_TRANSACTION)
            total += ran
            if ran < EPOCHS_PER_TRANSACTION:
                return total


def _catch_up(db: sqlite3.Connection, most: int) -> int:
    """Run up to ``most`` of the epochs due (only the last ``MAX_CATCH_UP`` of a long
    gap), in order, inside the caller's transaction; returns how many ran."""
    meta = _meta(db)
    now = _block_of(meta)
    first = _due(meta, now)
    if first is None:
        return 0
    tempo = int(meta["tempo"])
    blocks = list(range(first, now + 1, tempo))
    if len(blocks) > MAX_CATCH_UP:
        log.info("the local chain skips %d epochs nobody saw", len(blocks) - MAX_CATCH_UP)
        blocks = blocks[-MAX_CATCH_UP:]
    blocks = blocks[:most]
    params = yuma.YumaParams(yuma=int(meta["yuma"]))
    for block in blocks:
        _run_epoch(db, block, tempo, params)
    _set(db, last_epoch=str(blocks[-1]))
    oldest = blocks[-1] - KEEP_EPOCHS * tempo
    db.execute("DELETE FROM epochs WHERE block < ?", (oldest,))
    db.execute("DELETE FROM standings WHERE block < ?", (oldest,))
    return len(blocks)


def _set(db: sqlite3.Connection, **values: str) -> None:
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))


def _whole(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _meta(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT key, value FROM meta").fetchall())


def _block_of(meta: dict[str, str]) -> int:
    return int((time.time() - float(meta["genesis"])) / float(meta["block_seconds"]))


def _due(meta: dict[str, str], now: int) -> int | None:
    """The block of the first epoch not yet run, if it has come."""
    tempo, last = int(meta["tempo"]), int(meta["last_epoch"])
    first = (last // tempo + 1) * tempo
    return first if first <= now else None


def _run_epoch(db: sqlite3.Connection, block: int, tempo: int, params: yuma.YumaParams) -> None:
    """One Yuma epoch over the chain as it stands, results and bonds written back."""
    rows = db.execute(
        "SELECT uid, hotkey, stake, validator_permit, registered_block FROM neurons"
    ).fetchall()
    n = max((r[0] for r in rows), default=-1) + 1
    stake, permit, registered = np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    for uid, _, st, p, reg in rows:
        stake[uid], permit[uid], registered[uid] = st, bool(p), reg
    last_update = registered.copy()
    weights = np.zeros((n, n))
    for vuid, wblock, text in db.execute("SELECT validator_uid, block, weights FROM weights"):
        if vuid < n:
            last_update[vuid] = wblock
            for j, w in json.loads(text).items():
                if int(j) < n:
                    weights[vuid, int(j)] = w
    bonds = np.zeros((n, n))
    for v, m, b in db.execute("SELECT validator_uid, miner_uid, bond FROM bonds"):
        if v < n and m < n:
            bonds[v, m] = b
    state = yuma.EpochInput(
        block=block,
        tempo=tempo,
        stake=stake,
        validator_permit=permit,
        weights=weights,
        bonds=bonds,
        last_update=last_update,
        registered=registered,
        emission=EMISSION_PER_BLOCK * tempo,
    )
    r = yuma.epoch(state, params)
    db.execute("INSERT OR REPLACE INTO epochs VALUES (?, ?)", (block, r.owner_emission))
    db.executemany(
        f"INSERT OR REPLACE INTO standings (block, {STANDING_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                block,
                uid,
                hotkey,
                st,
                p,
                r.rank[uid],
                r.trust[uid],
                r.consensus[uid],
                r.incentive[uid],
                r.dividends[uid],
                r.emission[uid],
                r.validator_trust[uid],
            )  # fmt: skip
            for uid, hotkey, st, p, _ in rows
        ],
    )
    db.execute("DELETE FROM bonds")
    v, m = np.nonzero(r.bonds > 1e-12)
    db.executemany(
        "INSERT INTO bonds VALUES (?, ?, ?)",
        [(int(i), int(j), float(r.bonds[i, j])) for i, j in zip(v, m, strict=True)],
    )


def _epoch(db: sqlite3.Connection, block: int) -> Epoch:
    (owner,) = db.execute("SELECT owner_emission FROM epochs WHERE block = ?", (block,)).fetchone()
    rows = db.execute(
        f"SELECT {STANDING_COLUMNS} FROM standings WHERE block = ? ORDER BY uid", (block,)
    ).fetchall()
    names = [f.name for f in fields(Standing)]
    standings = [Standing(**dict(zip(names, row, strict=True))) for row in rows]
    standings = [replace(s, validator_permit=bool(s.validator_permit)) for s in standings]
    return Epoch(block, standings, owner)


def _neuron(row: tuple) -> Neuron:
    uid, hotkey, coldkey, host, port, stake, permit = row
    return Neuron(uid, hotkey, coldkey, host, port, float(stake), bool(permit))
