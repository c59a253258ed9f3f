"""A validator's state as one web page: leaderboard, score history, recent answers to listen
to, how long evaluation takes, and what the chain's last epoch paid the miners and this
validator; given a gateway's database, also what the gateway served per key and miner.

The page is rendered on the server as plain HTML with inline SVG plots: no JavaScript, no
CDN, nothing to build, so it works offline and behind any proxy. It reads the same SQLite
file the validator writes (WAL mode lets both run at once), either from
``chorus dashboard --state DIR`` or from a running validator that mounts
``create_dashboard_app``. Audio is served only from the samples folder, by plain file name.
"""

from __future__ import annotations

import html
import re
import sqlite3
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from chorus import __version__
from chorus.chain import Chain, Epoch, Standing, WeightCommit
from chorus.protocol import MEDIA_TYPES
from chorus.services import Result, registry
from chorus.store import MinerSummary, StoredAnswer, ValidatorStore

if TYPE_CHECKING:
    from chorus.gateway_store import MinerUsage, UsageSummary

HISTORY = 60  # answers per miner in the history plots
EMISSION_DIGITS = 4
RECENT_ROUNDS = 6
TIMING_WINDOW = 500  # answers behind the evaluation timings
COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")
SAMPLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(wav|flac)$")


@dataclass(frozen=True)
class OnChain:
    """What the chain says of one miner: the weight this validator set (or the mean over
    validators), and its incentive and emission in the last epoch; None where unknown
    (no chain, no epoch yet, or the uid now belongs to another hotkey)."""

    weight: float | None = None
    incentive: float | None = None  # its share of the miners' pay, in [0, 1]
    emission: float | None = None  # what the epoch paid it, in the subnet's units


@dataclass
class MinerRow(MinerSummary):
    """One leaderboard line: the store's summary (its ``services`` over the plotted recent
    answers), what the chain says of it (``OnChain``'s fields), and the raw scores behind
    its history plot."""

    weight: float | None = None
    incentive: float | None = None
    emission: float | None = None
    last_seen: float | None = None
    history: list[tuple[int, float]] = field(default_factory=list)  # (round, raw score)


@dataclass
class Round:
    """One recent round and its answers, best first."""

    round: int
    service: str
    created: float
    prompt: str
    answers: list[StoredAnswer] = field(default_factory=list)


@dataclass
class Board:
    """Everything the page shows, gathered in one pass over the store and the chain.
    ``block`` is None without a chain; ``epoch`` is None without one or before the first
    epoch; ``validator_uid`` is whose weights and standing the page shows, if known."""

    round: int
    block: int | None
    miners: list[MinerRow]
    rounds: list[Round]
    timings: list[dict[str, Any]]  # per service
    generated: float
    epoch: Epoch | None = None
    validator_uid: int | None = None
    # A gateway's usage (``GatewayStore.usage``), when the page is given its database;
    # a string says why it could not be read.
    usage: UsageSummary | str | None = None
    faults: dict[str, int] = field(default_factory=dict)  # the validator's, by stage
    last_fault: str | None = None
    commits: list[WeightCommit] = field(default_factory=list)  # commit-reveal subnets

    @property
    def me(self) -> Standing | None:
        """This validator's standing in the last epoch, if both are known."""
        if self.epoch is None or self.validator_uid is None:
            return None
        return self.epoch.standing(self.validator_uid)


def columns(service: str, result: Result | None) -> dict[str, float | None]:
    """The leaderboard columns of ``service`` read from one answer's result."""
    described = registry().get(service)
    if described is None or result is None:
        return {}
    return {c.title: c.value(result) for c in described.columns}


def _weights(chain: Chain | None, validator_uid: int | None) -> dict[int, float] | None:
    """This validator's weights on the chain, or the mean over validators if not known."""
    if chain is None:
        return None
    by_validator = chain.weights()
    if validator_uid is not None:
        return by_validator.get(validator_uid, {})
    totals: dict[int, float] = defaultdict(float)
    for weights in by_validator.values():
        for uid, w in weights.items():
            totals[uid] += w / len(by_validator)
    return dict(totals)


