"""Speech quality: Microsoft DNSMOS (P.835 SIG/BAK/OVRL and P.808 MOS) from the ONNX files
that ``speechmos`` ships, several times faster than ``speechmos.dnsmos.run``.

speechmos scores 9.01 s windows that start every second, each with its own onnxruntime call.
Windows overlap by 8 s, and 95% of the cost is the P.835 model's four full-resolution 3x3
convolutions, which only see one STFT frame either side per layer. So we split that model
after its first pooling: the conv stack runs once over the clip's frames (a window starts
every 100 frames), and each window's only differences, the 4 frames at either edge where its
own zero padding is seen, are recomputed from 8-frame runs. The same goes one level further
for both models: their convolutions up to the third pooling (the "middle") run once over
the clip too, and a window's middle is its slice, with 3 rows at either edge recomputed
from a small patch of the window's own input. P.808 normalises each window by its own
peak, so it shares only across windows with equal peaks (often most of them: the loudest
frame is in many windows). Only the last pooling, one conv and the dense heads run per
window. With fp32 this reproduces speechmos to ~1e-6 MOS. Only audio that makes a single
window (9 to about 11 s, once speechmos has doubled shorter clips) has nothing to share.

The shared convolutions run in fp32 either way: in onnxruntime, or by Winograd's algorithm
(``chorus.scoring.winograd``: 5x fewer multiplications, same result to float rounding),
whichever measures faster at load on this CPU (on an Intel Xeon with AVX-512, Winograd took
about two thirds of onnxruntime's time). Everything else runs in onnxruntime.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import cache, partial
from importlib import resources

import numpy as np

from chorus.audio import SPEECH_RATE, resample, to_mono_float
from chorus.scoring.runtime import ScoringRuntime

RATE = SPEECH_RATE
WINDOW = 9.01  # seconds, as DNSMOS was trained
WINDOW_SAMPLES = int(WINDOW * RATE)
HOP_SAMPLES = RATE
FRAME_HOP = 160  # STFT hop of both models: a window starts every 100 frames
FRAMES = 900  # frames per window, in both models
WINDOW_HOP_FRAMES = HOP_SAMPLES // FRAME_HOP
HALO = 4  # four 3x3 convs (padding 1) before the first pooling: each reaches a frame further
POOL = 2  # the first pooling halves time and frequency; windows start on even frames
# Both models' middles (up to their third pooling, where windows, 25 rows apart there, stop
# pairing the same rows) are shared too. A row there is 4 frames and sees at most 11 frames
# before it and 14 after: chunks take MID_HALO frames of context. A window's own edges (its
# zero padding, and in P.835 its 2 pooled edge rows, in P.808 its edge frames) change
# EDGE_ROWS rows of its middle at either end; patches of the window's own input give them:
# P835_PATCH pooled rows, or P808_PATCH frames.
MID_POOL = 4
MID_HALO = 12
EDGE_ROWS = 3
P835_PATCH = 12
P808_PATCH = 24
# Most frames per shared conv-stack call, per backend. For onnxruntime it bounds the
# activations its arena keeps: 600 frames cost the validator ~120 MB more peak memory than
# 150, at the same speed. Winograd streams its layers in a few MB, so its chunks are only
# the workers' shares of the clip: each recomputes MID_HALO frames either side.
CHUNK = {"onnxruntime": 150, "winograd": 1000}
MAX_BATCH = 8  # windows per tail / P.808 call
# speechmos hears only the windows ``window_starts`` keeps: those starting at 0-6 s of any
# clip of 16 to 33 s, so the second half of a 29 s answer was never heard (0 dB noise from
# 16 s on cost it nothing). Validators score an answer of more than PART_S by the windows
# at every second of it, in "parts" of PART_WINDOWS consecutive windows (what speechmos
# averages for a clip of PART_S), and keep each measure's lowest part (``score_whole``).
PART_S = 16.0
PART_WINDOWS = 7

# Tensor names in sig_bak_ovr.onnx: the frames (B, T, 320) feeding its STFT, the output of
# its first pooling (B, 32, T / 2, 80), where we split it, and the model's output.
P835_FRAMES = "mos_estimator_logpow/concat:0"
P835_SPLIT = "mos_estimator_logpow/conv2d_3/Relu:0_pooling0"
P835_MID = "mos_estimator_logpow/conv2d_5/Relu:0"  # (B, 32, T / 4, 40), before a pooling
P835_OUT = "Identity:0"
P835_SPECTRUM = "mos_estimator_logpow/truediv:0"  # (B, T, 161) log10 power
P835_CONVS = ("conv2d", "conv2d_1", "conv2d_2", "conv2d_3")  # before the split
# In model_v8.onnx (P.808): its input (B, 900, 120) and the same kind of middle, before its
# third pooling: (B, 32, T / 4, 30).
P808_IN = "input_1"
P808_MID = "mos_estimator_small_1/conv2d_8/Relu:0"
P808_OUT = "Identity:0"
BACKENDS = ("onnxruntime", "winograd")

# P.835 raw outputs -> MOS, the non-personalised fits of the DNSMOS reference script.
P835_FITS = {
    "sig": np.poly1d([-0.08397278, 1.22083953, 0.0052439]),
    "bak": np.poly1d([-0.13166888, 1.60915514, -0.39604546]),
    "ovrl": np.poly1d([-0.06766283, 1.11546468, 0.04602535]),
}

# P.808 log-mel features, as speechmos's librosa call computes them (centred frames).
MEL_FFT = 321
MEL_BANDS = 120


def tile(audio: np.ndarray) -> np.ndarray:
    """speechmos doubles short audio until it fills one window."""
    if audio.size == 0:
        raise ValueError("DNSMOS needs at least one sample")
    while audio.size < WINDOW_SAMPLES:
        audio = np.append(audio, audio)
    return audio


def window_starts(size: int) -> list[int]:
    """Start (in seconds) of each window speechmos scores in ``size`` samples of tiled audio.
    Its float arithmetic, ``int((i + 9.01) * 16000)``, leaves many windows one sample short
    and skips them (30 s gives windows 0-6 only); we keep exactly the ones it keeps."""
    count = int(np.floor(size / RATE) - WINDOW) + 1
    ends = (min(int((i + WINDOW) * HOP_SAMPLES), size) for i in range(count))
    return [i for i, end in enumerate(ends) if end - i * HOP_SAMPLES >= WINDOW_SAMPLES]


def part_starts(size: int) -> list[int]:
    """Where (in samples) each part of ``score_whole`` starts in ``size`` samples: one part
    for a clip of up to PART_S, else one at every second that PART_WINDOWS windows fit from
    (the last window ending at most a second before the clip's end)."""
    if size <= int(PART_S * RATE):
        return [0]
    return [g * HOP_SAMPLES for g in range(whole_windows(size) - PART_WINDOWS + 1)]


def whole_windows(size: int) -> int:
    """How many windows start at a whole second of ``size`` samples and fit in them."""
    return (size - WINDOW_SAMPLES) // HOP_SAMPLES + 1


def windows(audio: np.ndarray) -> np.ndarray:
    """The (n, 144160) analysis windows speechmos scores (after tiling short audio)."""
    audio = tile(audio)
    starts = window_starts(audio.size)
    return np.stack([audio[i * HOP_SAMPLES : i * HOP_SAMPLES + WINDOW_SAMPLES] for i in starts])


def groups(starts: Sequence[int]) -> list[list[int]]:
    """Runs of consecutive window starts: each run shares one conv-stack pass."""
    runs: list[list[int]] = []
    for s in starts:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs


def stft_frames(audio: np.ndarray, first: int, stop: int) -> np.ndarray:
    """(stop - first, 320) P.835 input frames: frame g is samples [160 g, 160 g + 320)."""
    span = audio[first * FRAME_HOP : stop * FRAME_HOP + FRAME_HOP]
    return np.lib.stride_tricks.sliding_window_view(span, 2 * FRAME_HOP)[::FRAME_HOP]


@cache
def _mel_constants() -> tuple[np.ndarray, np.ndarray]:
    import librosa

    window = librosa.filters.get_window("hann", MEL_FFT, fftbins=True).astype(np.float32)
    basis = librosa.filters.mel(sr=RATE, n_fft=MEL_FFT, n_mels=MEL_BANDS)
    return window, basis.T.astype(np.float32)


def _mel_power(frames: np.ndarray) -> np.ndarray:
    """(..., 321) raw frames -> (..., 120) mel power, as librosa.feature.melspectrogram."""
    window, basis = _mel_constants()
    spectrum = np.fft.rfft(frames * window, axis=-1)
    return (spectrum.real**2 + spectrum.imag**2).astype(np.float32) @ basis


def p808_inputs(mel: np.ndarray) -> np.ndarray:
    """(n, 900, 120) mel power -> speechmos's P.808 input: dB of each window's own peak,
    floored 80 dB below it (librosa.power_to_db(ref=np.max)), then (dB + 40) / 40."""
    peak = mel.max(axis=(1, 2), keepdims=True)
    db = 10 * np.log10(np.maximum(mel, 1e-10)) - 10 * np.log10(np.maximum(peak, 1e-10))
    db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - 80)
    return ((db + 40) / 40).astype(np.float32)


