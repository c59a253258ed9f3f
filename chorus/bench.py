"""``chorus bench``: generation and evaluation time per service, in the seed's table format.

Each service is measured in its own fresh process, so its peak RSS is that service's
alone (models included) and one service's caches cannot flatter another's timings. Every
task runs once as a warm-up, then ``runs`` timed times; we report average, max, min, the
real-time factor (seconds of work per second of audio) and the process's peak RSS.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chorus.config import check_output_file
from chorus.errors import CallerError
from chorus.services import get

DEFAULT_RUNS = 5

# The seed's figures (../shared/seed/benchmark.md): evaluation (15 s music, 30 s speech)
# and generation, average / max / min seconds per GPU.
SEED_EVALUATION = {
    "RTX 4090": {"music": (11.56, 12.38, 11.39), "tts": (2.33, 2.80, 2.28)},
    "A6000": {"music": (8.39, 11.09, 6.73), "tts": (2.25, 2.35, 2.14), "clone": (2.12, 2.15, 1.95)},
    "H100": {"music": (5.80, 7.18, 5.65), "tts": (1.25, 2.14, 1.04), "clone": (1.30, 1.36, 1.16)},
    "A100": {"music": (7.12, 8.26, 6.94), "tts": (1.10, 1.77, 1.01), "clone": (1.13, 1.45, 1.01)},
}
SEED_GENERATION = {
    "A6000": {
        "music": (63.67, 73.18, 57.95),
        "tts": (8.66, 14.18, 5.67),
        "clone": (72.75, 86.48, 51.16),
    },
    "RTX 4090": {
        "music": (52.92, 73.18, 29.43),
        "tts": (10.05, 23.93, 5.67),
        "clone": (74.17, 182.47, 14.10),
    },
    "A100": {
        "music": (34.43, 52.91, 28.68),
        "tts": (5.11, 6.92, 3.74),
        "clone": (55.12, 77.44, 32.79),
    },
    "H100": {
        "music": (34.18, 56.71, 30.26),
        "tts": (4.36, 6.7, 2.33),
        "clone": (82.15, 113.92, 50.37),
    },
}


@dataclass
class Row:
    """One measured (service, task); the shape of ``chorus bench --json``."""

    service: str
    task: str  # "generation" or "evaluation"
    duration_s: float
    avg_s: float
    max_s: float
    min_s: float
    rtf: float
    peak_rss_mb: float
    cpu: str = field(default_factory=lambda: cpu_model())
    cpu_kind: str = field(default_factory=lambda: cpu_kind())
    vector_extensions: list[str] = field(default_factory=lambda: vector_extensions())


# The vector extensions that change our speed most (CTranslate2's int8 GEMM, DNSMOS's sgemm).
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8")


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def vector_extensions() -> list[str]:
    """Which of ``VECTOR_FLAGS`` this CPU has, from /proc/cpuinfo (empty elsewhere)."""
    flags = set(_cpuinfo_field("flags").split())
    return [f for f in VECTOR_FLAGS if f in flags]


def cpu_kind() -> str:
    """ "AVX-512" or "AVX2-only" (or "no AVX2"): the line our speed claims are split on."""
    found = vector_extensions()
    if "avx512f" in found:
        return "AVX-512"
    return "AVX2-only" if "avx2" in found else "no AVX2"


def cpu_vendor() -> str:
    """ "intel", "amd" or "other", from /proc/cpuinfo: two CPUs of one kind but different
    makers differ in speed (CTranslate2 uses Intel MKL on one, oneDNN on the other)."""
    vendor = _cpuinfo_field("vendor_id")
    return {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(vendor, "other")


def section(name: str) -> str:
    """The report section for ``name`` on this kind of machine: speed tables are kept per
    maker and kind (``services-intel-avx512`` beside ``services-amd-avx512`` and
    ``services-amd-avx2``), so one machine never overwrites another's figures."""
    slug = {"AVX-512": "avx512", "AVX2-only": "avx2"}.get(cpu_kind(), "other")
    return f"{name}-{cpu_vendor()}-{slug}"


