"""The validator's memory: moving-average scores, every scored answer, a few audio samples.

One SQLite file in WAL mode. A round's answers and the score updates they cause are
written in one transaction, so a validator killed mid-round restarts with either the
whole round or none of it, never half. Audio samples live beside it as files, capped in
number; failing to write one (a full disk) never costs a score.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chorus.errors import CallerError
from chorus.fingerprint import Fingerprint, Remembered
from chorus.services import Result, registry

log = logging.getLogger("chorus.store")

COLUMN_WINDOW = 200  # a miner's most recent answers behind its leaderboard columns

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scores (
    uid INTEGER PRIMARY KEY,
    hotkey TEXT NOT NULL,
    score REAL NOT NULL,
    answered INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL,
    created REAL NOT NULL,
    uid INTEGER NOT NULL,
    hotkey TEXT NOT NULL,
    service TEXT NOT NULL,
    prompt TEXT NOT NULL,
    score REAL NOT NULL,
    error TEXT,
    latency_s REAL,
    synthesis_s REAL,
    eval_s REAL,
    metrics TEXT NOT NULL DEFAULT '{}',
    sample TEXT
);
CREATE INDEX IF NOT EXISTS answers_uid ON answers (uid, id);
CREATE TABLE IF NOT EXISTS fingerprints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL,
    created REAL NOT NULL,
    uid INTEGER NOT NULL,
    hotkey TEXT NOT NULL,
    prompt_key TEXT NOT NULL,
    version INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    times BLOB NOT NULL
);
"""


@dataclass
class Answer:
    """One miner's answer to one prompt, as scored."""

    uid: int
    hotkey: str
    service: str
    prompt: str
    score: float
    error: str | None = None
    latency_s: float | None = None
    synthesis_s: float | None = None
    eval_s: float | None = None
    result: Result | None = None  # the evaluator's typed result; None if nothing was scored
    audio: bytes | None = None  # encoded file bytes, kept as a sample if room allows


@dataclass
class StoredAnswer:
    """An answer as the store gives it back, its result typed by its service."""

    id: int
    round: int
    created: float
    uid: int
    hotkey: str
    service: str
    prompt: str
    score: float
    error: str | None
    latency_s: float | None
    synthesis_s: float | None
    eval_s: float | None
    result: Result | None
    sample: str | None


@dataclass
class MinerSummary:
    """One miner's standing: moving-average score, mean raw score overall and per service,
    answers and failures, and the services' leaderboard columns over recent answers."""

    uid: int
    hotkey: str
    score: float
    mean_score: float
    answers: int
    failed: int
    services: dict[str, float] = field(default_factory=dict)
    columns: dict[str, float | None] = field(default_factory=dict)


@dataclass
class MinerScore:
    uid: int
    hotkey: str
    score: float
    answered: int
    failed: int