def p808_mel(audio: np.ndarray, starts: Sequence[int]) -> np.ndarray:
    """(n, 900, 120) mel power of the windows at ``starts`` (seconds) of tiled audio.

    speechmos runs librosa on ``window[:-160]`` with centred 321-sample frames: frame j is
    samples [160 j - 160, 160 j + 161) of the window, zero outside it. Frames 1-898 are
    therefore the clip's own, shared by overlapping windows and computed once; frames 0
    and 899 see the window's zero padding and are computed per window."""
    half = MEL_FFT // 2
    padded = np.concatenate([np.zeros(half, np.float32), audio, np.zeros(half + 1, np.float32)])
    wanted = np.arange(FRAMES) + np.asarray(starts)[:, None] * WINDOW_HOP_FRAMES
    centres = np.unique(wanted)
    frames = np.lib.stride_tricks.sliding_window_view(padded, MEL_FFT)[centres * FRAME_HOP]
    mel = _mel_power(frames)[np.searchsorted(centres, wanted)]
    span = FRAMES * FRAME_HOP
    edges = np.zeros((len(starts), 2, MEL_FFT), np.float32)
    for n, s in enumerate(starts):
        segment = audio[s * HOP_SAMPLES : s * HOP_SAMPLES + span]
        edges[n, 0, half:] = segment[: half + 1]
        edges[n, 1, :-1] = segment[span - MEL_FFT + 1 :]
    mel[:, [0, -1]] = _mel_power(edges)
    return mel


