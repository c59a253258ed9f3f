"""Text-to-music on a CPU: compose from the prompt's structure, render with sampled instruments.

Neural text-to-music needs a GPU to be practical; a symbolic composer does not, and it obeys
the prompt exactly (tempo, key, mode, instruments), which is what the validator measures.
The prompt is parsed into a `MusicPrompt`; what it leaves out is filled from the genre and
mood. A genre style picks chord progressions, a drum groove and bass / comping figures; a
motif-based melody sits on top. Notes are rendered with sampled instruments from a General
MIDI SoundFont: Debian's ``fluid-soundfont-gm`` where installed, else the small one the
``pretty_midi`` wheel ships; by FluidSynth where its library is installed, else by
TinySoundFont (``tinysoundfont``, a pip wheel). With neither, a small numpy synthesizer plays
the same notes, so a miner degrades in sound quality rather than failing.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import random
import secrets
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.signal import butter, oaconvolve, sosfilt

from chorus.errors import CallerError
from chorus.music_prompts import GENRES, MOODS, NOTE_NAMES, MusicPrompt, parse_music_prompt
from chorus.protocol import MAX_MUSIC_SECONDS, MIN_MUSIC_SECONDS

log = logging.getLogger(__name__)

SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
BUNDLED_SOUNDFONT = ("pretty_midi", "TimGM6mb.sf2")  # a 6 MB GM SoundFont inside a pip wheel
RENDERERS = ("fluidsynth", "tinysoundfont", "numpy")  # best first
NUMPY_MODEL = "symbolic+numpy-synth"  # the model name a miner on the numpy synthesizer reports
RESTORE = {  # what installs a missing renderer (the Makefile pins the same version)
    "fluidsynth": "apt install libfluidsynth3",
    "tinysoundfont": "pip install --no-deps tinysoundfont==0.3.7",
}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
STEPS = 16  # a bar of 4/4 on a sixteenth-note grid
DRUM_CHANNEL = 9

# instrument -> (General MIDI program, role, melody register centre)
INSTRUMENTS: dict[str, tuple[int, str, int]] = {
    "piano": (0, "comp", 74),
    "electric piano": (4, "comp", 72),
    "organ": (16, "comp", 72),
    "acoustic guitar": (25, "comp", 70),
    "electric guitar": (27, "comp", 70),
    "distorted guitar": (30, "comp", 67),
    "bass": (33, "bass", 0),
    "slap bass": (36, "bass", 0),
    "upright bass": (32, "bass", 0),
    "synth bass": (38, "bass", 0),
    "drums": (0, "drums", 0),
    "strings": (48, "pad", 74),
    "violin": (40, "lead", 76),
    "cello": (42, "lead", 58),
    "choir": (52, "pad", 70),
    "trumpet": (56, "lead", 72),
    "brass": (61, "pad", 67),
    "saxophone": (66, "lead", 67),
    "flute": (73, "lead", 79),
    "clarinet": (71, "lead", 70),
    "synth pad": (89, "pad", 72),
    "synth lead": (81, "lead", 74),
    "vibraphone": (11, "comp", 77),
    "marimba": (12, "comp", 77),
    "harp": (46, "comp", 74),
    "bells": (9, "lead", 84),
    "banjo": (105, "comp", 72),
    "harmonica": (22, "lead", 72),
    "accordion": (21, "comp", 72),
    "kalimba": (108, "lead", 79),
}

# Drum grids, one character per sixteenth: X accent, x normal, g ghost, . rest.
KICK, SNARE, RIM, CLAP, HAT, OPEN_HAT, RIDE, CRASH, TOM_LO, TOM_HI, SHAKER = (
    36,
    38,
    37,
    39,
    42,
    46,
    51,
    49,
    45,
    50,
    70,
)
GROOVES: dict[str, dict[int, str]] = {
    "pop": {KICK: "X.....x.X.x.....", SNARE: "....X.......X...", HAT: "x.x.x.x.x.x.x.x."},
    "rock": {KICK: "X.....x.X.x.....", SNARE: "....X.......X...", HAT: "X.x.X.x.X.x.X.x."},
    "four": {
        KICK: "X...X...X...X...",
        CLAP: "....X.......X...",
        HAT: "x.x.x.x.x.x.x.x.",
        OPEN_HAT: "..x...x...x...x.",
    },
    "funk": {KICK: "X.....x...x....x", SNARE: "....X..g.g..X..g", HAT: "xgxgxgxgxgxgxgxg"},
    "boombap": {KICK: "X......x..x.....", SNARE: "....X.......X...", HAT: "x.x.x.x.x.x.x.x."},
    "swing": {RIDE: "x...x..gx...x..g", HAT: "....x.......x...", KICK: "g.......g......."},
    "shuffle": {KICK: "X.......X.......", SNARE: "....X.......X...", HAT: "x.gx...gx.gx...g"},
    "bossa": {KICK: "X..xX..xX..xX..x", RIM: "g..g..g...g..g..", HAT: "x.x.x.x.x.x.x.x."},
    "onedrop": {KICK: "........X.......", RIM: "........X.......", HAT: "x.x.x.x.x.x.x.x."},
    "metal": {KICK: "XxXxXxXxXxXxXxXx", SNARE: "....X.......X...", CRASH: "x.......x......."},
    "cinematic": {TOM_LO: "X.....x.X.......", TOM_HI: "............x.x.", KICK: "X.......X......."},
    "folk": {KICK: "X.......X.......", RIM: "....x.......x...", SHAKER: "xgxgxgxgxgxgxgxg"},
    "soft": {SHAKER: "x.g.x.g.x.g.x.g.", KICK: "x.......x.......", RIM: "....g.......g..."},
}
# Bass figures: R root, F fifth, O octave, T third, A approach to the next root, - hold.
BASS: dict[str, str] = {
    "eighths": "R-R-R-R-R-R-R-R-",
    "root_fifth": "R-------F-------",
    "walking": "R---T---F---A---",
    "funk": "R--R..O.R.R..F.A",
    "octave": "R-O-R-O-R-O-R-O-",
    "hiphop": "R------R--R-----",
    "reggae": "..R-R-F-..F-R-..",
    "pedal": "R---------------",
    "boogie": "R--TF--OR--TF--T",
    "bossa": "R-----F-R-----F-",
    "halves": "R-------R---F---",
}
# Comping figures: C chord, a next arpeggio note, - hold, . rest (upper case lasts, lower
# case is short).
COMP: dict[str, str] = {
    "pulse": "C---C---C---C-C-",
    "block": "C---------------",
    "stabs": "..c..c....c..c..",
    "charleston": "C-----c.........",
    "skank": "....c.......c...",
    "strum": "C---C-c-..c-C-c-",
    "arp": "a-a-a-a-a-a-a-a-",
    "arp16": "aaaaaaaaaaaaaaaa",
    "power": "c.c.c.c.c.c.c.cc",
    "bossa": "c..c..c...c..c..",
    "sparse": "C-------..C-----",
}


@dataclass(frozen=True)
class Style:
    """How a genre plays: progressions (scale degrees, one chord per bar), the groove, the
    bass and comping figures, swing (0.5 straight, 0.66 triplet) and chord colour.
    Progressions start on the tonic and avoid long stays on the relative key's chords
    (i-VI-III-VII is C major's vi-IV-I-V): the key asked for must be the key heard."""

    major: tuple[tuple[int, ...], ...]
    minor: tuple[tuple[int, ...], ...]
    groove: str | None
    bass: str
    comp: str
    swing: float = 0.5
    sevenths: bool = False
    harmonic_minor: bool = True
    reverb: int = 50


STYLES: dict[str, Style] = {
    "pop": Style(
        ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 0, 4)),
        ((0, 5, 6, 0), (0, 3, 5, 4)),
        "pop",
        "eighths",
        "pulse",
    ),
    "rock": Style(
        ((0, 3, 4, 3), (0, 4, 5, 3)),
        ((0, 5, 6, 0), (0, 6, 5, 4)),
        "rock",
        "eighths",
        "power",
        harmonic_minor=False,
        reverb=35,
    ),
    "jazz": Style(
        ((0, 5, 1, 4), (0, 1, 4, 0)),
        ((0, 1, 4, 0), (0, 3, 1, 4)),
        "swing",
        "walking",
        "charleston",
        swing=0.64,
        sevenths=True,
    ),
    "funk": Style(
        ((0, 3, 0, 4), (0, 0, 3, 4)),
        ((0, 3, 0, 4), (0, 0, 6, 4)),
        "funk",
        "funk",
        "stabs",
        swing=0.54,
        sevenths=True,
        reverb=25,
    ),
    "blues": Style(
        ((0, 3, 0, 0, 3, 3, 0, 0, 4, 3, 0, 4),),
        ((0, 3, 0, 0, 3, 3, 0, 0, 4, 3, 0, 4),),
        "shuffle",
        "boogie",
        "pulse",
        swing=0.66,
        sevenths=True,
    ),
    "electronic": Style(
        ((0, 4, 5, 3), (0, 3, 5, 4)), ((0, 5, 6, 0), (0, 6, 5, 4)), "four", "octave", "arp16"
    ),
    "hip hop": Style(
        ((0, 5, 3, 4),),
        ((0, 5, 3, 4), (0, 3, 5, 4)),
        "boombap",
        "hiphop",
        "sparse",
        swing=0.56,
        sevenths=True,
        reverb=30,
    ),
    "lofi": Style(
        ((0, 5, 1, 4), (0, 3, 1, 4)),
        ((0, 3, 5, 4), (0, 5, 3, 4)),
        "boombap",
        "hiphop",
        "sparse",
        swing=0.6,
        sevenths=True,
    ),
    "ambient": Style(
        ((0, 3, 0, 5), (0, 5, 3, 0)),
        ((0, 5, 3, 0), (0, 6, 5, 0)),
        None,
        "pedal",
        "arp",
        sevenths=True,
        reverb=100,
    ),
    "classical": Style(
        ((0, 3, 4, 0), (0, 5, 3, 4)), ((0, 3, 4, 0), (0, 5, 3, 4)), None, "halves", "arp", reverb=80
    ),
    "cinematic": Style(
        ((0, 4, 5, 3), (0, 3, 5, 4)),
        ((0, 5, 6, 0), (0, 5, 3, 4)),
        "cinematic",
        "pedal",
        "arp16",
        reverb=90,
    ),
    "folk": Style(
        ((0, 3, 0, 4), (0, 4, 5, 3)),
        ((0, 6, 5, 4), (0, 3, 0, 4)),
        "folk",
        "root_fifth",
        "strum",
        reverb=45,
    ),
    "reggae": Style(
        ((0, 3, 0, 4), (0, 3, 4, 3)),
        ((0, 3, 0, 4), (0, 6, 5, 0)),
        "onedrop",
        "reggae",
        "skank",
        swing=0.55,
    ),
    "bossa nova": Style(
        ((0, 1, 4, 0), (0, 5, 1, 4)),
        ((0, 3, 1, 4),),
        "bossa",
        "bossa",
        "bossa",
        sevenths=True,
        reverb=45,
    ),
    "synthwave": Style(
        ((0, 4, 5, 3),), ((0, 5, 3, 4), (0, 3, 6, 4)), "pop", "octave", "arp16", reverb=70
    ),
    "metal": Style(
        ((0, 3, 4, 0),),
        ((0, 0, 5, 6), (0, 5, 6, 4)),
        "metal",
        "eighths",
        "power",
        harmonic_minor=False,
        reverb=25,
    ),
}
ENERGY_VELOCITY = {"low": 0.72, "medium": 0.88, "high": 1.0}


