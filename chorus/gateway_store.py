"""The gateway's own SQLite database: the voices each API key uploaded, and usage (seconds
of audio served and requests, per key and per miner).

One file (``chorus gateway --db``, default ``$CHORUS_HOME/gateway.sqlite``) in WAL mode,
so the dashboard can read it while the gateway writes. Every read of a voice names the
key that asks: a voice belongs to the key that uploaded it, and to no other.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chorus.errors import CallerError
from chorus.services.tts import CUSTOM_VOICE_PREFIX

SCHEMA = """
CREATE TABLE IF NOT EXISTS voices (
    id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    seconds REAL NOT NULL,
    sample_rate INTEGER NOT NULL,
    consent TEXT,
    audio BLOB NOT NULL  -- FLAC, checked as a reference recording on upload
);
CREATE INDEX IF NOT EXISTS voices_by_key ON voices (key_id, created_at);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,
    key_id TEXT NOT NULL,
    route TEXT NOT NULL,
    service TEXT,
    miner_uid INTEGER,
    miner_hotkey TEXT,
    seconds REAL NOT NULL DEFAULT 0,
    status INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_by_key ON usage (key_id, ts);
"""


@dataclass(frozen=True)
class Voice:
    """A voice uploaded to the gateway (without its audio), in OpenAI's shape."""

    id: str
    name: str
    created_at: float
    seconds: float
    sample_rate: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "audio.voice",
            "type": "audio_sample",
            "name": self.name,
            "created_at": int(self.created_at),
            "duration_s": round(self.seconds, 3),
            "sample_rate": self.sample_rate,
        }


@dataclass(frozen=True)
class Usage:
    """One miner's part in one request (or the request alone, when no miner served it)."""

    request_id: str
    key_id: str
    route: str
    status: int
    service: str | None = None
    miner_uid: int | None = None
    miner_hotkey: str | None = None
    seconds: float = 0.0


@dataclass
class Tally:
    """Requests (``failed``: answered 4xx/5xx) and seconds of audio served."""

    requests: int
    failed: int
    seconds: float


@dataclass(kw_only=True)
class MinerUsage(Tally):
    uid: int
    hotkey: str | None


@dataclass(kw_only=True)
class RouteUsage(Tally):
    route: str


@dataclass(kw_only=True)
class KeyUsage(Tally):
    key: str


@dataclass(kw_only=True)
class UsageSummary(Tally):
    """The usage in all, by miner and by route; ``by_key`` only when summed over every
    key."""

    by_miner: list[MinerUsage]
    by_route: list[RouteUsage]
    by_key: list[KeyUsage] | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.by_key is None:
            del out["by_key"]
        return out


