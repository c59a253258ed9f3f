"""The gateway's audio out and in: OpenAI's response formats, encoded as a stream, a
pitch-preserving time stretch, and decoding of uploaded recordings.

``Encoder`` turns mono float chunks into one stream of ``mp3``, ``opus`` (Ogg), ``aac``
(ADTS), ``wav``, ``flac`` or ``pcm``, returning the bytes each chunk completes, so the
gateway can send a sentence as soon as a miner has spoken it. The lossy formats go
through ffmpeg's encoders in PyAV (libmp3lame, libopus, ffmpeg's native AAC): one encoder
per answer, so the chunks are pieces of one stream and concatenate into a valid file,
with no gaps or repeated headers. libsndfile (``soundfile``) also writes MP3 and
Ogg/Opus, but only to a seekable file at once; it has no AAC. Raw MP3 frames and ADTS
frames need no container; Opus goes into Ogg pages flushed every 100 ms.

- ``pcm`` is raw 16-bit little-endian mono at 24 kHz, as OpenAI documents it.
- ``wav`` is 16-bit PCM. Streamed, its header is sent first with the RIFF and data sizes
  at 0xFFFFFFFF ("until the end of the stream"), which libsndfile, ffmpeg, Python's
  ``wave`` and browsers read to the end; sent whole, the sizes are exact.
- ``flac`` is sent whole at the end: its STREAMINFO header carries the length and an
  MD5 of the audio, known only then.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from typing import Any, get_args

import numpy as np
import soxr

from chorus import audio
from chorus.errors import CallerError, InternalError
from chorus.protocol import MEDIA_TYPES, ResponseFormat

FORMATS: tuple[ResponseFormat, ...] = get_args(ResponseFormat)
PCM_RATE = 24000  # OpenAI's pcm: 24 kHz, 16-bit signed little-endian, mono
SPEECH_RATE_OUT = 24000  # speech answers are resampled to OpenAI's rate in every format
MIN_SPEED, MAX_SPEED = 0.25, 4.0
OGG_PAGE_US = 100_000  # an Ogg page at least every 100 ms of Opus

# The rates each codec can encode; other rates are resampled to the next one up.
_RATES: dict[str, tuple[int, ...]] = {
    "mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
    "opus": (8000, 12000, 16000, 24000, 48000),
    "aac": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
}
# PyAV codec, muxer, muxer options, and bit rate below / from 32 kHz.
_LOSSY: dict[str, tuple[str, str, dict[str, str], int, int]] = {
    "mp3": ("libmp3lame", "mp3", {"write_xing": "0", "id3v2_version": "0"}, 64_000, 128_000),
    "opus": ("libopus", "ogg", {"page_duration": str(OGG_PAGE_US)}, 32_000, 96_000),
    "aac": ("aac", "adts", {}, 64_000, 128_000),
}
_UNKNOWN_SIZE = 0xFFFFFFFF


def media_type(fmt: str) -> str:
    return MEDIA_TYPES[fmt]


def output_rate(fmt: str, rate: int) -> int:
    """The rate ``fmt`` is written at for audio at ``rate``: pcm is always 24 kHz; a lossy
    codec takes the next rate it supports; wav and flac keep ``rate``."""
    if fmt == "pcm":
        return PCM_RATE
    rates = _RATES.get(fmt)
    if rates is None:
        return rate
    return min((r for r in rates if r >= rate), default=rates[-1])


def _int16(samples: np.ndarray) -> bytes:
    clipped = np.clip(np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
    return np.round(clipped * 32767.0).astype("<i2").tobytes()


def wav_header(rate: int, data_bytes: int | None) -> bytes:
    """A 44-byte 16-bit mono PCM WAV header; ``None`` for a stream of unknown length."""
    data = _UNKNOWN_SIZE if data_bytes is None else data_bytes
    riff = _UNKNOWN_SIZE if data_bytes is None else 36 + data_bytes
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVE"
        + b"fmt "
        + fmt
        + b"data"
        + (struct.pack("<I", data))
    )


class _Sink:
    """Where a PyAV muxer writes: bytes collected until taken (no seek, so the muxer
    never goes back to patch a header)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: Any) -> int:
        self.buf += bytes(data)
        return len(data)

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