def _last_epoch(chain: Chain | None) -> Epoch | None:
    return chain.last_epoch() if chain is not None else None


def on_chain(
    uid: int, hotkey: str, weights: dict[int, float] | None, epoch: Epoch | None
) -> OnChain:
    """The chain's view of the miner at ``uid`` known to the store by ``hotkey``: an epoch
    standing counts only if that uid still belongs to the same hotkey."""
    standing = epoch.standing(uid) if epoch is not None else None
    if standing is not None and standing.hotkey != hotkey:
        standing = None
    return OnChain(
        weight=None if weights is None else weights.get(uid, 0.0),
        incentive=standing.incentive if standing else None,
        emission=standing.emission if standing else None,
    )


def _miner_row(
    store: ValidatorStore, s: MinerSummary, weights: dict | None, epoch: Epoch | None
) -> MinerRow:
    answers = [a for a in store.answers(limit=HISTORY, uid=s.uid) if a.hotkey == s.hotkey]
    by_service: dict[str, list[float]] = defaultdict(list)
    for a in answers:
        by_service[a.service].append(a.score)
    seen = [a.created for a in answers if a.error is None]
    return MinerRow(
        **{**vars(s), "services": {v: statistics.fmean(x) for v, x in sorted(by_service.items())}},
        **asdict(on_chain(s.uid, s.hotkey, weights, epoch)),
        last_seen=max(seen) if seen else None,
        history=[(a.round, a.score) for a in reversed(answers)],
    )


def _timings(answers: list[StoredAnswer]) -> list[dict[str, Any]]:
    """Per service: how long scoring, the miners' synthesis and the round trip took."""
    out = []
    for service in sorted({a.service for a in answers}):
        rows = [a for a in answers if a.service == service]

        def stats(key: str, rows: list[StoredAnswer] = rows) -> tuple[float, float] | None:
            values = sorted(v for a in rows if (v := getattr(a, key)) is not None)
            if not values:
                return None
            return statistics.fmean(values), values[min(len(values) - 1, int(0.95 * len(values)))]

        out.append(
            {
                "service": service,
                "answers": len(rows),
                "failed": sum(a.error is not None for a in rows),
                "eval_s": stats("eval_s"),
                "synthesis_s": stats("synthesis_s"),
                "latency_s": stats("latency_s"),
            }
        )
    return out


def gateway_usage(path: str | Path) -> UsageSummary | str:
    """A gateway database's usage over every key, or why it cannot be read."""
    from chorus.gateway_store import GatewayStore

    if not Path(path).expanduser().is_file():
        return f"no gateway database at {path} yet"
    try:
        db = GatewayStore(path, readonly=True)
        try:
            return db.usage()
        finally:
            db.close()
    except sqlite3.Error as e:
        return f"cannot read the gateway database at {path}: {e}"


def collect(
    store: ValidatorStore,
    chain: Chain | None = None,
    validator_uid: int | None = None,
    gateway_db: str | Path | None = None,
) -> Board:
    """Read the store (and the chain's weights and last epoch, if given, and a gateway's
    usage) into a ``Board``."""
    weights = _weights(chain, validator_uid)
    epoch = _last_epoch(chain)
    miners = [_miner_row(store, s, weights, epoch) for s in store.summary()]
    recent = store.answers(limit=TIMING_WINDOW)
    rounds: dict[int, Round] = {}
    for a in recent:
        if a.round not in rounds and len(rounds) == RECENT_ROUNDS:
            break
        r = rounds.setdefault(a.round, Round(a.round, a.service, a.created, a.prompt))
        r.answers.append(a)
    for r in rounds.values():
        r.answers.sort(key=lambda a: -a.score)
    return Board(
        round=store.last_round(),
        block=chain.block() if chain is not None else None,
        miners=miners,
        rounds=list(rounds.values()),
        timings=_timings(recent),
        generated=time.time(),
        epoch=epoch,
        validator_uid=validator_uid,
        usage=gateway_usage(gateway_db) if gateway_db is not None else None,
        faults=store.faults(),
        last_fault=store.get_meta("last_fault"),
        commits=chain.weight_commits() if chain is not None else [],
    )