class GatewayStore:
    """Voices and usage in SQLite; safe to share between the gateway's threads."""

    def __init__(self, path: str | Path = ":memory:", readonly: bool = False):
        """Opens (or creates) the database at ``path``; a path that cannot hold one (a
        folder, a file that is not SQLite, no permission) is the caller's mistake."""
        self.path = str(path)
        try:
            self._open(readonly)
        except sqlite3.DatabaseError as e:  # OperationalError is one too
            raise CallerError(f"cannot use {self.path} as the gateway database: {e}") from e

    def _open(self, readonly: bool) -> None:
        if readonly:
            uri = f"file:{Path(self.path).expanduser()}?mode=ro"
            self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        else:
            if self.path != ":memory:":
                Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(
                str(Path(self.path).expanduser()) if self.path != ":memory:" else self.path,
                check_same_thread=False,
            )
        self.db.execute("PRAGMA busy_timeout = 5000")
        self.lock = threading.Lock()
        if not readonly:
            with self.lock, self.db:
                if self.path != ":memory:":
                    self.db.execute("PRAGMA journal_mode = WAL")
                    # a commit costs no fsync (WAL stays consistent; a power cut may lose
                    # the last rows of usage): it is written from the request path
                    self.db.execute("PRAGMA synchronous = NORMAL")
                self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- voices

    def add_voice(
        self,
        key_id: str,
        name: str,
        flac: bytes,
        seconds: float,
        sample_rate: int,
        consent: str | None = None,
    ) -> Voice:
        voice = Voice(
            CUSTOM_VOICE_PREFIX + secrets.token_hex(8), name, time.time(), seconds, sample_rate
        )
        with self.lock, self.db:
            self.db.execute(
                "INSERT INTO voices (id, key_id, name, created_at, seconds, sample_rate,"
                " consent, audio) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (voice.id, key_id, name, voice.created_at, seconds, sample_rate, consent, flac),
            )
        return voice

    def voices(self, key_id: str) -> list[Voice]:
        """The key's voices, oldest first."""
        with self.lock:
            rows = self.db.execute(
                "SELECT id, name, created_at, seconds, sample_rate FROM voices"
                " WHERE key_id = ? ORDER BY created_at, id",
                (key_id,),
            ).fetchall()
        return [Voice(*row) for row in rows]

    def voice(self, key_id: str, voice_id: str) -> Voice | None:
        """The voice, if it exists and belongs to ``key_id``."""
        with self.lock:
            row = self.db.execute(
                "SELECT id, name, created_at, seconds, sample_rate FROM voices"
                " WHERE id = ? AND key_id = ?",
                (voice_id, key_id),
            ).fetchone()
        return Voice(*row) if row else None

    def voice_audio(self, key_id: str, voice_id: str) -> bytes | None:
        """The voice's recording (FLAC), if it belongs to ``key_id``."""
        with self.lock:
            row = self.db.execute(
                "SELECT audio FROM voices WHERE id = ? AND key_id = ?", (voice_id, key_id)
            ).fetchone()
        return bytes(row[0]) if row else None

    def delete_voice(self, key_id: str, voice_id: str) -> bool:
        with self.lock, self.db:
            cur = self.db.execute(
                "DELETE FROM voices WHERE id = ? AND key_id = ?", (voice_id, key_id)
            )
        return cur.rowcount > 0

    # -- usage

    def record(self, rows: list[Usage]) -> None:
        now = time.time()
        with self.lock, self.db:
            self.db.executemany(
                "INSERT INTO usage (request_id, ts, key_id, route, service, miner_uid,"
                " miner_hotkey, seconds, status) VALUES"
                " (:request_id, :ts, :key_id, :route, :service, :miner_uid, :miner_hotkey,"
                " :seconds, :status)",
                [{**asdict(r), "ts": now} for r in rows],
            )

    def usage(self, key_id: str | None = None, since: float | None = None) -> UsageSummary:
        """The usage of one key, or of every key (then also ``by_key``)."""
        where, args = ["1 = 1"], list[Any]()
        if key_id is not None:
            where.append("key_id = ?")
            args.append(key_id)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        cond = " AND ".join(where)
        totals = (
            "COUNT(DISTINCT request_id),"
            " COUNT(DISTINCT CASE WHEN status >= 400 THEN request_id END),"
            " COALESCE(SUM(seconds), 0)"
        )

        def grouped(column: str) -> list[tuple]:
            return self.db.execute(
                f"SELECT {column}, {totals} FROM usage WHERE {cond} AND {column.split(',')[0]}"
                f" IS NOT NULL GROUP BY {column}"
                " ORDER BY SUM(seconds) DESC, COUNT(DISTINCT request_id) DESC",
                args,
            ).fetchall()

        with self.lock:
            requests, failed, seconds = self.db.execute(
                f"SELECT {totals} FROM usage WHERE {cond}", args
            ).fetchone()
            by_miner = grouped("miner_uid, miner_hotkey")
            by_route = grouped("route")
            by_key = grouped("key_id") if key_id is None else []
        return UsageSummary(
            requests,
            failed,
            round(seconds, 3),
            by_miner=[
                MinerUsage(n, f, round(s, 3), uid=uid, hotkey=hk) for uid, hk, n, f, s in by_miner
            ],
            by_route=[RouteUsage(n, f, round(s, 3), route=r) for r, n, f, s in by_route],
            by_key=[KeyUsage(n, f, round(s, 3), key=k) for k, n, f, s in by_key]
            if key_id is None
            else None,
        )