def _cpuinfo_field(name: str) -> str:
    """The value of the first ``name : value`` line of /proc/cpuinfo ("" if none)."""
    for line in _cpuinfo().splitlines():
        if line.startswith(name):
            return line.split(":", 1)[1].strip()
    return ""


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def machine() -> str:
    """CPU model, its vector extensions, cores and GPU (if any), for every table heading."""
    gpu = "no GPU"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            gpu = out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    extensions = " ".join(vector_extensions()) or "none detected"
    return f"{cpu_model()} ({cpu_kind()}: {extensions}), {os.cpu_count()} cores, {gpu}"


def _stdout_to_stderr() -> None:
    """Pool initializer: whatever a measuring process or a C library in it prints goes to
    stderr, so that ``--json`` output on stdout stays parseable. Also gives tqdm a thread
    lock: faster-whisper makes a (disabled) bar per call, and tqdm's default lock is a
    semaphore that a terminated pool worker leaks (a resource_tracker warning at exit).
    Third-party deprecation noise is silenced as in `chorus` itself."""
    import threading

    from tqdm import tqdm

    from chorus.config import quiet_dependency_warnings

    quiet_dependency_warnings()

    sys.stdout.flush()
    os.dup2(2, 1)
    tqdm.set_lock(threading.RLock())


def _pool(ctx):
    return ctx.Pool(1, initializer=_stdout_to_stderr)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    fn()  # warm-up: first calls pay for lazy initialisation, not for the work
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def _runtime():
    """A scoring runtime; callers apply its thread policy once their models are loaded,
    as ``chorus validator`` does."""
    from chorus.scoring.runtime import ScoringRuntime

    return ScoringRuntime()


def measure(service: str, duration: float, runs: int) -> list[dict]:
    """Run in a child process: time generation, then evaluation of what was generated."""
    runtime = _runtime()
    case = get(service).bench_case(duration, runtime)
    runtime.limit_threads()
    generate, evaluate = case.generate, case.evaluate
    print(
        f"[{service}] generating {duration:g} s of audio, {runs} runs + warm-up",
        file=sys.stderr,
        flush=True,
    )
    gen_times, (samples, rate) = _timed(generate, runs)
    produced = len(samples) / rate
    print(f"[{service}] evaluating {produced:.1f} s of audio", file=sys.stderr, flush=True)
    eval_times, score = _timed(lambda: evaluate(samples, rate), runs)
    print(f"[{service}] done: score {score.score:.3f}", file=sys.stderr, flush=True)
    rss = peak_rss_mb()
    rows = []
    for task, times in (("generation", gen_times), ("evaluation", eval_times)):
        avg = float(np.mean(times))
        rows.append(
            asdict(
                Row(
                    service,
                    task,
                    round(produced, 2),
                    round(avg, 3),
                    round(max(times), 3),
                    round(min(times), 3),
                    round(avg / produced, 4),
                    round(rss, 1),
                )
            )
        )
    return rows


def run_bench(services: list[str], duration: float | None, runs: int) -> list[Row]:
    ctx = multiprocessing.get_context("spawn")
    rows: list[Row] = []
    for service in services:
        seconds = duration or get(service).bench_seconds
        with _pool(ctx) as pool:
            rows += [Row(**r) for r in pool.apply(measure, (service, seconds, runs))]
    return rows


# -- Markdown in the seed's format ---------------------------------------------------------