# -- rendering ----------------------------------------------------------------------------


def svg_chart(
    series: list[tuple[str, str, list[tuple[int, float]]]],
    width: int = 720,
    height: int = 240,
    axes: bool = True,
) -> str:
    """Lines of (round, score in [0, 1]) per series as an inline SVG; hover shows values."""
    pad_l, pad_r, pad_t, pad_b = (34, 10, 8, 22) if axes else (2, 2, 2, 2)
    xs = [x for _, _, points in series for x, _ in points]
    if not xs:
        return f'<svg class="chart" width="{width}" height="{height}"></svg>'
    lo, hi = min(xs), max(xs)
    span = max(hi - lo, 1)

    def px(x: float) -> float:
        return pad_l + (x - lo) / span * (width - pad_l - pad_r)

    def py(y: float) -> float:
        return pad_t + (1 - min(max(y, 0.0), 1.0)) * (height - pad_t - pad_b)

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">'
    ]
    if axes:
        for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
            y = py(tick)
            parts.append(
                f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                f'<text x="{pad_l - 4}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>'
            )
        parts.append(
            f'<text x="{pad_l}" y="{height - 6}">round {lo}</text>'
            f'<text x="{width - pad_r}" y="{height - 6}" text-anchor="end">round {hi}</text>'
        )
    for label, color, points in series:
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5">'
            f"<title>{html.escape(label)}</title></polyline>"
        )
        if axes:
            parts.extend(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{color}">'
                f"<title>{html.escape(label)}, round {x}: {y:.3f}</title></circle>"
                for x, y in points
            )
    parts.append("</svg>")
    return "".join(parts)


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ago(then: float | None, now: float) -> str:
    if then is None:
        return "never"
    seconds = max(0, int(now - then))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _leaderboard(board: Board) -> str:
    titles = list(dict.fromkeys(t for m in board.miners for t in m.columns))
    shown = [t for t in titles if any(m.columns.get(t) is not None for m in board.miners)]
    head = "".join(f"<th>{html.escape(t)}</th>" for t in shown)
    rows = []
    for rank, m in enumerate(board.miners, 1):
        color = COLORS[(rank - 1) % len(COLORS)]
        cells = "".join(f"<td>{_num(m.columns.get(t))}</td>" for t in shown)
        chain = (
            f"<td>{_num(m.weight)}</td><td>{_num(m.incentive)}</td>"
            f"<td>{_num(m.emission, EMISSION_DIGITS)}</td>"
        )
        services = ", ".join(f"{s} {v:.2f}" for s, v in m.services.items())
        last = f'<td title="{_utc(m.last_seen)}">' if m.last_seen else "<td>"
        rows.append(
            f'<tr class="miner" data-uid="{m.uid}"><td>{rank}</td><td>{m.uid}</td>'
            f'<td class="key" title="{html.escape(m.hotkey)}">{html.escape(m.hotkey[:10])}…</td>'
            f"<td><b>{m.score:.3f}</b></td>{chain}<td>{m.mean_score:.3f}</td>"
            f"<td>{html.escape(services)}</td>{cells}<td>{m.answers}</td><td>{m.failed}</td>"
            f"{last}{_ago(m.last_seen, board.generated)}</td>"
            f"<td>{svg_chart([(f'uid {m.uid}', color, m.history)], 140, 30, axes=False)}</td></tr>"
        )
    if not rows:
        return "<p>No miner has been scored yet.</p>"
    return (
        '<table id="leaderboard"><tr><th>rank</th><th>uid</th><th>hotkey</th><th>score</th>'
        '<th>weight</th><th title="its share of the last epoch&#39;s incentive">incentive</th>'
        '<th title="what the last epoch paid it">emission</th><th>mean</th><th>by service</th>'
        f"{head}<th>answers</th><th>fails</th>"
        f"<th>last seen</th><th>history</th></tr>{''.join(rows)}</table>"
    )