class Encoder:
    """One answer's audio as a stream of ``fmt``: ``write`` a chunk (mono float32 at its
    own rate), get the bytes it completes; ``finish`` for the rest. ``streaming=False``
    lets wav carry exact sizes (the whole answer comes in one ``write``)."""

    def __init__(self, fmt: str, rate: int, streaming: bool = True):
        if fmt not in FORMATS:
            raise CallerError(f"unknown response_format {fmt!r}; use one of {FORMATS}", 400)
        self.fmt = fmt
        self.rate = output_rate(fmt, rate)
        self.streaming = streaming
        self.frames = 0  # samples written, at self.rate
        self._resampler: soxr.ResampleStream | None = None
        self._in_rate: int | None = None
        self._held: list[np.ndarray] = []  # flac, and wav sent whole
        self._started = False
        self._pts = 0
        if fmt in _LOSSY:
            import av

            codec, muxer, options, low, high = _LOSSY[fmt]
            self._sink = _Sink()
            self._container = av.open(self._sink, "w", format=muxer, options=options)
            stream: Any = self._container.add_stream(codec, rate=self.rate, layout="mono")
            stream.bit_rate = low if self.rate < 32000 else high
            self._stream = stream

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    def write(self, samples: np.ndarray, rate: int) -> bytes:
        """Encode ``samples`` (at ``rate``) after what came before; the bytes ready now."""
        return self._encode(self._resample(np.asarray(samples, dtype=np.float32), rate))

    def finish(self) -> bytes:
        """The rest of the stream: what the resampler and encoder still hold, and any
        trailer (the whole file for flac, and for wav sent whole)."""
        tail = np.zeros(0, dtype=np.float32)
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(tail, last=True)
            self._resampler = None
        out = self._encode(tail)
        if self.fmt in _LOSSY:
            try:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
                self._container.close()
            except Exception as e:  # an encoder failure is our bug, not the caller's
                raise InternalError(f"{self.fmt} encoder failed: {e}") from e
            return out + self._sink.take()
        if self.fmt == "flac":
            whole = np.concatenate(self._held) if self._held else np.zeros(0, np.float32)
            return audio.encode_bytes(whole, self.rate, "flac")
        if self.fmt == "wav" and not self.streaming:
            pcm = b"".join(_int16(x) for x in self._held)
            return wav_header(self.rate, len(pcm)) + pcm
        if self.fmt == "wav" and not self._started:  # an empty stream still has a header
            self._started = True
            return out + wav_header(self.rate, None)
        return out

    def _resample(self, samples: np.ndarray, rate: int) -> np.ndarray:
        if rate == self.rate and self._resampler is None:
            return samples
        if rate != self._in_rate:
            flushed = np.zeros(0, dtype=np.float32)
            if self._resampler is not None:  # a new rate mid-stream: drain the old one
                flushed = self._resampler.resample_chunk(flushed, last=True)
            self._resampler = None
            self._in_rate = rate
            if rate == self.rate:
                return np.concatenate([flushed, samples])
            self._resampler = soxr.ResampleStream(rate, self.rate, 1, dtype="float32")
            return np.concatenate([flushed, self._resampler.resample_chunk(samples)])
        assert self._resampler is not None
        return self._resampler.resample_chunk(samples)

    def _encode(self, samples: np.ndarray) -> bytes:
        samples = samples.astype(np.float32, copy=False)
        self.frames += samples.size
        if self.fmt == "flac" or (self.fmt == "wav" and not self.streaming):
            self._held.append(samples)
            return b""
        if self.fmt in ("pcm", "wav"):
            head = b""
            if self.fmt == "wav" and not self._started:
                head = wav_header(self.rate, None)
            self._started = True
            return head + _int16(samples)
        if samples.size == 0:
            return self._sink.take()
        import av

        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.rate)
        self._pts += samples.size
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except Exception as e:
            raise InternalError(f"{self.fmt} encoder failed: {e}") from e
        return self._sink.take()


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """A whole answer as one file of ``fmt``."""
    encoder = Encoder(fmt, rate, streaming=False)
    return encoder.write(samples, rate) + encoder.finish()


