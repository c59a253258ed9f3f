"""Cheap music cheats: what a miner could send instead of composing, in a few lines each.

Every cheat reads only what the prompt states (its BPM and key, through
`parse_music_prompt`) or reuses honest audio, as a lazy miner would. They exist so that the
red team (``chorus redteam --service music``) and the tests can show that the music score
pays for music, not for a click track in the right tempo over a chord in the right key.
Each returns mono float32 audio at ``RATE``, except `static_loop` and `fragment_in_filler`,
which keep the rate of the honest audio they reuse.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from chorus.music_prompts import MusicPrompt, parse_music_prompt

RATE = 44100
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}


def _asked(prompt: str | MusicPrompt) -> tuple[float, int, str]:
    """(BPM, tonic pitch class, mode) that the prompt states (120, C, major if silent)."""
    p = parse_music_prompt(prompt) if isinstance(prompt, str) else prompt
    return p.bpm or 120.0, p.tonic if p.tonic is not None else 0, p.mode or "major"


def _tone(midi: float, seconds: float, harmonics: int = 6) -> np.ndarray:
    """A plain harmonic tone (partials at 1/k): what a numpy synth sounds like."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    return sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1))


def _finish(x: np.ndarray) -> np.ndarray:
    """Level to about -17 dBFS RMS (as honest music is), never clipping, 10 ms fades."""
    x = np.asarray(x, dtype=np.float64)
    rms = float(np.sqrt(np.mean(x**2))) or 1.0
    x = x * min(0.14 / rms, 0.9 / (np.abs(x).max() or 1.0))
    fade = min(x.size, int(0.01 * RATE))
    x[:fade] *= np.linspace(0, 1, fade)
    x = _fade_out(x, RATE)
    return x.astype(np.float32)


def _fade_out(x: np.ndarray, rate: int) -> np.ndarray:
    """``x`` with its last 10 ms faded to silence (in place): no click at the end."""
    fade = min(x.size, int(0.01 * rate))
    x[x.size - fade :] *= np.linspace(1, 0, fade)
    return x


def _triad(tonic: int, mode: str) -> list[int]:
    return [60 + tonic, 60 + tonic + (4 if mode == "major" else 3), 60 + tonic + 7]


def held_chord(prompt: str | MusicPrompt, seconds: float) -> np.ndarray:
    """The tonic triad of the asked key, its root doubled an octave down, held throughout."""
    _, tonic, mode = _asked(prompt)
    return _finish(sum(_tone(m, seconds) for m in [48 + tonic, *_triad(tonic, mode)]))


def clicks_drone(prompt: str | MusicPrompt, seconds: float, bass: bool = True) -> np.ndarray:
    """A click on every beat of the asked tempo over a tonic-triad drone, plus (``bass``) the
    tonic in the bass, struck on every beat."""
    bpm, tonic, mode = _asked(prompt)
    t = np.arange(int(seconds * RATE)) / RATE
    since_beat = t % (60.0 / bpm)
    drone = sum(_tone(m, seconds) for m in _triad(tonic, mode)) / 6
    click = 2.0 * np.sin(2 * np.pi * 1500 * t) * np.exp(-since_beat / 0.006)
    pulse = 1.2 * _tone(36 + tonic, seconds, harmonics=3) * np.exp(-since_beat / 0.15)
    return _finish(drone + click + (pulse if bass else 0.0))


def pulsed_noise(prompt: str | MusicPrompt, seconds: float, seed: int = 0) -> np.ndarray:
    """White noise swelling and decaying on every beat of the asked tempo."""
    bpm, _, _ = _asked(prompt)
    n = int(seconds * RATE)
    since_beat = (np.arange(n) / RATE) % (60.0 / bpm)
    return _finish(np.random.default_rng(seed).standard_normal(n) * np.exp(-since_beat / 0.08))


def random_notes(prompt: str | MusicPrompt, seconds: float, seed: int = 0) -> np.ndarray:
    """Random notes of the asked key's scale, a decaying synth tone on every eighth note of
    the asked tempo (C4 to B5), over a random scale note in the bass on every beat."""
    bpm, tonic, mode = _asked(prompt)
    rng = np.random.default_rng(seed)
    scale = [tonic + s for s in SCALES[mode]]
    out = np.zeros(int(seconds * RATE) + RATE)
    for step, pitches in ((30.0 / bpm, [60 + o + p for o in (0, 12) for p in scale]),
                          (60.0 / bpm, [36 + p for p in scale])):  # fmt: skip
        for at in np.arange(0.0, seconds, step):
            length = step * rng.integers(1, 3) + 0.1
            note = _tone(rng.choice(pitches), length) * np.exp(
                -np.arange(int(length * RATE)) / (0.3 * RATE)
            )
            i = int(at * RATE)
            out[i : i + note.size] += note[: out.size - i]
    return _finish(out[: int(seconds * RATE)])