def _epoch(board: Board) -> str:
    """This validator's standing in the last epoch and every validator's beside it; a
    dash and "no epoch yet" without a chain or before the first epoch."""
    epoch, me = board.epoch, board.me
    if epoch is None:
        where = "no chain given" if board.block is None else f"block {board.block}"
        headline = f"no epoch yet ({where})"
    else:
        ago = f", {board.block - epoch.block} blocks ago" if board.block is not None else ""
        headline = f'last epoch at block <b id="epoch-block">{epoch.block}</b>{ago}'
    if board.validator_uid is None:
        whose = "this validator (pass --validator-uid to pick it)"
    elif epoch is not None and me is None:
        whose = f"this validator (uid {board.validator_uid}, not in that epoch)"
    else:
        whose = f"this validator (uid {board.validator_uid})"
    mine = (
        f'{whose}: validator trust <b id="validator-trust">'
        f"{_num(me.validator_trust if me else None)}</b> · dividends "
        f'<span id="dividends">{_num(me.dividends if me else None)}</span> · emission '
        f'<span id="emission">{_num(me.emission if me else None, EMISSION_DIGITS)}</span>'
    )
    out = f'<p id="epoch">{headline}</p><p>{mine}</p>'
    validators = [s for s in epoch.neurons if s.validator_permit] if epoch else []
    if validators:
        rows = "".join(
            f'<tr class="validator{" me" if s.uid == board.validator_uid else ""}" '
            f'data-uid="{s.uid}"><td>{s.uid}</td>'
            f'<td class="key" title="{html.escape(s.hotkey)}">{html.escape(s.hotkey[:10])}…</td>'
            f"<td>{s.stake:.2f}</td><td>{s.validator_trust:.3f}</td><td>{s.dividends:.3f}</td>"
            f"<td>{s.emission:.{EMISSION_DIGITS}f}</td></tr>"
            for s in validators
        )
        out += (
            '<table id="validators"><tr><th>uid</th><th>hotkey</th><th>stake</th>'
            "<th>validator trust</th><th>dividends</th><th>emission</th></tr>"
            f"{rows}</table>"
        )
    return out


def _history(board: Board) -> str:
    series = [
        (f"uid {m.uid}", COLORS[i % len(COLORS)], m.history)
        for i, m in enumerate(board.miners[: len(COLORS)])
    ]
    legend = "".join(
        f'<span class="legend"><i style="background:{c}"></i>{html.escape(label)}</span>'
        for label, c, _ in series
    )
    return f"{svg_chart(series)}<div>{legend}</div>"


def _answer_row(a: StoredAnswer, titles: list[str]) -> str:
    if a.sample:
        kind = "flac" if a.sample.endswith(".flac") else "wav"
        media = (
            f'<audio controls preload="auto"><source src="samples/{html.escape(a.sample)}"'
            f' type="{MEDIA_TYPES[kind]}"></audio>'
        )
    elif a.error:
        media = f'<span class="error">{html.escape(a.error[:160])}</span>'
    else:
        media = '<span class="muted">sample not kept</span>'
    if a.result is not None and a.result.reason:  # the gate that zeroed decoded audio
        media += f'<div class="error">{html.escape(a.result.reason[:160])}</div>'
    transcript = getattr(a.result, "transcript", None)
    heard = f' title="heard: {html.escape(transcript)}"' if transcript else ""
    values = columns(a.service, a.result)
    cells = "".join(
        f"<td{heard if i == 0 else ''}>{_num(values.get(t))}</td>" for i, t in enumerate(titles)
    )
    return (
        f"<tr><td>{a.uid}</td><td>{a.score:.3f}</td>{cells}"
        f"<td>{_num(a.latency_s, 2)}</td><td>{_num(a.eval_s, 2)}</td><td>{media}</td></tr>"
    )


