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

log = logging.getLogger("chorus.store")

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
    metrics: dict[str, Any] = field(default_factory=dict)
    audio: bytes | None = None  # encoded file bytes, kept as a sample if room allows


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
        with self._tx() as db:
            db.executescript(SCHEMA)

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
                        json.dumps(a.metrics, default=str),
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

    def answers(self, limit: int = 100, uid: int | None = None) -> list[dict[str, Any]]:
        """The most recent answers first, with their metrics decoded."""
        query = "SELECT * FROM answers"
        args: tuple = ()
        if uid is not None:
            query, args = query + " WHERE uid = ?", (uid,)
        with self._tx() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["metrics"] = json.loads(d["metrics"])
            out.append(d)
        return out

    def summary(self) -> list[dict[str, Any]]:
        """Per miner: moving-average score, mean raw score (overall and per service), mean
        WER and MOS of its speech answers, and failures."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT uid, hotkey, AVG(score), COUNT(*), SUM(error IS NOT NULL),"
                " AVG(json_extract(metrics, '$.wer')),"
                " AVG(json_extract(metrics, '$.mos.p808')) FROM answers GROUP BY uid, hotkey"
            ).fetchall()
            per_service = db.execute(
                "SELECT uid, hotkey, service, AVG(score) FROM answers GROUP BY uid, hotkey, service"
            ).fetchall()
        services: dict[tuple[int, str], dict[str, float]] = {}
        for uid, hotkey, service, mean in per_service:
            services.setdefault((uid, hotkey), {})[service] = mean
        ema = self.scores()
        out = []
        for uid, hotkey, mean, n, failed, wer, mos in rows:
            current = ema.get(uid)
            if current is None or current.hotkey != hotkey:
                continue
            out.append(
                {
                    "uid": uid,
                    "hotkey": hotkey,
                    "score": current.score,
                    "mean_score": mean,
                    "services": services.get((uid, hotkey), {}),
                    "answers": n,
                    "failed": failed,
                    "wer": wer,
                    "mos": mos,
                }
            )
        return sorted(out, key=lambda r: -r["score"])