def _subgraph(model, first: str, last: str, rank: int) -> bytes:
    """The nodes of ``model`` between tensors ``first`` and ``last``, with every dimension of
    the input left free (the P.835 front then runs on any number of frames)."""
    from onnx import TensorProto, helper

    all_nodes = list(model.graph.node)
    producers = {out: i for i, node in enumerate(all_nodes) for out in node.output}
    wanted, todo = set(), [last]
    while todo:
        name = todo.pop()
        if name == first or name not in producers or producers[name] in wanted:
            continue
        wanted.add(producers[name])
        todo.extend(all_nodes[producers[name]].input)
    nodes = [all_nodes[i] for i in sorted(wanted)]
    used = {name for node in nodes for name in node.input}
    graph = helper.make_graph(
        nodes,
        "part",
        [helper.make_tensor_value_info(first, TensorProto.FLOAT, [f"d{i}" for i in range(rank)])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, None)],
        [t for t in model.graph.initializer if t.name in used],
    )
    part = helper.make_model(graph, opset_imports=model.opset_import)
    part.ir_version = model.ir_version
    return part.SerializeToString()


def _seconds(stack: Callable[[np.ndarray], np.ndarray], repeats: int = 3) -> float:
    """Fastest time of ``stack`` over 200 frames (2 s), after a first untimed call."""
    frames = np.random.default_rng(0).normal(0, 0.1, (1, 200, 320)).astype(np.float32)
    stack(frames)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        stack(frames)
        best = min(best, time.perf_counter() - start)
    return best


def _winograd_stack(p835, load: Callable) -> Callable[[np.ndarray], np.ndarray]:
    """The P.835 front as ``DNSMOS._stack``: onnxruntime up to the log-power spectrogram,
    then the convolutions and pooling by ``chorus.scoring.winograd``."""
    from onnx import numpy_helper

    from chorus.scoring.winograd import WinogradConvs

    weights = {t.name: numpy_helper.to_array(t) for t in p835.graph.initializer}
    nodes = {node.name: node for node in p835.graph.node}
    convs = WinogradConvs(
        [(weights[nodes[n].input[1]], weights[nodes[n].input[2]]) for n in P835_CONVS]
    )
    convs(np.zeros((8, 161), np.float32))  # compiles, or loads numba's cache, and its BLAS
    spectrum = load(_subgraph(p835, P835_FRAMES, P835_SPECTRUM, 3))

    def stack(x: np.ndarray) -> np.ndarray:
        logpow = spectrum.run(None, {P835_FRAMES: np.ascontiguousarray(x)})[0]
        return np.stack([convs(s) for s in logpow])

    return stack