def time_stretch(samples: np.ndarray, rate: int, speed: float) -> np.ndarray:
    """``samples`` played ``speed`` times faster (0.25-4.0) at the same pitch, by ffmpeg's
    ``atempo`` filter (WSOLA, made for speech); below 0.5 it is applied twice."""
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise CallerError(f"speed must be {MIN_SPEED}-{MAX_SPEED}, not {speed}", 400)
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if speed == 1.0 or x.size == 0:
        return x
    import av

    factors = []
    while speed < 0.5:
        factors.append(0.5)
        speed /= 0.5
    factors.append(speed)
    graph = av.filter.Graph()
    nodes = [
        graph.add_abuffer(
            format="flt", sample_rate=rate, layout="mono", time_base=Fraction(1, rate)
        ),
        *(graph.add("atempo", f"{f:.6f}") for f in factors),
        graph.add("abuffersink"),
    ]
    for a, b in zip(nodes, nodes[1:], strict=False):
        a.link_to(b)
    graph.configure()
    frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
    frame.sample_rate = rate
    frame.pts = 0
    frame.time_base = Fraction(1, rate)
    graph.push(frame)
    graph.push(None)
    out = []
    while True:
        try:
            out.append(graph.pull().to_ndarray().reshape(-1))
        except (av.BlockingIOError, av.EOFError):
            break
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


# -- uploads ------------------------------------------------------------------------------


def decode_upload(data: bytes, limits: audio.AudioLimits) -> tuple[np.ndarray, int]:
    """An uploaded recording as (mono float32, rate), within ``limits``: anything
    libsndfile reads (WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, ...) with its header checked
    before decoding, else anything ffmpeg reads (M4A/AAC, WebM, ...) decoded no further
    than the limit. ``AudioError`` (422) says what is wrong."""
    try:
        return audio.decode_bytes(data, limits)
    except audio.AudioError as e:
        if not str(e).startswith("not a readable"):
            raise  # it is audio, and it breaks a limit: say which
    return _decode_with_ffmpeg(data, limits)


def _decode_with_ffmpeg(data: bytes, limits: audio.AudioLimits) -> tuple[np.ndarray, int]:
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception:
        raise audio.AudioError(
            "not an audio file that libsndfile or ffmpeg can read"
            " (send WAV, FLAC, MP3, Ogg, M4A or WebM)"
        ) from None
    with container:
        streams = container.streams.audio
        if not streams:
            raise audio.AudioError("the file has no audio stream")
        stream = streams[0]
        rate = int(stream.rate or 0)
        if not limits.min_rate <= rate <= limits.max_rate:
            raise audio.AudioError(
                f"sample rate {rate} Hz is outside {limits.min_rate}-{limits.max_rate} Hz"
            )
        most = int((limits.max_seconds + 0.5) * rate)
        to_mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts, total = [], 0
        try:
            for frame in container.decode(stream):
                for mono in to_mono.resample(frame):
                    parts.append(mono.to_ndarray().reshape(-1).astype(np.float32))
                    total += parts[-1].size
                if total > most:
                    raise audio.AudioError(f"audio is over {limits.max_seconds:g} s")
        except audio.AudioError:
            raise
        except Exception as e:
            raise audio.AudioError(f"the audio does not decode ({type(e).__name__})") from None
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    seconds = samples.size / rate
    if seconds > limits.max_seconds:
        raise audio.AudioError(f"audio is {seconds:.1f} s; at most {limits.max_seconds:g} s")
    if seconds < limits.min_seconds:
        raise audio.AudioError(f"audio is {seconds:.2f} s; at least {limits.min_seconds:g} s")
    if not np.isfinite(samples).all():
        raise audio.AudioError("audio contains NaN or infinite samples")
    return samples, rate