def markdown(rows: list[Row], where: str) -> str:
    ev = [r for r in rows if r.task == "evaluation"]
    gen = [r for r in rows if r.task == "generation"]
    out = [f"Measured on: {where}.", ""]
    if ev:
        out += [
            "#### Evaluation (validators)",
            "| Service | Average Evaluation Time (seconds) | Duration of Audio (seconds) | "
            "Maximum Time (seconds) | Minimum Time (seconds) | Real-time factor | Peak RSS (MB) |",
            "|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {get(r.service).label} | {r.avg_s:.2f} | {r.duration_s:g} | {r.max_s:.2f} | "
            f"{r.min_s:.2f} | {r.rtf:.3f} | {r.peak_rss_mb:.0f} |"
            for r in ev
        ]
        out.append("")
    if gen:
        out += [
            "#### Generation (miners)",
            "| Machine | Service | Average Time (s) | Maximum Time (s) | Minimum Time (s) | "
            "Duration of Audio (s) | Real-time factor | Peak RSS (MB) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| this CPU | {get(r.service).title} | {r.avg_s:.2f} | {r.max_s:.2f} | "
            f"{r.min_s:.2f} | {r.duration_s:g} | {r.rtf:.3f} | {r.peak_rss_mb:.0f} |"
            for r in gen
        ]
        out.append("")
    out += comparison(rows)
    return "\n".join(out)