@dataclass
class MOS:
    """DNSMOS: P.808 MOS and P.835's overall, signal and background scores (1-5)."""

    p808: float
    ovrl: float
    sig: float
    bak: float


KEYS = tuple(f.name for f in fields(MOS))


class DNSMOS:
    """Both DNSMOS models, loaded once. ``score`` returns MOS values on the 1-5 scale.

    ``threads``: how many model calls run at once (0: one per core). Each call is single-
    threaded; the work is split into independent pieces (chunks of frames, batches of
    windows) instead: OpenMP's spinning barriers inside oneDNN made 2 intra-op threads
    cost more CPU and wall time than 1 on a busy 2-core machine, while whole pieces on
    separate threads just wait for a core.

    ``backend``: what runs the shared P.835 convolutions, "onnxruntime" or "winograd"
    (both fp32, same scores to ~1e-5 MOS). None: time both at load and keep the faster (on
    a GPU, onnxruntime); which one runs is ``self.backend``."""

    def __init__(self, runtime: ScoringRuntime, threads: int = 0, backend: str | None = None):
        import onnxruntime as ort

        if backend not in (None, *BACKENDS):
            raise ValueError(f"unknown DNSMOS backend {backend!r}: one of {', '.join(BACKENDS)}")
        try:
            import onnx
        except ImportError as e:  # a dependency since the split graphs
            raise ImportError("DNSMOS needs the onnx package (onnx==1.23.2)") from e

        self.runtime = runtime
        self.workers = threads or runtime.cores
        self._pool = ThreadPoolExecutor(self.workers, "dnsmos") if self.workers > 1 else None
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        models = resources.files("speechmos") / "dnsmos_models"
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]

        def load(model: bytes | str) -> ort.InferenceSession:
            return ort.InferenceSession(model, options, providers=providers)

        p835 = onnx.load(str(models / "sig_bak_ovr.onnx"))
        # Maps are time first: (B, T, C, F) where the models have (B, C, T, F).
        # _stack: (B, T, 320) frames -> (B, T / 2, ...) pooled maps;
        # _mid: those -> (B, T / 4, ...) maps before the third pooling;
        # _tail: (n, 225, ...) middles of whole windows -> (n, 3) raw P.835 outputs.
        front = load(_subgraph(p835, P835_FRAMES, P835_SPLIT, 3))
        middle = load(_subgraph(p835, P835_SPLIT, P835_MID, 4))
        tail = load(_subgraph(p835, P835_MID, P835_OUT, 4))

        def onnx_stack(x: np.ndarray) -> np.ndarray:
            maps = front.run(None, {P835_FRAMES: np.ascontiguousarray(x)})[0]
            return maps.transpose(0, 2, 1, 3)

        def run_maps(session, name: str, maps: np.ndarray) -> np.ndarray:
            maps = np.ascontiguousarray(maps.transpose(0, 2, 1, 3))
            return session.run(None, {name: maps})[0]

        stacks = {"onnxruntime": onnx_stack}
        if backend == "winograd" or (backend is None and "CUDAExecutionProvider" not in providers):
            stacks["winograd"] = _winograd_stack(p835, load)
        self.backend = backend or min(stacks, key=lambda name: _seconds(stacks[name]))
        self._stack = stacks[self.backend]
        # The 8-frame edge runs: onnxruntime does those in half Winograd's time (whose tiles
        # and per-call set-up are sized for long runs).
        self._edge_stack = onnx_stack
        self._mid = lambda maps: run_maps(middle, P835_SPLIT, maps).transpose(0, 2, 1, 3)
        self._tail = partial(run_maps, tail, P835_MID)
        p808 = onnx.load(str(models / "model_v8.onnx"))
        p808_middle = load(_subgraph(p808, P808_IN, P808_MID, 3))
        p808_tail = load(_subgraph(p808, P808_MID, P808_OUT, 4))
        self._p808_mid = lambda x: p808_middle.run(None, {P808_IN: x})[0].transpose(0, 2, 1, 3)
        self._p808_tail = partial(run_maps, p808_tail, P808_MID)
        # The first call pays librosa's and onnxruntime's lazy set-up; pay it now
        # rather than in the first answer's evaluation time.
        tone = 0.1 * np.sin(2 * np.pi * 220 * np.arange(WINDOW_SAMPLES + RATE) / RATE)
        self.score(tone.astype(np.float32), RATE)

    def _start(self, fn: Callable, item) -> Callable[[], object]:
        """Start ``fn(item)`` on a worker (on a free core); call the result to wait for it."""
        if self._pool is None:
            result = self.runtime.on_a_core(partial(fn, item))
            return lambda: result
        return self._pool.submit(self.runtime.on_a_core, partial(fn, item)).result

    def _map(self, fn: Callable, items: Sequence) -> list:
        jobs = [self._start(fn, item) for item in items]
        return [job() for job in jobs]

    def score(self, samples: np.ndarray, rate: int) -> MOS:
        """Mean MOS over speechmos's windows."""
        audio = np.clip(resample(to_mono_float(samples), rate, RATE), -1.0, 1.0)
        return self.score_tiled(tile(audio.astype(np.float32)))

    def score_whole(self, samples: np.ndarray, rate: int) -> MOS:
        """Each measure's lowest part (``parts``): an answer is as good as its worst
        stretch. Clips of up to PART_S make one part, scored exactly as speechmos does."""
        parts = self.parts(samples, rate)
        return MOS(**{key: float(np.min(values)) for key, values in parts.items()})

    def parts(self, samples: np.ndarray, rate: int) -> dict[str, np.ndarray]:
        """Each measure of every part of the clip (``part_starts``): the mean of PART_WINDOWS
        consecutive windows of those starting at every second, as speechmos scores the
        clip of PART_S from the part's start. All windows are one run (one shared pass),
        so every second but the clip's first and last 6 s is heard by all windows of some
        part, not by the few at the edge of a fixed part. Up to PART_S: ``score``, one part.
        No window ends exactly at the clip's end (that would be a run of its own, ~0.2 s of
        CPU): the last one ends less than a second before it (fixed parts: 0.99 s)."""
        audio = np.clip(resample(to_mono_float(samples), rate, RATE), -1.0, 1.0)
        audio = audio.astype(np.float32)
        if audio.size <= int(PART_S * RATE):
            whole = asdict(self.score_tiled(tile(audio)))
            return {key: np.array([value]) for key, value in whole.items()}
        last = part_starts(audio.size)[-1] // HOP_SAMPLES  # parts start at whole seconds
        per_window = self._window_scores(audio, list(range(last + PART_WINDOWS)))
        mean = np.full(PART_WINDOWS, 1 / PART_WINDOWS)  # part g: the PART_WINDOWS from g on
        return {key: np.convolve(values, mean, "valid") for key, values in per_window.items()}

    def score_tiled(self, audio: np.ndarray) -> MOS:
        """Scores of 16 kHz float32 audio already at least one window long."""
        per_window = self._window_scores(audio, window_starts(audio.size))
        return MOS(**{key: float(np.mean(values)) for key, values in per_window.items()})

    def _window_scores(self, audio: np.ndarray, starts: list[int]) -> dict[str, np.ndarray]:
        """Each measure (MOS) of each window at ``starts`` (seconds) of 16 kHz float32 audio."""
        # P.808's middles are queued first, so a core that frees up always finds work.
        p808_jobs = self._p808(audio, starts)
        raw = np.concatenate([self._p835(audio, run) for run in groups(starts)])
        sig, bak, ovrl = raw.T
        return {
            "p808": np.concatenate([job() for job in p808_jobs()]).ravel(),
            "ovrl": P835_FITS["ovrl"](ovrl),
            "sig": P835_FITS["sig"](sig),
            "bak": P835_FITS["bak"](bak),
        }

    def _chunks(self, frames: int) -> int:
        """Frames per shared chunk of a run: a multiple of MID_POOL, at most one chunk per 100
        frames, and the chunks a multiple of the worker count where that fits."""
        count = -(-max(-(-frames // CHUNK[self.backend]), self.workers) // self.workers)
        count = max(1, min(count * self.workers, frames // 100))
        return -(-frames // (count * MID_POOL)) * MID_POOL

    def _tails(self, mid, run, begin, patches, middle, tail) -> list[Callable[[], np.ndarray]]:
        """Start the raw outputs of consecutive windows ``run``: each window's middle is its
        slice of the shared ``mid`` (rows from frame ``begin``), with EDGE_ROWS rows at each
        inner edge replaced by ``middle`` of the window's own ``patches[s]`` (top, bottom)."""
        quarter = FRAMES // MID_POOL

        def batch_tail(batch: Sequence[int]) -> np.ndarray:
            maps = np.stack(
                [mid[(s * WINDOW_HOP_FRAMES - begin) // MID_POOL :][:quarter] for s in batch]
            )
            todo, places = [], []
            for n, s in enumerate(batch):
                edges = (slice(0, EDGE_ROWS), slice(-EDGE_ROWS, None))
                for patch, rows in zip(patches[s], edges, strict=True):
                    if patch is not None:
                        todo.append(patch)
                        places.append((n, rows))
            if todo:
                for (n, rows), m in zip(places, middle(np.stack(todo)), strict=True):
                    maps[n, rows] = m[rows]
            return tail(maps)

        batches = [run[i : i + MAX_BATCH] for i in range(0, len(run), MAX_BATCH)]
        return [self._start(batch_tail, batch) for batch in batches]

    def _p808(self, audio: np.ndarray, starts: list[int]) -> Callable[[], list]:
        """Start P.808 on the windows at ``starts``; call the result for the jobs giving
        their raw outputs.

        Each window's input is its log-mel frames in dB of its own peak, so windows share
        frames only where their peaks are equal (often: a clip's loudest frame is in many
        windows). Each run of such windows shares one middle, the way P.835 does; a window
        whose neighbours' peaks differ is a run of one."""
        mel = p808_mel(audio, starts)
        features = p808_inputs(mel)
        index = {s: i for i, s in enumerate(starts)}
        peak = dict(zip(starts, mel.max(axis=(1, 2)), strict=True))
        runs = [
            list(same)
            for run in groups(starts)
            for _, same in itertools.groupby(run, key=peak.__getitem__)
        ]
        shared = []
        for run in runs:
            # The run's input: every frame as the windows that hold it away from their
            # edges see it; the outer windows' edge frames at its ends.
            first, last = index[run[0]], index[run[-1]]
            parts = [features[first, : FRAMES - 1]]
            parts += [
                features[index[s], FRAMES - 1 - WINDOW_HOP_FRAMES : FRAMES - 1] for s in run[1:]
            ]
            rows = np.concatenate([*parts, features[last, FRAMES - 1 :]])
            size = self._chunks(len(rows))

            def chunk(lo: int, rows=rows, size=size) -> np.ndarray:
                a, b = max(0, lo - MID_HALO), min(len(rows), lo + size + MID_HALO)
                mid = self._p808_mid(rows[None, a:b])[0]
                return mid[(lo - a) // MID_POOL : (min(lo + size, len(rows)) - a) // MID_POOL]

            patches = {
                s: (
                    features[index[s], :P808_PATCH] if s != run[0] else None,
                    features[index[s], -P808_PATCH:] if s != run[-1] else None,
                )
                for s in run
            }
            shared.append(
                (run, patches, [self._start(chunk, lo) for lo in range(0, len(rows), size)])
            )

        def finish() -> list:
            tails = []
            for run, patches, chunks in shared:
                mid = np.concatenate([job() for job in chunks])
                begin = run[0] * WINDOW_HOP_FRAMES
                tails += self._tails(mid, run, begin, patches, self._p808_mid, self._p808_tail)
            return tails

        return finish

    def _p835(self, audio: np.ndarray, run: list[int]) -> np.ndarray:
        """(len(run), 3) raw P.835 outputs of consecutive windows ``run`` (seconds).

        The conv stack and the middle run over the run's frames in chunks, each with
        MID_HALO frames of context either side, clipped at the run's ends (the outer
        windows' own edges). A window's middle is its slice of the result, with EDGE_ROWS
        rows at each inner edge recomputed from a patch of its own pooled maps: the shared
        ones, with the HALO / 2 rows next to the edge taken from 8-frame runs that see the
        window's zero padding. All offsets are multiples of 4, so every pooling pairs the
        same frames as in a lone window."""
        hop, half = WINDOW_HOP_FRAMES, FRAMES // POOL
        begin, end = run[0] * hop, run[-1] * hop + FRAMES
        size = self._chunks(end - begin)

        def chunk(lo: int) -> tuple[np.ndarray, np.ndarray]:
            hi = min(lo + size, end)
            a, b = max(begin, lo - MID_HALO), min(end, hi + MID_HALO)
            pooled = self._stack(stft_frames(audio, a, b)[None])
            mid = self._mid(pooled)[0]
            pooled, mid = pooled[0, (lo - a) // POOL :], mid[(lo - a) // MID_POOL :]
            return pooled[: (hi - lo) // POOL], mid[: (hi - lo) // MID_POOL]

        tasks = [partial(self._edges, audio, run)]
        tasks += [partial(chunk, lo) for lo in range(begin, end, size)]
        edges, *parts = self._map(lambda task: task(), tasks)
        pooled = np.concatenate([p for p, _ in parts])
        patches = {}
        for s in run:
            start = (s * hop - begin) // POOL
            top = bottom = None
            if s != run[0]:
                top = pooled[start : start + P835_PATCH].copy()
                top[: HALO // POOL] = edges[s][0]
            if s != run[-1]:
                bottom = pooled[start + half - P835_PATCH : start + half].copy()
                bottom[-HALO // POOL :] = edges[s][1]
            patches[s] = (top, bottom)
        mid = np.concatenate([m for _, m in parts])
        jobs = self._tails(mid, run, begin, patches, self._mid, self._tail)
        return np.concatenate([job() for job in jobs])

    def _edges(self, audio: np.ndarray, run: list[int]) -> dict[int, list[np.ndarray]]:
        """For each inner window edge, the pooled frames the stack gives next to that
        window's own zero padding: from a 2 * HALO-frame run, whose first (or last) HALO
        frames see exactly what the window sees."""
        hop, span, half = WINDOW_HOP_FRAMES, 2 * HALO, HALO // POOL
        if len(run) < 2:
            return {}
        frames = [stft_frames(audio, s * hop, s * hop + span) for s in run[1:]]
        frames += [stft_frames(audio, s * hop + FRAMES - span, s * hop + FRAMES) for s in run[:-1]]
        maps = self._edge_stack(np.stack(frames))
        edges: dict[int, list] = {s: [None, None] for s in run}
        for s, m in zip(run[1:], maps[: len(run) - 1], strict=True):
            edges[s][0] = m[:half]
        for s, m in zip(run[:-1], maps[len(run) - 1 :], strict=True):
            edges[s][1] = m[-half:]
        return edges


def _cpu_and_wall(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Fastest process CPU time and wall time of ``repeats`` calls (the machine is shared)."""
    cpu, wall = np.inf, np.inf
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu, wall = min(cpu, time.process_time() - c), min(wall, time.perf_counter() - w)
    return cpu, wall


def compare_with_speechmos(
    clips: Iterable[np.ndarray], dnsmos: DNSMOS | None = None, repeats: int = 2
) -> dict[str, float]:
    """Our scores and time against ``speechmos.dnsmos.run`` on the same 16 kHz clips:
    per-dimension max |difference| (``p808``...), and ``speedup_cpu`` / ``speedup_wall``,
    speechmos's total time over ours (fastest of ``repeats`` runs per clip)."""
    from speechmos import dnsmos as reference

    dnsmos = dnsmos or DNSMOS(ScoringRuntime())
    result = dict.fromkeys(KEYS, 0.0)
    totals = np.zeros(4)  # ours cpu, ours wall, theirs cpu, theirs wall
    reference.run(np.zeros(WINDOW_SAMPLES, np.float32), RATE)  # load its sessions untimed
    for clip in clips:
        clip = np.clip(np.asarray(clip, np.float32), -1.0, 1.0)
        ours, theirs = dnsmos.score(clip, RATE), reference.run(clip, RATE)
        totals[:2] += _cpu_and_wall(partial(dnsmos.score, clip, RATE), repeats)
        totals[2:] += _cpu_and_wall(partial(reference.run, clip, RATE), repeats)
        for key in KEYS:
            diff = abs(getattr(ours, key) - float(theirs[f"{key}_mos"]))
            result[key] = max(result[key], diff)
    result["speedup_cpu"] = float(totals[2] / totals[0])
    result["speedup_wall"] = float(totals[3] / totals[1])
    return result