@dataclass(frozen=True)
class Note:
    """One note on a channel, in seconds (after swing) and MIDI pitch/velocity."""

    start: float
    duration: float
    pitch: int
    velocity: int


@dataclass
class Part:
    """One instrument's line: its GM program, channel, its level in the mix (dB relative
    to the drums, measured while it plays), reverb send and notes."""

    instrument: str
    program: int
    channel: int
    level_db: float
    reverb: int
    notes: list[Note]


@dataclass(frozen=True)
class Plan:
    """A prompt with every blank filled: what will actually be played."""

    genre: str
    mood: str
    bpm: float
    tonic: int
    mode: str
    instruments: tuple[str, ...]
    energy: str


def pick_genre(prompt: MusicPrompt, rng: random.Random) -> str:
    """The asked genre, else one that suits the asked mood and instruments ("relaxing
    piano music" should not come out as metal)."""
    if prompt.genre:
        return prompt.genre

    def fit(name: str) -> int:
        g = GENRES[name]
        return 2 * (prompt.mood in g.moods) + len(set(prompt.instruments) & set(g.instruments))

    best = max(fit(name) for name in GENRES)
    return rng.choice(sorted(name for name in GENRES if fit(name) == best))


def plan_music(prompt: MusicPrompt, rng: random.Random) -> Plan:
    """Fill what the prompt leaves out from its genre and mood (and chance)."""
    genre = pick_genre(prompt, rng)
    info = GENRES[genre]
    mood = prompt.mood or rng.choice(info.moods)
    mood_mode, mood_energy = MOODS[mood]
    if prompt.bpm:
        bpm = prompt.bpm
    elif prompt.bpm_range:
        bpm = float(rng.randint(int(prompt.bpm_range[0]), int(prompt.bpm_range[1])))
    else:
        bpm = float(rng.randint(*info.bpm))
    tonic = prompt.tonic if prompt.tonic is not None else rng.randrange(12)
    mode = prompt.mode or mood_mode or rng.choice(("major", "minor"))
    asked = [i for i in prompt.instruments if i in INSTRUMENTS]
    roles = {INSTRUMENTS[i][1] for i in asked}
    if not asked:
        asked = list(info.instruments[:4])
    else:  # complete the band from the genre unless the prompt wants a solo
        solo = prompt.no_drums and len(asked) == 1
        for extra in info.instruments:
            role = INSTRUMENTS[extra][1]
            if solo or role in roles or role in ("lead", "pad"):
                continue
            asked.append(extra)
            roles.add(role)
    if prompt.no_drums:
        asked = [i for i in asked if i != "drums"]
    return Plan(genre, mood, float(bpm), tonic, mode, tuple(asked), prompt.energy or mood_energy)