def comparison(rows: list[Row]) -> list[str]:
    """Ours beside the seed's best GPU for each (service, task) the seed measured."""
    out = [
        "#### Against the seed's best GPU",
        "| Service | Task | This CPU (s) | Seed's best (s) | Seed GPU | Ours / theirs |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        table = SEED_EVALUATION if r.task == "evaluation" else SEED_GENERATION
        theirs = [(gpu, t[r.service][0]) for gpu, t in table.items() if r.service in t]
        if not theirs:
            continue
        gpu, best = min(theirs, key=lambda item: item[1])
        out.append(
            f"| {get(r.service).label} | {r.task} | {r.avg_s:.2f} | {best:.2f} | "
            f"{gpu} | {r.avg_s / best:.2f} |"
        )
    return out + [""]


def write_report(path: Path, section: str, body: str) -> None:
    """Replace (or append) the section between markers in ``path``, keeping the rest."""
    start, end = f"<!-- bench:{section} -->", f"<!-- /bench:{section} -->"
    block = f"{start}\n{body}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# The validator rounds timed: answers of at most 10 s (a validator's usual prompts of one to
# three sentences), of at most 30 s (the seed's length; one Whisper window each), and of
# just over 30 s (a prompt sized to 30 s at CHARS_PER_SECOND, which Piper reads in about
# 30.8 s: each answer needs a second window).
VALIDATOR_ROUNDS = ((10.0, True), (30.0, True), (30.0, False))


def prompt_within(tts, seconds: float, seed: int = 3) -> str:
    """A prompt that ``tts`` reads in ``seconds`` - 3 to ``seconds`` - 0.3 seconds (the
    margin: one text's readings vary by about 0.3 s)."""
    from chorus.prompts import speech_text

    for attempt in range(seed, seed + 100):
        text = speech_text(seconds - 2, seed=attempt)
        samples, rate = tts.synthesize(text)
        if seconds - 3 <= len(samples) / rate <= seconds - 0.3:
            return text
    raise RuntimeError(f"no prompt read in just under {seconds} s")


def validator_round(miners: int = 10, seconds: float = 30.0, within: bool = True) -> dict:
    """Run in a child process: every evaluator loaded (as a validator testing all three
    services holds them), then one round of ``miners`` answers of ``seconds`` of TTS (at
    most, or ``within`` False: a prompt sized to ``seconds``, read in a little more) scored
    end to end the way the validator does it: decode, copy check, then the round's answers
    scored together (``chorus.services.evaluate_round``) and stored. The same answers are
    then scored one at a time (``Validator.score``), for the per-answer cost without
    batching and the largest difference between the two scores of an answer."""
    import tempfile

    from chorus import audio
    from chorus.auth import create_wallet
    from chorus.chain import Neuron
    from chorus.client import CallResult
    from chorus.generation.tts import PiperTTS
    from chorus.prompts import speech_text
    from chorus.protocol import AudioResponse
    from chorus.services import Task, evaluate_round, load_scoring, registry
    from chorus.services.tts import SpeechChallenge, TTSRequest
    from chorus.store import ValidatorStore
    from chorus.validator import Validator, ValidatorSettings

    tmp = Path(tempfile.mkdtemp())
    evaluators = load_scoring(list(registry()))
    print(f"[validator] evaluators loaded; making {miners} answers", file=sys.stderr, flush=True)
    validator = Validator(
        create_wallet("bench", path=str(tmp)),
        None,
        ValidatorStore(tmp / "state.sqlite"),
        evaluators,
        ValidatorSettings(services=("tts",), seed=1),
    )
    tts = PiperTTS()
    text = prompt_within(tts, seconds) if within else speech_text(seconds, seed=3)
    task = Task("tts", text, TTSRequest(text=text), SpeechChallenge(text))
    results = []
    for uid in range(miners):
        samples, rate = tts.synthesize(text)
        answer = AudioResponse(
            audio=audio.encode(samples, rate, "flac"),
            format="flac",
            sample_rate=rate,
            duration_s=len(samples) / rate,
            model="piper",
            synthesis_s=0.0,
        )
        neuron = Neuron(uid, f"hk{uid}", "ck", "127.0.0.1", 1, 0.0, False)
        results.append((neuron, CallResult(200, 0.1 * uid, answer=answer)))
    start, cpu = time.perf_counter(), time.process_time()
    received = [validator.receive(n, task, r) for n, r in results]
    validator.reject_copies(1, received)
    scorable = [(a, clip) for a, clip in received if clip is not None and a.error is None]
    scored = evaluate_round(
        validator.evaluators[task.service], [(x, r, task.challenge) for _, (x, r) in scorable]
    )
    for (answer, (samples, rate)), result in zip(scorable, scored, strict=True):
        answer.score, answer.result = float(result.score), result
        answer.eval_s = round(result.seconds, 4)
        answer.audio = audio.encode_bytes(samples, rate, "flac")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    scores = [a.score for a, _ in received]
    in_round = [a.score for a, _ in scorable]
    print("[validator] round scored; now one answer at a time", file=sys.stderr, flush=True)
    start, single_cpu = time.perf_counter(), time.process_time()
    for answer, clip in scorable:
        validator.score(answer, task, clip)
    one_by_one, single_cpu = time.perf_counter() - start, time.process_time() - single_cpu
    durations = [len(x) / r for _, (x, r) in scorable] or [0.0]
    return {
        "miners": miners,
        "audio_s": f"{min(durations):.1f}-{max(durations):.1f}",
        "round_s": round(elapsed, 2),
        "per_answer_s": round(elapsed / miners, 2),
        "cpu_per_answer_s": round(cpu / miners, 2),
        "single_per_answer_s": round(one_by_one / max(len(scorable), 1), 2),
        "single_cpu_per_answer_s": round(single_cpu / max(len(scorable), 1), 2),
        "max_score_diff": max(
            (abs(a.score - s) for (a, _), s in zip(scorable, in_round, strict=True)), default=0.0
        ),
        "mean_score": round(float(np.mean(scores)), 3),
        "peak_rss_mb": round(peak_rss_mb()),
    }


def dnsmos_comparison() -> list[dict]:
    """Run in a child process: our DNSMOS against ``speechmos.dnsmos.run`` on Piper speech
    of about 5, 30 and 60 s (the same clips for both; fastest of 5 runs each)."""
    from chorus import audio
    from chorus.generation.tts import PiperTTS
    from chorus.prompts import speech_text
    from chorus.scoring.quality import DNSMOS, RATE, compare_with_speechmos

    runtime = _runtime()
    tts, rows, dnsmos = PiperTTS(seed=0), [], DNSMOS(runtime)
    runtime.limit_threads()
    for seconds in (5, 30, 60):
        samples, rate = tts.synthesize(speech_text(seconds, seed=seconds))
        clip = audio.resample(samples, rate, RATE)
        print(f"[dnsmos] {len(clip) / RATE:.0f} s clip", file=sys.stderr, flush=True)
        rows.append(
            {
                "seconds": round(len(clip) / RATE, 1),
                "backend": dnsmos.backend,
                **compare_with_speechmos([clip], dnsmos, repeats=5),
            }
        )
    return rows


@dataclass
class AsrClip:
    """One clip of the ASR corpus: the text read, how it was read, and 16 kHz audio."""

    text: str
    condition: str
    audio: np.ndarray


def asr_corpus(short: int = 24, long: int = 12, seed: int = 23) -> list[AsrClip]:
    """Piper readings of ``short`` validator-like prompts (1-3 sentences) and ``long`` texts
    of 14-45 s, each clean, through 20 dB noise, reverberation (RT60 0.6 s), the telephone
    band and 8 kHz mu-law; a third of the clean readings also followed by 2.5 s of silence,
    2.5 s of faint noise or 4 s of noise 20 dB under the speech."""
    from chorus import degrade
    from chorus.audio import SPEECH_RATE, resample
    from chorus.generation.tts import PiperTTS
    from chorus.prompts import SpeechPrompts, speech_text

    piper, prompts = PiperTTS(seed=seed), SpeechPrompts(seed=seed)
    rng = np.random.default_rng(seed)
    texts = [prompts.next(sentences=int(rng.choice([1, 2, 2, 3]))).text for _ in range(short)]
    texts += [speech_text(s, seed=seed + i) for i, s in enumerate(np.linspace(14, 45, long))]
    clips = []
    for i, text in enumerate(texts):
        samples, rate = piper.synthesize(text)
        x, r = resample(samples, rate, SPEECH_RATE).astype(np.float32), SPEECH_RATE
        noise = np.random.default_rng(i).standard_normal(4 * r).astype(np.float32)
        level = float(np.sqrt(np.mean(x**2)))
        tails = {
            "2.5 s of silence after": np.zeros(int(2.5 * r), np.float32),
            "2.5 s of faint noise after": 0.01 * level * noise[: int(2.5 * r)],
            "4 s of noise after (-20 dB)": 0.1 * level * noise,
        }
        tail = list(tails)[i % 3]
        readings = {
            "clean": (x, r),
            "noise 20 dB SNR": degrade.white_noise(x, r, 20, seed=i),
            "reverb RT60 0.6 s": degrade.reverb(x, r, 0.6, seed=i),
            "telephone band": degrade.telephone(x, r),
            "8 kHz mu-law": degrade.mu_law(x, r),
            tail: (np.concatenate([x, tails[tail]]), r),
        }
        for condition, (y, rate) in readings.items():
            y = resample(np.asarray(y, np.float32), rate, SPEECH_RATE).astype(np.float32)
            clips.append(AsrClip(text, condition, y))
    return clips


def asr_accuracy(short: int = 24, long: int = 12) -> list[dict]:
    """Run in a child process: WER and CPU time of our ``Transcriber`` (a round of one)
    against faster-whisper's own greedy decoding (``Transcriber.DECODE``, whole 30 s
    windows) on ``asr_corpus``, clip by clip, alternately."""
    from chorus.scoring.asr import ASR_RATE, Transcriber
    from chorus.text import word_error_rate

    runtime = _runtime()
    transcriber = Transcriber(runtime)
    runtime.limit_threads()
    print("[asr] making the corpus", file=sys.stderr, flush=True)
    clips = asr_corpus(short, long)
    rows = []
    for n, clip in enumerate(clips):
        cpu = time.process_time()
        ours = transcriber.transcribe(clip.audio, ASR_RATE)
        cpu, theirs_cpu = time.process_time() - cpu, time.process_time()
        segments, _ = transcriber.model.transcribe(clip.audio, **Transcriber.DECODE)
        theirs = " ".join(s.text.strip() for s in segments).strip()
        theirs_cpu = time.process_time() - theirs_cpu
        rows.append(
            {
                "condition": clip.condition,
                "long": len(clip.audio) / ASR_RATE > 16,
                "ours": word_error_rate(clip.text, ours),
                "theirs": word_error_rate(clip.text, theirs),
                "ours_cpu": cpu,
                "theirs_cpu": theirs_cpu,
            }
        )
        if (n + 1) % 20 == 0 or n + 1 == len(clips):
            print(f"[asr] {n + 1}/{len(clips)} clips", file=sys.stderr, flush=True)
    return rows


def asr_bench(short: int = 24, long: int = 12) -> str:
    ctx = multiprocessing.get_context("spawn")
    with _pool(ctx) as pool:
        rows = pool.apply(asr_accuracy, (short, long))
    groups: dict[str, list[dict]] = {"all": rows}
    groups["up to 16 s"] = [r for r in rows if not r["long"]]
    groups["over 16 s"] = [r for r in rows if r["long"]]
    for r in rows:
        groups.setdefault(r["condition"], []).append(r)
    groups = {name: group for name, group in groups.items() if group}
    lines = [
        "#### Speech recognition: ours against faster-whisper's greedy decoding",
        "Whisper tiny.en (int8) on Piper readings (`chorus.bench.asr_corpus`): WER against "
        "the text read, and process CPU seconds per clip, of our `Transcriber` (encoder input "
        "cut to each window's audio and a margin; a clip's last window finished in place) "
        "and of faster-whisper's `transcribe` under `Transcriber.DECODE` (whole 30 s windows).",
        "",
        "| Clips | Count | WER ours | WER faster-whisper | CPU ours (s) | CPU faster-whisper (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, group in groups.items():
        mean = {k: float(np.mean([r[k] for r in group])) for k in rows[0] if k != "condition"}
        lines.append(
            f"| {name} | {len(group)} | {mean['ours']:.4f} | {mean['theirs']:.4f} | "
            f"{mean['ours_cpu']:.2f} | {mean['theirs_cpu']:.2f} |"
        )
    return "\n".join([*lines, ""])


def validator_bench() -> str:
    ctx = multiprocessing.get_context("spawn")
    rounds = []
    for seconds, within in VALIDATOR_ROUNDS:
        with _pool(ctx) as pool:
            rounds.append(pool.apply(validator_round, (10, seconds, within)))
    with _pool(ctx) as pool:
        dnsmos = pool.apply(dnsmos_comparison)
    lines = [
        "#### Validator throughput",
        "The round's answers are scored together (`chorus.services.evaluate_round`); then "
        "the same answers one at a time, as before (wall and process CPU time per answer), "
        "with the largest difference between an answer's two scores.",
        "",
        "| Answers in the round | Audio per answer (s) | Round scored in (s) | Per answer (s) "
        "| CPU per answer (s) | One at a time: per answer (s) | One at a time: CPU (s) "
        "| Max score difference | Mean score | Peak RSS, every evaluator loaded (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['miners']} | {r['audio_s']} | {r['round_s']} | {r['per_answer_s']} | "
        f"{r['cpu_per_answer_s']} | {r['single_per_answer_s']} | "
        f"{r['single_cpu_per_answer_s']} | {r['max_score_diff']:.1e} | "
        f"{r['mean_score']} | {r['peak_rss_mb']} |"
        for r in rounds
    ]
    lines += [
        "",
        "#### DNSMOS: ours against `speechmos.dnsmos.run` on the same clips",
        f"Our shared convolutions ran in {dnsmos[0]['backend']} (chosen at load on this CPU).",
        "",
        "| Clip (s) | max diff P.808 | OVRL | SIG | BAK | Speed-up (CPU time) | Speed-up (wall) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {d['seconds']} | {d['p808']:.4f} | {d['ovrl']:.4f} | {d['sig']:.4f} | "
        f"{d['bak']:.4f} | {d['speedup_cpu']:.1f}x | {d['speedup_wall']:.1f}x |"
        for d in dnsmos
    ]
    return "\n".join([*lines, ""])


def voices_table() -> str:
    """Run in a child process: clone every voice of the built-in bank and score it."""
    from chorus.generation.clone import WorldClone
    from chorus.scoring.clone import CloneEvaluator, format_voice_table, voice_table
    from chorus.voices import VoiceBank

    bank = VoiceBank.builtin()
    if not bank.voices:
        raise CallerError("no Festival voices installed; see `make system-packages`")
    print(f"[voices] cloning {len(bank.voices)} voices", file=sys.stderr, flush=True)
    evaluator = CloneEvaluator()
    backend = WorldClone(tts=evaluator.stock, speaker=evaluator.speaker)
    return format_voice_table(voice_table(backend, evaluator, bank))


def voices_bench() -> str:
    ctx = multiprocessing.get_context("spawn")
    with _pool(ctx) as pool:
        table = pool.apply(voices_table)
    return "\n".join(
        [
            "#### Voice cloning per voice (the `world` backend on the built-in voice bank)",
            "Similarity is the Resemblyzer cosine to the reference; stock Piper is the same text "
            "unconverted; WER by Whisper tiny.en; score by the validator's CloneEvaluator.",
            "",
            table,
            "",
        ]
    )


def load_bench(requests: int, flood_requests: int = 0) -> str:
    """A real miner process under ``requests`` concurrent signed TTS requests; then, when
    ``flood_requests`` is set, that many requests from a key not on the subnet, 32 at a
    time, twice: alone, then while an honest validator keeps asking (chorus.load.flood)."""
    import asyncio
    import tempfile

    from chorus.load import HONEST_EVERY_S, MinerProcess, cpu_s, flood, hammer, rss_mb

    with tempfile.TemporaryDirectory() as tmp, MinerProcess(Path(tmp)) as miner:
        idle = rss_mb(miner.proc.pid)
        print(f"[load] {requests} concurrent requests, queue {miner.max_queue}", file=sys.stderr)
        r = asyncio.run(hammer(miner.url, miner.hotkey, miner.validator, requests, requests))
        peak = rss_mb(miner.proc.pid, "VmHWM")
        f = None
        if flood_requests:
            print(f"[load] flood: {flood_requests} requests, unregistered key", file=sys.stderr)
            pid = miner.proc.pid
            f = asyncio.run(
                flood(
                    miner.url,
                    miner.hotkey,
                    ("stranger", str(miner.dir / "wallets")),
                    miner.validator,
                    flood_requests,
                    cpu=lambda: cpu_s(pid),
                    miner_pid=pid,
                )
            )
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items()))
    rows = [
        f"#### Miner under load: {requests} concurrent signed TTS requests"
        f" (queue {miner.max_queue})",
        "| Answers | p50 (s) | p90 (s) | p99 (s) | max (s) | 429 p50 (s) "
        "| Throughput (answers/s) | Wall (s) | RSS idle / peak (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {statuses} | {r.latency_p50_s} | {r.latency_p90_s} | {r.latency_p99_s} | "
        f"{r.latency_max_s} | {r.rejected_p50_s} | {r.throughput_rps} | {r.seconds} | "
        f"{idle:.0f} / {peak:.0f} |",
        "",
    ]
    if f is not None:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(f.statuses.items()))
        honest = ", ".join(f"{k}: {v}" for k, v in sorted(f.honest_statuses.items()))
        rows += [
            f"#### Flood: {f.requests} signed requests from an unregistered key, "
            f"{f.concurrency} at a time; then again, from a process of its own at the lowest "
            f"priority, while a validator asks every {HONEST_EVERY_S:g} s"
            + (" (miner on one CPU, the clients on the others)" if f.pinned else ""),
            "| Answers | Refusal p50 (s) | Refusal p90 (s) | Wall (s) | Miner CPU (s) "
            "| Validator alone (s) | Validator during the flood (s) | Validator answers |",
            "|---|---|---|---|---|---|---|---|",
            f"| {answers} | {f.refused_p50_s} | {f.refused_p90_s} | {f.seconds} | "
            f"{f.miner_cpu_s} | {f.honest_alone_s} | {f.honest_during_s} "
            f"({f.honest_during} during) | {honest} |",
            "",
        ]
    return "\n".join(rows)


