"""Speech quality: Microsoft DNSMOS (P.835 SIG/BAK/OVRL and P.808 MOS) from the ONNX files
that ``speechmos`` ships, with batched inference.

``speechmos.dnsmos.run`` scores every 9.01 s window (1 s hop) with its own onnxruntime call;
we compute the same windows, features and polynomial fits, but run all windows of a clip
through each model in one call, which is several times faster on a CPU.
"""

from __future__ import annotations

from importlib import resources

import librosa
import numpy as np

from chorus.audio import resample, to_mono_float

RATE = 16000
WINDOW = 9.01  # seconds, as DNSMOS was trained
WINDOW_SAMPLES = int(WINDOW * RATE)
HOP_SAMPLES = RATE
MAX_BATCH = 32  # windows per onnxruntime call: bounds memory on two-minute clips

# P.835 raw outputs -> MOS, the non-personalised fits of the DNSMOS reference script.
P835_FITS = {
    "sig": np.poly1d([-0.08397278, 1.22083953, 0.0052439]),
    "bak": np.poly1d([-0.13166888, 1.60915514, -0.39604546]),
    "ovrl": np.poly1d([-0.06766283, 1.11546468, 0.04602535]),
}


def windows(audio: np.ndarray) -> np.ndarray:
    """The (n, 144160) analysis windows speechmos scores: short audio is doubled until it
    fills one window, then 9.01 s windows start every second."""
    if audio.size == 0:
        raise ValueError("DNSMOS needs at least one sample")
    while audio.size < WINDOW_SAMPLES:
        audio = np.append(audio, audio)
    count = int(np.floor(audio.size / RATE) - WINDOW) + 1
    # Same float arithmetic as speechmos, including windows its rounding leaves one short.
    segments = [audio[i * HOP_SAMPLES : int((i + WINDOW) * HOP_SAMPLES)] for i in range(count)]
    return np.stack([s for s in segments if s.size >= WINDOW_SAMPLES]).astype(np.float32)


def p808_features(segments: np.ndarray) -> np.ndarray:
    """(n, 900, 120) log-mel inputs of the P.808 model, each window in dB of its own peak."""
    mel = librosa.feature.melspectrogram(
        y=segments[:, :-160], sr=RATE, n_fft=321, hop_length=160, n_mels=120
    )
    db = np.stack([(librosa.power_to_db(m, ref=np.max) + 40) / 40 for m in mel])
    return db.transpose(0, 2, 1).astype(np.float32)


class DNSMOS:
    """Both DNSMOS models, loaded once. ``score`` returns MOS values on the 1-5 scale."""

    def __init__(self, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        models = resources.files("speechmos") / "dnsmos_models"
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]

        def load(name: str) -> ort.InferenceSession:
            path = str(models / name)
            return ort.InferenceSession(path, options, providers=providers)

        self.p835 = load("sig_bak_ovr.onnx")
        self.p808 = load("model_v8.onnx")
        # The first call pays librosa's and onnxruntime's lazy set-up (about a second here);
        # pay it now rather than in the first answer's evaluation time.
        tone = 0.1 * np.sin(2 * np.pi * 220 * np.arange(WINDOW_SAMPLES) / RATE)
        self.score(tone.astype(np.float32), RATE)

    def score(self, samples: np.ndarray, rate: int) -> dict[str, float]:
        """Mean MOS over all windows: keys ``p808``, ``ovrl``, ``sig``, ``bak``."""
        audio = np.clip(resample(to_mono_float(samples), rate, RATE), -1.0, 1.0)
        segments = windows(audio)
        raw, p808 = [], []
        for start in range(0, len(segments), MAX_BATCH):
            batch = segments[start : start + MAX_BATCH]
            raw.append(self.p835.run(None, {"input_1": batch})[0])
            p808.append(self.p808.run(None, {"input_1": p808_features(batch)})[0][:, 0])
        sig, bak, ovrl = np.concatenate(raw).T
        return {
            "p808": float(np.mean(np.concatenate(p808))),
            "ovrl": float(np.mean(P835_FITS["ovrl"](ovrl))),
            "sig": float(np.mean(P835_FITS["sig"](sig))),
            "bak": float(np.mean(P835_FITS["bak"](bak))),
        }