class Composer:
    """Turns a `Plan` into `Part`s. One instance per piece; all randomness from ``rng``."""

    def __init__(self, plan: Plan, rng: random.Random) -> None:
        self.plan, self.rng = plan, rng
        self.style = STYLES[plan.genre]
        self.beat = 60.0 / plan.bpm
        self.scale = [(plan.tonic + s) % 12 for s in SCALES[plan.mode]]
        self.vel = ENERGY_VELOCITY[plan.energy]
        self.intro_bars = 0

    # --- time and harmony -------------------------------------------------------------
    def time(self, bar: int, step: float) -> float:
        """Seconds at a sixteenth ``step`` of ``bar``, with the style's swing on off-beats."""
        beat, frac = divmod(step / 4.0, 1.0)
        s = self.style.swing
        swung = frac * 2 * s if frac < 0.5 else s + (frac - 0.5) * 2 * (1 - s)
        return (bar * 4 + beat + swung) * self.beat

    def chord(self, degree: int) -> list[int]:
        """Pitch classes of the chord on a scale degree, root first."""
        # Sevenths where they point at the key: ii7 and V7 always, IV7/vi7 in major. A plain
        # tonic anchors the key; a minor key's iv7 or VI7 would spell its relative major.
        colour = (1, 4, 3, 5) if self.plan.mode == "major" else (1, 4)
        size = 4 if self.style.sevenths and degree in colour else 3
        pcs = [self.scale[(degree + 2 * i) % 7] for i in range(size)]
        if self.plan.mode == "minor" and self.style.harmonic_minor and degree == 4:
            pcs[1] = (pcs[1] + 1) % 12  # major V: the leading tone says "minor key"
        return pcs

    def progression(self, bars: int) -> list[int]:
        """One degree per bar, looping a genre progression and ending on the tonic."""
        options = self.style.major if self.plan.mode == "major" else self.style.minor
        prog = self.rng.choice(options)
        slow = self.plan.bpm < 80 and len(prog) <= 4 and self.plan.genre != "blues"
        per = 2 if slow and bars >= 8 else 1
        degrees = [prog[(b // per) % len(prog)] for b in range(bars)]
        degrees[-1] = 0
        return degrees

    # --- parts ------------------------------------------------------------------------
    def note(self, bar: int, step: float, steps: float, pitch: int, vel: float) -> Note:
        """A humanized note: a few ms of timing jitter and a little velocity spread."""
        start = max(0.0, self.time(bar, step) + self.rng.gauss(0, 0.004))
        end = self.time(bar, step + steps)
        build = 0.88 if bar < self.intro_bars else 1.0  # the first phrase is a little softer
        v = int(np.clip(vel * self.vel * build * self.rng.uniform(0.9, 1.06), 1, 127))
        return Note(start, max(0.03, end - start - 0.01), pitch, v)

    def drums(self, bars: int) -> list[Note]:
        groove = self.style.groove or "soft"
        notes: list[Note] = []
        for bar in range(bars):
            last = bar == bars - 1
            if last:
                notes.append(self.note(bar, 0, 4, CRASH, 100))
                notes.append(self.note(bar, 0, 4, KICK, 110))
                continue
            for pitch, grid in GROOVES[groove].items():
                for step, ch in enumerate(self.drum_grid(pitch, grid)):
                    if ch == ".":
                        continue
                    vel = {"X": 112, "x": 88, "g": 45}[ch] + (8 if step % 4 == 0 else 0)
                    notes.append(self.note(bar, step, 1, pitch, vel))
            if bar % 4 == 0 and self.plan.energy != "low" and groove not in ("swing", "soft"):
                notes.append(self.note(bar, 0, 4, CRASH, 90 if bar else 75))
            if bar % 4 == 3 and self.plan.energy == "high" and bars - bar > 2:
                notes += [
                    self.note(bar, s, 1, p, 95)
                    for s, p in ((12, TOM_HI), (13, TOM_HI), (14, TOM_LO), (15, TOM_LO))
                ]
        return notes

    def drum_grid(self, pitch: int, grid: str) -> str:
        """Energy reshapes a groove: low drops ghosts and sixteenth cymbals, high fills
        straight eighth-note hats out to sixteenths."""
        if self.plan.energy == "low":
            cymbal = pitch in (HAT, OPEN_HAT, RIDE, SHAKER)
            return "".join("." if c == "g" or (cymbal and i % 2) else c for i, c in enumerate(grid))
        if self.plan.energy == "high" and pitch == HAT and self.style.swing <= 0.56:
            return "".join("g" if c == "." and i % 2 else c for i, c in enumerate(grid))
        return grid

    def bass(self, degrees: list[int]) -> list[Note]:
        """The style's bass figure on each chord, roots between G1 and F#2 (E2 for E), and
        approach notes a semitone from the next root."""
        grid = BASS[self.style.bass]
        notes: list[Note] = []

        def root_of(degree: int) -> int:
            root = 36 + (self.chord(degree)[0] - 36) % 12
            return root - 12 if root > 43 else root

        for bar, degree in enumerate(degrees):
            chord = self.chord(degree)
            root = root_of(degree)
            next_root = root_of(degrees[bar + 1] if bar + 1 < len(degrees) else 0)
            pitch_of = {
                "R": root,
                "F": root + (chord[2] - chord[0]) % 12,
                "O": root + 12,
                "T": root + (chord[1] - chord[0]) % 12,
                "A": next_root - 1 if next_root > root else next_root + 1,
            }
            figure = "R" + "-" * (STEPS - 1) if bar == len(degrees) - 1 else grid
            for step, ch in enumerate(figure):
                if ch in pitch_of:
                    length = 1 + len(figure[step + 1 :]) - len(figure[step + 1 :].lstrip("-"))
                    vel = 100 if step % 4 == 0 else 84
                    notes.append(self.note(bar, step, length, pitch_of[ch], vel))
        return notes

    def voicing(self, pcs: list[int], previous: list[int], low: int, high: int) -> list[int]:
        """Chord tones in [low, high], the inversion closest to the previous voicing."""
        best: list[int] = []
        best_cost = math.inf
        for inv in range(len(pcs)):
            order = pcs[inv:] + pcs[:inv]
            for base in range(low, low + 12):
                if base % 12 != order[0]:
                    continue
                v = [base]
                for pc in order[1:]:
                    v.append(v[-1] + (pc - v[-1]) % 12)
                if v[-1] > high:
                    continue
                center = sum(previous) / len(previous) if previous else (low + high) / 2
                cost = abs(sum(v) / len(v) - center)
                if cost < best_cost:
                    best, best_cost = v, cost
        return best

    def comp(
        self, degrees: list[int], figure: str, low: int, high: int, vel: float, power: bool
    ) -> list[Note]:
        """A chordal part playing ``figure`` each bar with voice-led chords."""
        notes: list[Note] = []
        previous: list[int] = []
        for bar, degree in enumerate(degrees):
            pcs = self.chord(degree)
            if power:
                pcs = [pcs[0], pcs[2]]
            voiced = self.voicing(pcs, previous, low, high)
            if power:
                voiced = voiced[:2] + [voiced[0] + 12]
            previous = voiced
            grid = "C" + "-" * (STEPS - 1) if bar == len(degrees) - 1 else figure
            if self.plan.energy == "low":  # calmer: no sixteenth-note hits
                grid = "".join("-" if i % 2 else c for i, c in enumerate(grid))
            arp = 0
            for step, ch in enumerate(grid):
                if ch in "-.":
                    continue
                hold = 1 + len(grid[step + 1 :]) - len(grid[step + 1 :].lstrip("-"))
                length = hold if ch.isupper() or ch == "a" else 0.6
                accent = 1.0 if step % 4 == 0 else 0.85
                if ch == "a":
                    order = voiced + [voiced[0] + 12, voiced[1] + 12]
                    pitch = order[[0, 2, 1, 3, 4, 3, 1, 2][arp % 8] % len(order)]
                    arp += 1
                    notes.append(self.note(bar, step, max(length, 2), pitch, vel * accent))
                else:
                    for i, pitch in enumerate(voiced):  # a slight strum
                        n = self.note(bar, step, length, pitch, vel * accent)
                        notes.append(replace(n, start=n.start + 0.006 * i))
        return notes

    def melody(self, degrees: list[int], center: int, first_bar: int) -> list[Note]:
        """A motif-based line: a two-bar motif (rhythm and melodic steps) repeated, its
        second bar inverted in alternate phrases for contrast, chord tones on strong beats,
        and a long tonic at the end."""
        density = {"low": 0.35, "medium": 0.55, "high": 0.75}[self.plan.energy]
        rhythm = [s for s in range(0, 2 * STEPS, 2) if s % 8 == 0 or self.rng.random() < density]
        moves = {s: self.rng.choice((-1, 1, 1, -2, 2, -1)) for s in rhythm}
        scale_pitches = [p for p in range(center - 10, center + 11) if p % 12 in self.scale]
        notes: list[Note] = []
        pitch = min(scale_pitches, key=lambda p: abs(p - center))
        last = len(degrees) - 1
        for bar in range(first_bar, last):
            chord = self.chord(degrees[bar])
            half = STEPS * (bar % 2)
            steps = [s - half for s in rhythm if half <= s < half + STEPS]
            if bar % 4 == 3:
                steps = [0, 8] if self.plan.energy != "low" else [0]  # phrase ends breathe
            for i, step in enumerate(steps):
                if step % 8 == 0:
                    tones = [p for p in scale_pitches if p % 12 in chord]
                    # the nearest chord tone, near the register centre, and not the same
                    # note again unless nothing else is close (repeats make a line static)
                    pitch = min(
                        tones,
                        key=lambda p: abs(p - pitch) + 0.3 * abs(p - center) + 3.5 * (p == pitch),
                    )
                else:
                    idx = scale_pitches.index(pitch) if pitch in scale_pitches else 0
                    move = moves[step + half] * (-1 if half and (bar // 4) % 2 else 1)
                    if abs(pitch + move - center) > 6:  # keep the line in its register
                        move = 1 if pitch < center else -1
                    idx = int(np.clip(idx + move, 0, len(scale_pitches) - 1))
                    pitch = scale_pitches[idx]
                end = steps[i + 1] if i + 1 < len(steps) else STEPS
                notes.append(self.note(bar, step, end - step, pitch, 96 if step % 8 == 0 else 84))
        tonics = [p for p in scale_pitches if p % 12 == self.plan.tonic]
        notes.append(self.note(last, 0, STEPS, min(tonics, key=lambda p: abs(p - pitch)), 90))
        return notes

    def counter(
        self, degrees: list[int], center: int, first_bar: int, tune: list[Note]
    ) -> list[Note]:
        """A second melody instrument's line: held chord tones, a half bar each (a bar at
        low energy), each near the last but moving where another tone is as near, kept
        off the tune's note sounding as it starts (two semitones or more: no unisons),
        ending on the tonic. It spells the chords under or over the tune."""
        step = STEPS if self.plan.energy == "low" else STEPS // 2
        register = range(center - 7, center + 8)
        pitch = center
        notes = []

        def cost(p: int, sounding: list[int]) -> float:
            clash = any(abs(p - q) <= 2 for q in sounding)
            return abs(p - pitch) + 0.2 * abs(p - center) + 3.5 * (p == pitch) + 12 * clash

        for bar in range(first_bar, len(degrees) - 1):
            tones = [p for p in register if p % 12 in self.chord(degrees[bar])]
            for start in range(0, STEPS, step):
                at = self.time(bar, start) + 0.03
                sounding = [n.pitch for n in tune if n.start <= at < n.start + n.duration]
                pitch = min(tones, key=lambda p: cost(p, sounding))
                notes.append(self.note(bar, start, step, pitch, 80))
        tonics = [p for p in register if p % 12 == self.plan.tonic]
        notes.append(
            self.note(len(degrees) - 1, 0, STEPS, min(tonics, key=lambda p: abs(p - pitch)), 76)
        )
        return notes

    def compose(self, seconds: float) -> list[Part]:
        """Every part for a piece that fills ``seconds``."""
        bars = max(1, math.ceil(seconds / (4 * self.beat) - 0.25))
        self.intro_bars = 4 if bars >= 10 else 0
        degrees = self.progression(bars)
        by_role: dict[str, list[str]] = {}
        for name in self.plan.instruments:
            by_role.setdefault(INSTRUMENTS[name][1], []).append(name)
        leads = by_role.get("lead", [])
        comps = by_role.get("comp", [])
        if not leads and len(comps) > 1:
            leads = [comps.pop()]
        elif not leads and comps and not by_role.get("pad"):
            leads = [comps[0]]  # a lone chord instrument plays the tune too
        parts: list[Part] = []
        channel = iter(c for c in range(16) if c != DRUM_CHANNEL)
        reverb = self.style.reverb

        def add(name: str, level_db: float, notes: list[Note], rev: int = reverb) -> None:
            program = INSTRUMENTS[name][0]
            ch = DRUM_CHANNEL if name == "drums" else next(channel)
            parts.append(Part(name, program, ch, level_db, rev, notes))

        if "drums" in by_role:
            add("drums", 0.0, self.drums(bars), min(reverb, 40))
        for name in by_role.get("bass", [])[:1]:
            add(name, -3.0, self.bass(degrees), 15)
        power = self.style.comp == "power"
        for name in comps[:2]:
            is_power = power and name.endswith("guitar")
            add(name, -6.0, self.comp(degrees, COMP[self.style.comp], 52, 76, 82, is_power))
        for name in by_role.get("pad", [])[:2]:
            add(name, -9.0, self.comp(degrees, COMP["block"], 55, 79, 70, False), reverb + 20)
        first = 2 if bars >= 8 else 0  # the tune enters on the tonic chord
        tune: list[Note] = []
        for name in leads[:1]:
            tune = self.melody(degrees, INSTRUMENTS[name][2], first)
            add(name, -2.0, tune)
        for name in leads[1:2]:
            add(name, -6.0, self.counter(degrees, INSTRUMENTS[name][2], first, tune))
        return parts


def bundled_soundfont() -> Path | None:
    """The GM SoundFont shipped inside the ``pretty_midi`` wheel (found without importing
    it), or None when that package is not installed."""
    package, name = BUNDLED_SOUNDFONT
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def find_soundfont(path: str | None = None) -> Path | None:
    """The SoundFont to use: ``path`` if given, else the first GM SoundFont installed (the
    system's before the bundled one: FluidR3 is larger and plays better)."""
    candidates = [path] if path else [*SOUNDFONTS, bundled_soundfont()]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


class SoundFontRenderer:
    """What the SoundFont synthesizers share: one synth, loaded once, plays one stem at a
    time (a lock serializes renders); subclasses play a part in `_stem`."""

    rate: int
    lock: threading.Lock

    def render(self, parts: list[Part], seconds: float) -> list[np.ndarray]:
        """One mono stem per part, so that `mix` can balance them whatever the levels of
        the SoundFont's samples."""
        total = int(round(seconds * self.rate))
        with self.lock:
            return [self._stem(part, total) for part in parts]

    def _stem(self, part: Part, total: int) -> np.ndarray:
        raise NotImplementedError


class FluidRenderer(SoundFontRenderer):
    """Renders parts with FluidSynth (in-process, faster than real time by far)."""

    def __init__(self, soundfont: Path, rate: int) -> None:
        import fluidsynth  # needs the libfluidsynth shared library

        self.rate = rate
        # chorus off: its free-running LFO would make two renders of one piece differ
        self.synth = fluidsynth.Synth(
            gain=0.25, samplerate=float(rate), **{"synth.chorus.active": 0}
        )
        self.sfid = self.synth.sfload(str(soundfont))
        if self.sfid < 0:
            raise RuntimeError(f"FluidSynth cannot load SoundFont {soundfont}")
        self.synth.set_reverb(roomsize=0.7, damping=0.4, width=0.9, level=0.6)
        self.lock = threading.Lock()

    def _stem(self, part: Part, total: int) -> np.ndarray:
        s, ch = self.synth, part.channel
        s.system_reset()
        s.program_select(ch, self.sfid, 128 if ch == DRUM_CHANNEL else 0, part.program)
        s.cc(ch, 91, part.reverb)
        chunks = _perform(part, total, self.rate, s.noteon, s.noteoff, s.get_samples)
        s.cc(ch, 120, 0)  # all sound off, then let the reverb ring out so the next stem
        # starts from silence, on FluidSynth's 64-sample block grid (events land on block
        # boundaries; keeping the same phase makes renders repeatable)
        flush = 2 * self.rate
        s.get_samples(flush + (-(total + flush)) % 64)
        stereo = np.concatenate(chunks).astype(np.float32).reshape(-1, 2) / 32768.0
        return stereo.mean(axis=1)


class TinyRenderer(SoundFontRenderer):
    """Renders parts with TinySoundFont (the ``tinysoundfont`` wheel: no system library),
    for machines without FluidSynth. It has no reverb of its own: each stem is played into
    a `Room`; what validators pay for its pieces is in docs/miner.md."""

    def __init__(self, soundfont: Path, rate: int) -> None:
        import tinysoundfont  # installed with --no-deps: its pyaudio is only for playback

        self.rate = rate
        self.synth = tinysoundfont.Synth(samplerate=rate)
        try:
            self.sfid = self.synth.sfload(str(soundfont))
        except Exception as e:  # the binding raises a bare Exception for a bad file
            raise RuntimeError(f"TinySoundFont cannot load SoundFont {soundfont}: {e}") from e
        self.room = Room(rate)
        self.lock = threading.Lock()

    def _stem(self, part: Part, total: int) -> np.ndarray:
        s, ch = self.synth, part.channel
        drums = ch == DRUM_CHANNEL
        s.program_select(ch, self.sfid, 128 if drums else 0, part.program, is_drums=drums)

        def samples(n: int) -> np.ndarray:
            return np.frombuffer(s.generate(n), dtype=np.float32)

        chunks = _perform(part, total, self.rate, s.noteon, s.noteoff, samples)
        s.sounds_off()
        samples(self.rate)  # let the released voices end before the next stem
        return self.room.play(np.concatenate(chunks).reshape(-1, 2).mean(axis=1), part.reverb)


class Room:
    """The hall FluidSynth's reverb plays each part into, for TinySoundFont, which has none:
    a decaying noise impulse response, its highs dying first, sent to by each part's reverb
    level as FluidSynth's CC 91 is. Dry, its pieces lost credit (docs/miner.md). The numpy
    synthesizer stays dry: the room moved its scores both ways and not up on average."""

    # Measured on FluidSynth as `FluidRenderer` sets it up: a part at send 127 adds a tail
    # 10.4 dB under the dry part (wet amplitude in proportion to the send), decaying about
    # 25 dB a second at first, the highs faster.
    WET_DB = -10.4
    PREDELAY = 0.012
    SECONDS = 2.5

    def __init__(self, rate: int) -> None:
        bands = (  # (filter, seconds to fall 60 dB): the highs die first
            (butter(4, 1000.0, "lowpass", fs=rate, output="sos"), 2.4),
            (butter(4, (1000.0, 4000.0), "bandpass", fs=rate, output="sos"), 1.8),
            (butter(4, 4000.0, "highpass", fs=rate, output="sos"), 1.0),
        )
        rng = np.random.default_rng(7)  # a fixed room: renders are repeatable
        t = np.arange(int(self.SECONDS * rate)) / rate
        ir = np.zeros_like(t)
        for sos, rt60 in bands:
            ir += sosfilt(sos, rng.standard_normal(t.size)) * 10 ** (-3 * t / rt60)
        ir[: int(self.PREDELAY * rate)] = 0.0
        ir *= 10 ** (self.WET_DB / 20) / np.sqrt(np.sum(ir**2))
        self.impulse_response = ir.astype(np.float32)

    def play(self, stem: np.ndarray, send: int) -> np.ndarray:
        """``stem`` with its reverb added at ``send`` (0-127), cut to its own length."""
        stem = stem.astype(np.float32, copy=False)
        if send <= 0 or stem.size == 0:
            return stem
        wet = oaconvolve(stem, self.impulse_response)[: stem.size]
        return (stem + (min(send, 127) / 127) * wet).astype(np.float32, copy=False)


def _perform(
    part: Part,
    total: int,
    rate: int,
    note_on: Callable[[int, int, int], object],
    note_off: Callable[[int, int], object],
    samples: Callable[[int], np.ndarray],
) -> list[np.ndarray]:
    """Play ``part``'s notes on a synthesizer, in time: its interleaved stereo output
    (``samples(n)``) in chunks that add up to ``total`` frames."""
    events = sorted(
        [(n.start, 1, n.pitch, n.velocity) for n in part.notes]
        + [(n.start + n.duration, 0, n.pitch, 0) for n in part.notes]
    )
    chunks: list[np.ndarray] = []
    cursor = 0
    for t, on, key, vel in events:
        at = min(total, int(round(t * rate)))
        if at > cursor:
            chunks.append(samples(at - cursor))
            cursor = at
        if on:
            note_on(part.channel, key, vel)
        else:
            note_off(part.channel, key)
    if total > cursor:
        chunks.append(samples(total - cursor))
    return chunks


class NumpyRenderer:
    """A small additive/subtractive synthesizer: plainer than sampled instruments, but it
    needs nothing installed and keeps the same notes, tempo and key."""

    def __init__(self, rate: int) -> None:
        self.rate = rate

    def tone(self, n: Note, program: int) -> np.ndarray:
        rate = self.rate
        f0 = 440.0 * 2 ** ((n.pitch - 69) / 12)
        length = n.duration + 0.3
        t = np.arange(int(length * rate)) / rate
        family = program // 8
        if family in (4,):  # basses: sine plus a little second harmonic, plucked
            wave = np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(4 * np.pi * f0 * t)
            env = np.exp(-t * 3.0)
        elif family in (5, 6, 11):  # strings, ensembles, pads: slow attack, soft saw
            wave = sum(np.sin(2 * np.pi * f0 * k * t * (1 + 0.002 * k)) / k for k in range(1, 7))
            env = np.minimum(1.0, t / 0.15)
        elif family in (7, 8, 9, 10):  # winds and leads: steady, a touch of vibrato
            vib = 1 + 0.004 * np.sin(2 * np.pi * 5.5 * t)
            wave = sum(np.sin(2 * np.pi * f0 * k * t * vib) / k**1.5 for k in range(1, 6))
            env = np.minimum(1.0, t / 0.03)
        else:  # keys, guitars, mallets: bright attack, decaying harmonics
            wave = sum(
                np.sin(2 * np.pi * f0 * k * t) * np.exp(-t * 1.5 * k) / k for k in range(1, 8)
            )
            env = np.exp(-t * 1.2)
        release = np.clip((length - t) / 0.3, 0.0, 1.0) if family not in (0, 1, 3) else 1.0
        return (wave * env * release * (n.velocity / 127) * 0.2).astype(np.float32)

    def drum(self, n: Note, rng: np.random.Generator) -> np.ndarray:
        rate = self.rate
        t = np.arange(int(0.35 * rate)) / rate
        amp = n.velocity / 127
        if n.pitch in (KICK, TOM_LO, TOM_HI):
            f = {KICK: 50.0, TOM_LO: 90.0, TOM_HI: 140.0}[n.pitch]
            x = np.sin(2 * np.pi * (f * t + 60 * (1 - np.exp(-t * 30)) / 30)) * np.exp(-t * 9)
        elif n.pitch in (SNARE, CLAP, RIM):
            x = 0.6 * rng.standard_normal(t.size) * np.exp(-t * 22)
            x += 0.4 * np.sin(2 * np.pi * 190 * t) * np.exp(-t * 30)
        else:  # cymbals and shakers: high-passed noise
            noise = rng.standard_normal(t.size)
            x = np.diff(noise, prepend=0.0) * np.exp(-t * (8 if n.pitch == CRASH else 45))
        return (x * amp * 0.35).astype(np.float32)

    def render(self, parts: list[Part], seconds: float) -> list[np.ndarray]:
        total = int(round(seconds * self.rate))
        rng = np.random.default_rng(0)
        stems = []
        for part in parts:
            out = np.zeros(total + int(2 * self.rate), dtype=np.float32)
            for n in part.notes:
                at = int(round(n.start * self.rate))
                if at >= total:
                    continue
                drum = part.channel == DRUM_CHANNEL
                x = self.drum(n, rng) if drum else self.tone(n, part.program)
                out[at : at + x.size] += x[: out.size - at]
            stems.append(out[:total])
        return stems


def mix(stems: list[np.ndarray], parts: list[Part], rate: int) -> np.ndarray:
    """Sum the stems at their parts' levels. A stem's loudness is taken while it plays
    (the 90th percentile of 50 ms frames), so a sparse melody is not pushed up for its
    rests, and SoundFont instruments of very different sample levels sit in balance."""
    out = np.zeros_like(stems[0]) if stems else np.zeros(0, np.float32)
    frame = int(0.05 * rate)
    for stem, part in zip(stems, parts, strict=True):
        n = stem.size // frame
        if n == 0:
            continue
        loud = np.percentile(np.sqrt((stem[: n * frame].reshape(n, frame) ** 2).mean(1)), 90)
        if loud > 1e-6:
            out += stem * (10 ** (part.level_db / 20) / loud)
    return out


def master(x: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """High-pass at 25 Hz (some SoundFont samples carry a DC offset that would eat the
    headroom), level to about -17 dBFS RMS, round off the few peaks above -4.4 dBFS with a
    soft knee so none passes -0.9 dBFS, fade in/out, and cut to exactly ``seconds``."""
    total = int(round(seconds * rate))
    x = sosfilt(butter(2, 25.0, "highpass", fs=rate, output="sos"), x[:total])
    x = np.pad(x, (0, max(0, total - x.size))).astype(np.float32)
    rms = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if rms > 0:
        x *= min(0.14 / rms, 1.8 / peak)
    knee, ceiling = 0.6, 0.9
    over = np.abs(x) > knee
    x[over] = np.sign(x[over]) * (
        knee + (ceiling - knee) * np.tanh((np.abs(x[over]) - knee) / (ceiling - knee))
    )
    fade_in = min(total, int(0.005 * rate))
    x[:fade_in] *= np.linspace(0.0, 1.0, fade_in, dtype=np.float32)
    fade = min(total, int(min(1.5, 0.15 * seconds) * rate))
    x[total - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32) ** 2
    return x


def check_renderer(choice: str | None, soundfont: str | None) -> None:
    """Refuses, before anything loads, a renderer name not in ``RENDERERS`` and a SoundFont
    path that is not a file (`CallerError`)."""
    if choice is not None and choice not in RENDERERS:
        raise CallerError(f"unknown renderer {choice!r}; choose from {', '.join(RENDERERS)}")
    if soundfont is not None and not Path(soundfont).is_file():
        raise CallerError(f"SoundFont {soundfont!r} is not a file")


def open_renderer(
    soundfont: str | None, rate: int, choice: str | None = None
) -> tuple[FluidRenderer | TinyRenderer | NumpyRenderer, str]:
    """The best renderer this machine has (or the one named by ``choice``) and the model
    name a miner reports: FluidSynth, then TinySoundFont, both on the SoundFont
    `find_soundfont` picks, then the numpy synthesizer; each step down is logged with what
    would restore the one above. A renderer or a SoundFont named but unusable is a
    `CallerError`: who names one wants it, not a quiet step down."""
    check_renderer(choice, soundfont)
    if choice == "numpy":
        return NumpyRenderer(rate), NUMPY_MODEL
    path = find_soundfont(soundfont)
    if path is None:
        missing = (
            f"no General MIDI SoundFont in {', '.join(SOUNDFONTS)} or pretty_midi "
            "(apt install fluid-soundfont-gm)"
        )
        if choice:
            raise CallerError(f"renderer {choice} needs a SoundFont: {missing}")
        log.warning("%s; music uses the built-in numpy synthesizer", missing)
        return NumpyRenderer(rate), NUMPY_MODEL
    failed = []
    for name, make in (("fluidsynth", FluidRenderer), ("tinysoundfont", TinyRenderer)):
        if choice not in (None, name):
            continue
        try:
            renderer = make(path, rate)
        except (ImportError, OSError, RuntimeError) as e:
            failed.append(f"{name}: {e}")
            continue
        if failed:
            log.warning("%s; music uses %s (%s)", "; ".join(failed), name, RESTORE["fluidsynth"])
        return renderer, f"symbolic+{name}:{path.name}"
    if choice:
        raise CallerError(f"renderer {choice} is unavailable ({failed[0]})")
    if soundfont is not None:
        raise CallerError(f"no synthesizer here plays SoundFont {soundfont} ({'; '.join(failed)})")
    log.warning(
        "%s; music uses the built-in numpy synthesizer (%s, or %s)",
        "; ".join(failed),
        RESTORE["fluidsynth"],
        RESTORE["tinysoundfont"],
    )
    return NumpyRenderer(rate), NUMPY_MODEL


class SymbolicMusic:
    """The CPU music backend: parse, plan, compose, render (``soundfont=/path`` to choose
    the SoundFont, ``renderer=`` one of ``RENDERERS`` instead of the best available,
    ``seed=N`` to fix the pieces; the same prompt and seed give the same music). Without a
    seed each process picks its own, so two honest miners running this backend compose
    differently and are not taken for copies of each other."""

    name = "symbolic"
    sample_rate = 44100
    min_seconds, max_seconds = MIN_MUSIC_SECONDS, MAX_MUSIC_SECONDS

    def __init__(
        self, soundfont: str | None = None, seed: int | None = None, renderer: str | None = None
    ) -> None:
        self.seed = secrets.randbits(31) if seed is None else int(seed)
        self.renderer, self.model = open_renderer(soundfont, self.sample_rate, renderer)

    def plan(self, prompt: str) -> Plan:
        """What ``compose`` will play for this prompt (its blanks filled reproducibly)."""
        return plan_music(parse_music_prompt(prompt), self._rng(prompt))

    def _rng(self, prompt: str) -> random.Random:
        return random.Random(zlib.crc32(prompt.encode()) ^ self.seed)

    def compose(
        self, prompt: str, duration: float, omit: tuple[str, ...] = ()
    ) -> tuple[np.ndarray, int]:
        """``duration`` seconds (1-60) of mono float32 music for ``prompt``. ``omit`` names
        instruments of the plan to leave out of the mix (the red team's "right piece with
        its drums missing"); the other parts are the ones the full piece plays."""
        if not self.min_seconds <= duration <= self.max_seconds:
            raise CallerError(f"duration must be {self.min_seconds:g}-{self.max_seconds:g} s")
        rng = self._rng(prompt)
        plan = plan_music(parse_music_prompt(prompt), rng)
        parts = Composer(plan, rng).compose(duration)
        played = [p.instrument for p in parts]
        log.info(
            "composing %s %s in %s %s at %g BPM for %s%s",
            plan.mood,
            plan.genre,
            NOTE_NAMES[plan.tonic],
            plan.mode,
            plan.bpm,
            ", ".join(played),
            "".join(f" ({i} left out)" for i in plan.instruments if i not in played),
        )
        parts = [p for p in parts if p.instrument not in omit]
        stems = self.renderer.render(parts, duration + 0.5)
        audio = mix(stems, parts, self.sample_rate)
        return master(audio, self.sample_rate, duration), self.sample_rate