def agreement_bench(rounds: int = 6, miners: int = 5) -> str:
    """A whole local network (``miners`` miners: piper, degraded, hang, then degraded and
    piper again, so two honest miners compete; 3 honest validators with different stakes
    and their own prompts; one random-weights validator) run for ``rounds`` rounds: do
    the honest validators agree, and what does consensus pay each?"""
    import tempfile

    from chorus.localnet import LocalnetSettings, run_localnet

    with tempfile.TemporaryDirectory() as tmp:
        settings = LocalnetSettings(
            miners=miners, validators=3, rounds=rounds, out=tmp, lazy="random", base_port=18391
        )
        with contextlib.redirect_stdout(sys.stderr):  # the run's own lines are progress
            report = run_localnet(settings)

    def num(x: float | None) -> str:
        return "-" if x is None else format(x, ".3f")

    rows = [
        f"#### Validator agreement: {rounds} rounds, {miners} miners "
        f"({', '.join(m.kind for m in report.miners)}), 3 honest validators + 1 random",
        "| Validator | Kind | Stake | Validator trust (last epoch) | Mean over the run "
        "| Dividends |",
        "|---|---|---|---|---|---|",
    ]
    for v in report.validators:
        rows.append(
            f"| {v.name} | {v.kind} | {v.stake:g} | {v.validator_trust:.3f} | "
            f"{v.mean_validator_trust:.3f} | {v.dividends:.3f} |"
        )
    rows += [
        "",
        "| Honest validators | Spearman rank correlation of their last weights | Overlap |",
        "|---|---|---|",
    ]
    rows += [f"| {a.a} ~ {a.b} | {num(a.spearman)} | {a.overlap:.3f} |" for a in report.agreement]
    rows += ["", "| Miner | Kind | Score (validator-0) | Incentive |", "|---|---|---|---|"]
    rows += [f"| {m.uid} | {m.kind} | {num(m.score)} | {m.incentive:.3f} |" for m in report.miners]
    rows += [
        "",
        f"Honest miners' share of the miners' incentive: "
        f"{report.honest_incentive_share:.3f} ({report.epochs} epochs in the run).",
        "",
    ]
    return "\n".join(rows)