def _rounds(board: Board) -> str:
    if not board.rounds:
        return "<p>No rounds yet.</p>"
    out = []
    for r in board.rounds:
        described = registry().get(r.service)
        titles = [c.title for c in described.columns] if described else []
        rows = "".join(_answer_row(a, titles) for a in r.answers)
        head = "".join(f"<th>{html.escape(t)}</th>" for t in titles)
        out.append(
            f'<div class="round"><h3>round {r.round} · {html.escape(r.service)} · '
            f'{_utc(r.created)}</h3><p class="prompt">{html.escape(r.prompt)}</p>'
            f"<table><tr><th>uid</th><th>score</th>{head}<th>latency s</th>"
            f"<th>eval s</th><th>answer</th></tr>{rows}</table></div>"
        )
    return "".join(out)


def _timing_table(board: Board) -> str:
    def pair(v: tuple[float, float] | None) -> str:
        return "–" if v is None else f"{v[0]:.2f} / {v[1]:.2f}"

    rows = "".join(
        f"<tr><td>{html.escape(t['service'])}</td><td>{t['answers']}</td><td>{t['failed']}</td>"
        f"<td>{pair(t['eval_s'])}</td><td>{pair(t['synthesis_s'])}</td>"
        f"<td>{pair(t['latency_s'])}</td></tr>"
        for t in board.timings
    )
    return (
        '<table id="timings"><tr><th>service</th><th>answers</th><th>failed</th>'
        "<th>evaluation s (mean / p95)</th><th>miner synthesis s</th><th>round trip s</th></tr>"
        f"{rows}</table><p class='muted'>over the last {TIMING_WINDOW} answers at most</p>"
    )


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#111;max-width:1200px}
h1{margin:0 0 4px}h2{margin:28px 0 8px;font-size:18px}h3{margin:0;font-size:14px}
table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #e5e7eb;
text-align:left;vertical-align:middle}th{background:#f3f4f6;font-weight:600}
.key{font-family:monospace}.muted{color:#6b7280}.error{color:#b91c1c;font-size:12px}
.chart text{font-size:10px;fill:#6b7280}.chart .grid{stroke:#e5e7eb}
.legend{margin-right:14px;font-size:12px}.legend i{display:inline-block;width:10px;
height:10px;margin-right:4px;border-radius:2px}.round{margin:14px 0;padding:10px;
border:1px solid #e5e7eb;border-radius:6px}.prompt{margin:4px 0 8px;font-style:italic}
audio{height:32px;width:260px}tr.me td{font-weight:600;background:#eff6ff}
.usage{display:flex;gap:24px;flex-wrap:wrap}tr.bad td{color:#b91c1c}
"""


def _usage(board: Board) -> str:
    """The gateway's requests and seconds of audio served, per API key and per miner."""
    used = board.usage
    if isinstance(used, str) or used is None:
        return f'<p class="muted" id="usage">{html.escape(used or "")}</p>'

    def table(kind: str, rows: list, first: str, cell: Any) -> str:
        body = "".join(
            f'<tr class="by-{kind}"><td>{cell(r)}</td><td>{r.requests}</td>'
            f"<td>{r.failed}</td><td>{r.seconds:.1f}</td></tr>"
            for r in rows
        )
        return (
            f'<table id="usage-{kind}"><tr><th>{first}</th><th>requests</th><th>failed</th>'
            f"<th>audio served (s)</th></tr>{body}</table>"
        )

    def miner(r: MinerUsage) -> str:
        hotkey = html.escape(r.hotkey or "")
        return f'{r.uid} <span class="key" title="{hotkey}">{hotkey[:10]}…</span>'

    return (
        f'<p id="usage">{used.requests} requests ({used.failed} failed), '
        f"{used.seconds:.1f} s of audio served</p>"
        '<div class="usage"><div><h3>by API key</h3>'
        f"{table('key', used.by_key or [], 'key', lambda r: html.escape(r.key))}</div>"
        f"<div><h3>by miner</h3>{table('miner', used.by_miner, 'miner', miner)}</div>"
        f"<div><h3>by route</h3>"
        f"{table('route', used.by_route, 'route', lambda r: html.escape(r.route))}</div>"
        "</div>"
    )


def _health(board: Board) -> str:
    """Faults the validator counted (it never stops for one), and on a commit-reveal
    subnet each weights commit with what the chain did at its reveal."""
    counts = " · ".join(f"{stage} {n}" for stage, n in board.faults.items()) or "none"
    out = f'<p id="faults">faults since the state was created: {html.escape(counts)}'
    if board.last_fault:
        stamp, _, what = board.last_fault.partition(" ")
        when = _utc(float(stamp)) if stamp.isdigit() else stamp
        out += f"; last at {when}: {html.escape(what)}"
    out += "</p>"
    if board.commits:
        rows = "".join(
            f"<tr class='{'bad' if c.status == 'lost' else ''}'><td>{c.uid}</td>"
            f"<td>{c.block}</td><td>{c.reveal_block}</td><td>{html.escape(c.status)}</td>"
            f"<td>{html.escape(c.reason)}</td></tr>"
            for c in board.commits
        )
        out += (
            "<table id='commits'><tr><th>uid</th><th>committed at block</th>"
            "<th>reveal block</th><th>status</th><th>reason</th></tr>" + rows + "</table>"
        )
    return out


def render(board: Board) -> str:
    """The whole page as one HTML string."""
    block = f" · block {board.block}" if board.block is not None else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>chorus validator</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>chorus validator</h1><p class='muted'>round {board.round}{block} · "
        f"{len(board.miners)} miners · {_utc(board.generated)} · chorus {__version__}</p>"
        f"<h2>Last epoch</h2>{_epoch(board)}"
        f"<h2>Health</h2>{_health(board)}"
        f"<h2>Leaderboard</h2>{_leaderboard(board)}"
        f"<h2>Score history</h2>{_history(board)}"
        f"<h2>Evaluation timings</h2>{_timing_table(board)}"
        f"<h2>Recent prompts</h2>{_rounds(board)}"
        + (f"<h2>Gateway usage</h2>{_usage(board)}" if board.usage is not None else "")
        + "</body></html>"
    )


def create_dashboard_app(
    store: ValidatorStore,
    chain: Chain | None = None,
    validator_uid: int | None = None,
    gateway_db: str | Path | None = None,
) -> FastAPI:
    """The dashboard as an ASGI app. Its routes are plain functions, so FastAPI runs them
    in a worker thread and a validator serving it in its own event loop is never blocked
    by a page render. With ``gateway_db`` (a gateway's ``--db``) it also shows what the
    gateway served, per API key and per miner."""
    app = FastAPI(title="chorus dashboard", version=__version__, docs_url=None, redoc_url=None)
    samples = store.samples_dir.resolve()

    @app.get("/health")
    def health() -> dict:
        return {"ok": True, "round": store.last_round(), "faults": store.faults()}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return render(collect(store, chain, validator_uid, gateway_db))

    @app.get("/api/leaderboard")
    def leaderboard() -> list[dict[str, Any]]:
        weights = _weights(chain, validator_uid)
        epoch = _last_epoch(chain)
        return [
            {**asdict(s), **asdict(on_chain(s.uid, s.hotkey, weights, epoch))}
            for s in store.summary()
        ]

    @app.get("/api/epoch")
    def last_epoch() -> dict[str, Any] | None:
        """The chain's last epoch (``Epoch.to_json``), or null without a chain or before
        the first epoch."""
        epoch = _last_epoch(chain)
        return epoch.to_json() if epoch is not None else None

    @app.get("/api/usage")
    def usage() -> dict[str, Any] | None:
        """The gateway's usage (``GatewayStore.usage``), or null without its database."""
        if gateway_db is None:
            return None
        used = gateway_usage(gateway_db)
        if isinstance(used, str):
            raise HTTPException(503, used)
        return used.to_json()

    @app.get("/samples/{name}")
    def sample(name: str) -> FileResponse:
        # Only a plain file name that resolves to a file directly inside the samples folder.
        path = (samples / name).resolve()
        if not SAMPLE_NAME.match(name) or path.parent != samples or not path.is_file():
            raise HTTPException(404, "no such sample")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix[1:]])

    return app