def _kit(bpm: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A noise drum kit: hats on every eighth note, a kick on beats 1 and 3, a snare on 2
    and 4 (each hit a decaying burst)."""
    out = np.zeros(int(seconds * RATE) + RATE)
    t = np.arange(int(0.2 * RATE)) / RATE
    kick = np.sin(2 * np.pi * (50 + 80 * np.exp(-t / 0.03)) * t) * np.exp(-t / 0.08)
    for k, at in enumerate(np.arange(0.0, seconds, 30.0 / bpm)):
        hits = [0.3 * np.diff(rng.standard_normal(t.size), prepend=0.0) * np.exp(-t / 0.01)]
        hits += [kick] if k % 4 == 0 else []
        hits += [0.5 * rng.standard_normal(t.size) * np.exp(-t / 0.03)] if k % 4 == 2 else []
        i = int(at * RATE)
        for hit in hits:
            out[i : i + t.size] += hit[: out.size - i]
    return out[: int(seconds * RATE)]


def scale_walk_kit(
    prompt: str | MusicPrompt, seconds: float, held: bool = False, seed: int = 0
) -> np.ndarray:
    """A pitched metronome: one note per beat walking up and down the asked key's scale, a
    blip (or, ``held``, a note lasting the beat), the tonic in the bass every other beat,
    over `_kit`. Tempo, key, a melody and a groove, but one voice: nothing is held under it."""
    bpm, tonic, mode = _asked(prompt)
    beat, scale = 60.0 / bpm, SCALES[mode]
    walk = [0, 1, 2, 3, 4, 5, 6, 7, 6, 5, 4, 3, 2, 1]
    out = np.zeros(int(seconds * RATE) + RATE)
    for i, at in enumerate(np.arange(0.0, seconds, beat)):
        step = walk[i % len(walk)]
        length = beat if held else 0.15
        decay = np.exp(-np.arange(int(length * RATE)) / ((1.0 if held else 0.05) * RATE))
        notes = [_tone(60 + tonic + scale[step % 7] + 12 * (step // 7), length) * decay]
        if i % 2 == 0 and not held:
            notes.append(
                _tone(36 + tonic, 0.3, harmonics=3)
                * np.exp(-np.arange(int(0.3 * RATE)) / (0.1 * RATE))
            )
        j = int(at * RATE)
        for note in notes:
            out[j : j + note.size] += note[: out.size - j]
    voice = out[: int(seconds * RATE)]
    voice *= 0.07 / (float(np.sqrt(np.mean(voice**2))) or 1.0)
    return _finish(voice / 0.14 + _kit(bpm, seconds, np.random.default_rng(seed)))


def static_loop(honest: np.ndarray, rate: int, bpm: float, seconds: float) -> np.ndarray:
    """One bar (four beats) of an honest piece, its second, repeated to fill the time."""
    bar = int(round(4 * 60.0 / bpm * rate))
    start = bar if honest.size >= 2 * bar else 0
    one = np.asarray(honest[start : start + bar], dtype=np.float32)
    x = np.tile(one, int(np.ceil(seconds * rate / max(1, one.size))))[: int(seconds * rate)]
    return _fade_out(x, rate)


def fragment_in_filler(
    honest: np.ndarray,
    rate: int,
    prompt: str | MusicPrompt,
    seconds: float,
    filler: Literal["chord", "repeat"] = "chord",
    filler_db: float = -15.0,
    fragment_s: float = 3.0,
    at_s: float = 0.0,
) -> np.ndarray:
    """The first ``fragment_s`` of an honest piece (a fraction of the work) at ``at_s``,
    and filler everywhere else, ``filler_db`` under the fragment's level: the asked key's
    held chord (``filler="chord"``) or the fragment repeated (``"repeat"``). Measures that
    normalise each beat's level hear the filler's notes, not that it barely plays."""
    if filler not in ("chord", "repeat"):
        raise ValueError(f"filler must be 'chord' or 'repeat', not {filler!r}")
    if not 0 < fragment_s <= seconds or not 0 <= at_s <= seconds - fragment_s:
        raise ValueError(f"a {fragment_s:g} s fragment at {at_s:g} s does not fit {seconds:g} s")
    fragment = np.asarray(honest[: int(fragment_s * rate)], dtype=np.float64)
    total = int(seconds * rate)
    if filler == "chord":
        chord = held_chord(prompt, seconds + 0.1)
        tail = np.interp(np.arange(total) * RATE / rate, np.arange(chord.size), chord)
    else:
        tail = np.tile(fragment, total // max(1, fragment.size) + 1)[:total]
    level = float(np.sqrt(np.mean(fragment**2))) / (float(np.sqrt(np.mean(tail**2))) or 1.0)
    x = tail * level * 10 ** (filler_db / 20)
    start = min(int(at_s * rate), total - fragment.size)
    x[start : start + fragment.size] = fragment
    return _fade_out(x, rate).astype(np.float32)