def main(
    service: str,
    duration: float | None,
    runs: int,
    as_json: bool,
    output: str | None,
    load: int = 0,
    validator: bool = False,
    voices: bool = False,
    agreement: bool = False,
    flood: int = 0,
    asr: bool = False,
) -> int:
    # Every setting is checked before anything loads or starts.
    if load < 0 or flood < 0:
        raise CallerError("--load and --flood must be 0 or more")
    if runs < 1:
        raise CallerError("--runs must be at least 1")
    if duration is not None and not 1 <= duration <= 120:
        raise CallerError("--duration must be between 1 and 120 seconds")
    if output:
        check_output_file(output, "--output")
    for wanted, name, make in (
        (validator, section("validator"), validator_bench),
        (asr, section("asr"), asr_bench),
        (voices, "voices", voices_bench),
        (agreement, "agreement", agreement_bench),
    ):
        if wanted:
            table = make()
            print(table)
            if output:
                write_report(Path(output), name, f"Measured on: {machine()}.\n\n{table}")
                print(f"wrote {output}")
            return 0
    if load:
        table = load_bench(load, flood_requests=flood)
        print(table)
        if output:
            write_report(Path(output), "load", f"Measured on: {machine()}.\n\n{table}")
            print(f"wrote {output}")
        return 0
    from chorus.services import registry

    services = list(registry()) if service == "all" else [get(service).name]
    rows = run_bench(services, duration, runs)
    where = machine()
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(markdown(rows, where))
    if output:
        write_report(Path(output), section("services"), markdown(rows, where))
        print(f"wrote {output}")
    return 0