class ValidatorStore:
    def __init__(
        self, path: str | Path, samples_dir: str | Path | None = None, max_samples: int = 50
    ):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.samples_dir = Path(samples_dir) if samples_dir else self.path.parent / "samples"
        self.max_samples = max_samples
        try:
            with self._tx() as db:
                db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:  # a file that is not SQLite: the caller's to fix
            raise CallerError(f"cannot use {self.path} as a validator's state: {e}") from e

    @contextmanager
    def _tx(self):
        with closing(sqlite3.connect(self.path, timeout=30.0)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            with db:
                yield db

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def faults(self) -> dict[str, int]:
        """The validator's fault counts by stage (``Validator.record_fault`` keeps them in
        ``faults``); none if never written or unreadable."""
        try:
            counts = json.loads(self.get_meta("faults", "{}") or "{}")
            return {str(k): int(v) for k, v in counts.items()}
        except (ValueError, TypeError, AttributeError):
            return {}

    def scores(self) -> dict[int, MinerScore]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT uid, hotkey, score, answered, failed FROM scores ORDER BY uid"
            ).fetchall()
        return {r[0]: MinerScore(*r) for r in rows}

    def last_round(self) -> int:
        return int(self.get_meta("round", "0") or 0)

    def record_round(self, round_no: int, answers: list[Answer], alpha: float) -> None:
        """Store a round's answers and move each miner's score toward its new result:
        ``score = alpha * score + (1 - alpha) * new``. A uid whose hotkey changed is a new
        miner and starts again from zero."""
        now = time.time()
        with self._tx() as db:
            for a in answers:
                new = a.score if math.isfinite(a.score) else 0.0
                new = min(max(new, 0.0), 1.0)
                row = db.execute(
                    "SELECT hotkey, score, answered, failed FROM scores WHERE uid = ?", (a.uid,)
                ).fetchone()
                old, answered, failed = 0.0, 0, 0
                if row and row[0] == a.hotkey:
                    _, old, answered, failed = row
                db.execute(
                    "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        a.uid,
                        a.hotkey,
                        alpha * old + (1 - alpha) * new,
                        answered + (a.error is None),
                        failed + (a.error is not None),
                        now,
                    ),
                )
                cur = db.execute(
                    "INSERT INTO answers (round, created, uid, hotkey, service, prompt, score,"
                    " error, latency_s, synthesis_s, eval_s, metrics)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        round_no,
                        now,
                        a.uid,
                        a.hotkey,
                        a.service,
                        a.prompt,
                        new,
                        a.error,
                        a.latency_s,
                        a.synthesis_s,
                        a.eval_s,
                        json.dumps(a.result.to_json() if a.result else {}),
                    ),
                )
                if a.audio:
                    self._keep_sample(db, cur.lastrowid, a)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('round', ?)", (str(round_no),))

    def _keep_sample(self, db: sqlite3.Connection, answer_id: int, a: Answer) -> None:
        ext = "flac" if a.audio[:4] == b"fLaC" else "wav"
        path = self.samples_dir / f"{answer_id:08d}-uid{a.uid}-{a.service}.{ext}"
        try:
            self.samples_dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(a.audio)
        except OSError as e:  # a full disk costs the sample, never the score
            log.warning("could not keep audio sample %s: %s", path.name, e)
            with suppress(OSError):
                path.unlink(missing_ok=True)
            return
        db.execute("UPDATE answers SET sample = ? WHERE id = ?", (path.name, answer_id))
        old = db.execute(
            "SELECT id, sample FROM answers WHERE sample IS NOT NULL ORDER BY id DESC"
            " LIMIT -1 OFFSET ?",
            (self.max_samples,),
        ).fetchall()
        for old_id, name in old:
            with suppress(OSError):
                (self.samples_dir / name).unlink(missing_ok=True)
            db.execute("UPDATE answers SET sample = NULL WHERE id = ?", (old_id,))

    # -- the replay memory (chorus.fingerprint.ReplayMemory) ---------------------------

    def add_fingerprints(self, rows: list[Remembered], version: int, keep: int) -> list[int]:
        """Store answers' fingerprints (in format ``version``) and drop all but the newest
        ``keep``; returns the new rows' ids (the rows' own ``id`` is not read)."""
        now = time.time()
        ids = []
        with self._tx() as db:
            for r in rows:
                cur = db.execute(
                    "INSERT INTO fingerprints (round, created, uid, hotkey, prompt_key, version,"
                    " hashes, times) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        r.round,
                        now,
                        r.uid,
                        r.hotkey,
                        r.prompt_key,
                        version,
                        *r.fingerprint.to_bytes(),
                    ),
                )
                ids.append(int(cur.lastrowid))
            db.execute(
                "DELETE FROM fingerprints WHERE id <= (SELECT id FROM fingerprints"
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (keep,),
            )
        return ids

    def fingerprints(self, limit: int, version: int) -> list[Remembered]:
        """The newest ``limit`` stored fingerprints of one format version, oldest first."""
        with self._tx() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT id, round, uid, hotkey, prompt_key, hashes, times FROM fingerprints"
                " WHERE version = ? ORDER BY id DESC LIMIT ?",
                (version, limit),
            ).fetchall()
        return [
            Remembered(
                r["id"],
                r["round"],
                r["uid"],
                r["hotkey"],
                r["prompt_key"],
                Fingerprint.from_bytes(r["hashes"], r["times"]),
            )
            for r in reversed(rows)
        ]

    def answers(self, limit: int = 100, uid: int | None = None) -> list[StoredAnswer]:
        """The most recent answers first, each with its typed result."""
        query = "SELECT * FROM answers"
        args: tuple = ()
        if uid is not None:
            query, args = query + " WHERE uid = ?", (uid,)
        with self._tx() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        services = registry()
        out = []
        for r in rows:
            d = dict(r)
            metrics = json.loads(d.pop("metrics"))
            service = services.get(d["service"])
            kind = service.result if service else Result
            d["result"] = kind.from_json(metrics) if metrics else None
            out.append(StoredAnswer(**d))
        return out

    def summary(self, recent: int = COLUMN_WINDOW) -> list[MinerSummary]:
        """Per current miner, best moving average first: its mean raw score overall and per
        service, failures, and each service column averaged over its ``recent`` answers."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT uid, hotkey, service, AVG(score), COUNT(*), SUM(error IS NOT NULL)"
                " FROM answers GROUP BY uid, hotkey, service"
            ).fetchall()
        ema = self.scores()
        miners: dict[int, MinerSummary] = {}
        totals: dict[int, float] = {}
        for uid, hotkey, service, mean, n, failed in rows:
            current = ema.get(uid)
            if current is None or current.hotkey != hotkey:
                continue
            m = miners.setdefault(uid, MinerSummary(uid, hotkey, current.score, 0.0, 0, 0))
            m.services[service] = mean
            m.answers += n
            m.failed += failed
            totals[uid] = totals.get(uid, 0.0) + mean * n
        services = registry()
        for uid, m in miners.items():
            m.mean_score = totals[uid] / m.answers
            values: dict[str, list[float]] = {}
            for a in self.answers(limit=recent, uid=uid):
                service = services.get(a.service)
                if a.hotkey != m.hotkey or a.result is None or service is None:
                    continue
                for column in service.columns:
                    value = column.value(a.result)
                    values.setdefault(column.title, [])
                    if value is not None:
                        values[column.title].append(value)
            m.columns = {t: (sum(v) / len(v) if v else None) for t, v in values.items()}
        return sorted(miners.values(), key=lambda m: -m.score)
