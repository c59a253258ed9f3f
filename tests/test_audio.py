"""Wire encoding: round trips, and refusals that happen before samples are allocated."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf

from chorus import audio


def tone(seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def raw_file(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str = "PCM_16") -> str:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_round_trip_keeps_signal(fmt):
    x = tone()
    y, rate = audio.decode(audio.encode(x, 16000, fmt))
    assert rate == 16000 and y.shape == x.shape
    assert np.max(np.abs(x - y)) < 1e-3  # 16-bit quantisation only


def test_flac_is_smaller_than_wav_and_wav_beats_json_floats():
    x = tone(3.0)
    wav, flac = audio.encode(x, 16000, "wav"), audio.encode(x, 16000, "flac")
    as_json = str([round(float(v), 6) for v in x])
    assert len(flac) < len(wav) < len(as_json) / 3


def test_stereo_is_mixed_to_mono():
    x = tone()
    y, _ = audio.decode(raw_file(np.stack([x, -x * 0], axis=1), 16000))
    assert y.ndim == 1 and np.allclose(y, x / 2, atol=1e-3)


@pytest.mark.parametrize(
    ("text", "limits", "message"),
    [
        ("", None, "empty"),
        ("not base64 at all!", None, "base64"),
        (base64.b64encode(b"RIFF garbage").decode(), None, "not a readable"),
        (raw_file(tone(2.0, 8000), 8000), audio.AudioLimits(min_rate=16000), "sample rate"),
        (raw_file(np.zeros((16000, 6), np.float32), 16000), None, "channels"),
        (raw_file(tone(3.0), 16000), audio.AudioLimits(max_seconds=2.0), "at most"),
        (raw_file(tone(1.0), 16000), audio.AudioLimits(min_seconds=2.0), "at least"),
    ],
)
def test_bad_audio_is_refused_with_reason(text, limits, message):
    with pytest.raises(audio.AudioError, match=message):
        audio.decode(text, limits)


def test_unreadable_audio_is_named_by_its_fault_not_by_a_buffer_object():
    with pytest.raises(audio.AudioError) as refused:
        audio.decode(base64.b64encode(b"hello, not audio").decode())
    assert "Format not recognised" in str(refused.value) and "object at" not in str(refused.value)


def test_nan_samples_are_refused():
    x = tone()
    x[100] = np.nan
    with pytest.raises(audio.AudioError, match="NaN"):
        audio.decode(raw_file(x, 16000, subtype="FLOAT"))


def test_resample_changes_length_and_keeps_pitch():
    y = audio.resample(tone(1.0, 16000), 16000, 22050)
    assert len(y) == 22050
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 22050 / len(y) - 220) < 2
