"""Structured music prompts: what a validator asks a music miner for, and how to read it back.

A validator makes a `MusicPrompt` (genre, mood, tempo, key and mode, instruments, energy),
sends only its natural-language text, and keeps the structure as ground truth for scoring.
`parse_music_prompt` recovers the same structure from any free text, so the evaluator can
also score prompts written by a person; whatever the text does not say stays ``None``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_PITCH_CLASS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

ENERGIES = ("low", "medium", "high")


@dataclass(frozen=True)
class Genre:
    """Vocabulary for one genre: its words in text, a usual tempo range, usual moods and
    instruments (used to make plausible prompts and to fill in what a prompt leaves out)."""

    aliases: tuple[str, ...]
    bpm: tuple[int, int]
    moods: tuple[str, ...]
    instruments: tuple[str, ...]
    noun: str = "track"


GENRES: dict[str, Genre] = {
    "pop": Genre(
        ("pop",),
        (92, 128),
        ("happy", "uplifting", "romantic", "nostalgic"),
        ("piano", "electric guitar", "synth pad", "bass", "drums"),
        "song",
    ),
    "rock": Genre(
        ("rock",),
        (100, 150),
        ("energetic", "uplifting", "angry", "epic"),
        ("distorted guitar", "electric guitar", "bass", "drums", "organ"),
        "anthem",
    ),
    "jazz": Genre(
        ("jazz", "swing"),
        (90, 160),
        ("romantic", "calm", "playful", "nostalgic"),
        ("piano", "upright bass", "drums", "saxophone", "trumpet", "vibraphone"),
        "tune",
    ),
    "funk": Genre(
        ("funk", "funky"),
        (96, 120),
        ("happy", "playful", "energetic"),
        ("slap bass", "electric piano", "electric guitar", "drums", "brass"),
        "groove",
    ),
    "blues": Genre(
        ("blues", "bluesy"),
        (70, 110),
        ("sad", "melancholic", "nostalgic"),
        ("electric guitar", "organ", "bass", "drums", "harmonica"),
        "shuffle",
    ),
    "electronic": Genre(
        ("electronic", "edm", "electro", "dance", "house", "techno"),
        (118, 132),
        ("energetic", "uplifting", "dark", "dreamy"),
        ("synth bass", "synth lead", "synth pad", "drums"),
        "track",
    ),
    "hip hop": Genre(
        ("hip hop", "hip-hop", "hiphop", "rap", "trap", "boom bap"),
        (80, 100),
        ("dark", "tense", "playful", "melancholic"),
        ("electric piano", "synth bass", "drums", "strings"),
        "beat",
    ),
    "lofi": Genre(
        ("lofi", "lo-fi", "chillhop"),
        (70, 90),
        ("calm", "nostalgic", "dreamy"),
        ("electric piano", "bass", "drums", "vibraphone"),
        "beat",
    ),
    "ambient": Genre(
        ("ambient", "drone", "meditation"),
        (60, 80),
        ("calm", "dreamy", "mysterious", "melancholic"),
        ("synth pad", "strings", "bells", "piano", "harp"),
        "soundscape",
    ),
    "classical": Genre(
        ("classical", "orchestral", "baroque", "chamber"),
        (66, 132),
        ("romantic", "melancholic", "calm", "epic"),
        ("strings", "piano", "flute", "cello", "harp", "clarinet"),
        "piece",
    ),
    "cinematic": Genre(
        ("cinematic", "film score", "soundtrack", "epic score"),
        (70, 120),
        ("epic", "tense", "mysterious", "uplifting"),
        ("strings", "brass", "choir", "drums", "piano"),
        "cue",
    ),
    "folk": Genre(
        ("folk", "country", "bluegrass", "americana"),
        (84, 124),
        ("happy", "nostalgic", "calm", "melancholic"),
        ("acoustic guitar", "banjo", "violin", "bass", "harmonica"),
        "tune",
    ),
    "reggae": Genre(
        ("reggae", "ska", "dub"),
        (70, 92),
        ("happy", "calm", "playful"),
        ("organ", "bass", "electric guitar", "drums"),
        "groove",
    ),
    "bossa nova": Genre(
        ("bossa nova", "bossa", "latin", "samba"),
        (110, 140),
        ("romantic", "calm", "happy"),
        ("acoustic guitar", "upright bass", "flute", "drums", "piano"),
        "tune",
    ),
    "synthwave": Genre(
        ("synthwave", "retrowave", "80s synth", "outrun"),
        (90, 118),
        ("nostalgic", "dreamy", "dark", "energetic"),
        ("synth lead", "synth bass", "synth pad", "drums"),
        "track",
    ),
    "metal": Genre(
        ("metal", "heavy metal", "thrash"),
        (130, 180),
        ("angry", "dark", "epic"),
        ("distorted guitar", "bass", "drums"),
        "riff",
    ),
}

# mood -> (mode it suggests or None, energy it suggests)
MOODS: dict[str, tuple[str | None, str]] = {
    "happy": ("major", "medium"),
    "uplifting": ("major", "high"),
    "playful": ("major", "medium"),
    "romantic": (None, "low"),
    "nostalgic": (None, "low"),
    "calm": (None, "low"),
    "dreamy": (None, "low"),
    "energetic": (None, "high"),
    "epic": (None, "high"),
    "sad": ("minor", "low"),
    "melancholic": ("minor", "low"),
    "dark": ("minor", "medium"),
    "mysterious": ("minor", "low"),
    "tense": ("minor", "medium"),
    "angry": ("minor", "high"),
}
_MOOD_WORDS: dict[str, str] = {
    **{m: m for m in MOODS},
    "joyful": "happy",
    "cheerful": "happy",
    "bright": "happy",
    "sunny": "happy",
    "hopeful": "uplifting",
    "triumphant": "uplifting",
    "inspiring": "uplifting",
    "fun": "playful",
    "quirky": "playful",
    "bouncy": "playful",
    "love": "romantic",
    "tender": "romantic",
    "sensual": "romantic",
    "wistful": "nostalgic",
    "retro": "nostalgic",
    "relaxing": "calm",
    "relaxed": "calm",
    "peaceful": "calm",
    "chill": "calm",
    "serene": "calm",
    "soothing": "calm",
    "mellow": "calm",
    "ethereal": "dreamy",
    "floating": "dreamy",
    "hazy": "dreamy",
    "driving": "energetic",
    "exciting": "energetic",
    "lively": "energetic",
    "heroic": "epic",
    "majestic": "epic",
    "grand": "epic",
    "sorrowful": "sad",
    "mournful": "sad",
    "gloomy": "sad",
    "somber": "sad",
    "melancholy": "melancholic",
    "bittersweet": "melancholic",
    "ominous": "dark",
    "sinister": "dark",
    "brooding": "dark",
    "moody": "dark",
    "eerie": "mysterious",
    "spooky": "mysterious",
    "haunting": "mysterious",
    "suspenseful": "tense",
    "anxious": "tense",
    "urgent": "tense",
    "aggressive": "angry",
    "furious": "angry",
    "fierce": "angry",
}

# canonical instrument -> words that name it in text (longest match wins)
INSTRUMENTS: dict[str, tuple[str, ...]] = {
    "piano": ("piano", "grand piano", "keys"),
    "electric piano": ("electric piano", "rhodes", "wurlitzer", "e-piano"),
    "organ": ("organ", "hammond"),
    "acoustic guitar": (
        "acoustic guitar",
        "nylon guitar",
        "classical guitar",
        "fingerpicked guitar",
    ),
    "electric guitar": ("electric guitar", "guitar", "clean guitar", "funky guitar"),
    "distorted guitar": (
        "distorted guitar",
        "overdriven guitar",
        "heavy guitar",
        "guitar riffs",
        "power chords",
    ),
    "bass": ("bass", "bass guitar", "electric bass", "fingered bass", "bassline"),
    "slap bass": ("slap bass", "slapped bass"),
    "upright bass": ("upright bass", "double bass", "acoustic bass", "walking bass"),
    "synth bass": ("synth bass", "808", "sub bass", "bass synth"),
    "drums": ("drums", "drum kit", "drum", "percussion", "breakbeat", "drum machine"),
    "strings": ("strings", "string section", "string ensemble", "orchestra", "violins"),
    "violin": ("violin", "fiddle"),
    "cello": ("cello", "cellos"),
    "choir": ("choir", "voices", "choral"),
    "trumpet": ("trumpet", "muted trumpet"),
    "brass": ("brass", "horns", "horn section", "brass section"),
    "saxophone": ("saxophone", "sax", "tenor sax", "alto sax"),
    "flute": ("flute", "flutes"),
    "clarinet": ("clarinet",),
    "synth pad": ("synth pad", "pad", "pads", "warm pad"),
    "synth lead": ("synth lead", "lead synth", "synth", "synthesizer", "arpeggiator"),
    "vibraphone": ("vibraphone", "vibes"),
    "marimba": ("marimba", "xylophone"),
    "harp": ("harp",),
    "bells": ("bells", "glockenspiel", "celesta", "music box", "chimes"),
    "banjo": ("banjo",),
    "harmonica": ("harmonica",),
    "accordion": ("accordion",),
    "kalimba": ("kalimba", "thumb piano"),
}

# words that name a tempo, as (low, high) BPM; a stated number always wins
TEMPO_WORDS: dict[str, tuple[float, float]] = {
    "very slow": (40, 66),
    "largo": (40, 66),
    "adagio": (55, 80),
    "slow": (50, 88),
    "ballad": (55, 85),
    "downtempo": (60, 95),
    "laid-back": (70, 100),
    "laid back": (70, 100),
    "relaxed tempo": (70, 100),
    "mid-tempo": (88, 118),
    "midtempo": (88, 118),
    "moderate": (88, 118),
    "andante": (76, 108),
    "moderato": (96, 120),
    "upbeat": (110, 140),
    "lively": (115, 145),
    "allegro": (115, 150),
    "brisk": (115, 150),
    "fast": (130, 180),
    "uptempo": (120, 160),
    "up-tempo": (120, 160),
    "presto": (160, 200),
    "very fast": (160, 210),
    "frantic": (160, 210),
}
_ENERGY_WORDS: dict[str, str] = {
    "low energy": "low",
    "low-energy": "low",
    "gentle": "low",
    "soft": "low",
    "quiet": "low",
    "subdued": "low",
    "minimal": "low",
    "sparse": "low",
    "delicate": "low",
    "medium energy": "medium",
    "medium-energy": "medium",
    "moderate energy": "medium",
    "steady": "medium",
    "balanced": "medium",
    "high energy": "high",
    "high-energy": "high",
    "intense": "high",
    "powerful": "high",
    "explosive": "high",
    "full-throttle": "high",
    "pumping": "high",
    "hard-hitting": "high",
}


@dataclass(frozen=True)
class MusicPrompt:
    """What a music prompt asks for. ``None`` (or an empty tuple) means "not said".

    ``key`` is the tonic's name (one of `NOTE_NAMES`), ``mode`` is "major" or "minor",
    ``bpm`` is a stated tempo and ``bpm_range`` a tempo implied by words ("slow")."""

    genre: str | None = None
    mood: str | None = None
    bpm: float | None = None
    key: str | None = None
    mode: str | None = None
    instruments: tuple[str, ...] = ()
    energy: str | None = None
    bpm_range: tuple[float, float] | None = None
    no_drums: bool = False
    text: str = field(default="", compare=False)

    @property
    def tonic(self) -> int | None:
        """The key's pitch class (C=0 … B=11), or None."""
        return None if self.key is None else NOTE_NAMES.index(self.key)


def _key_name(letter: str, accidental: str) -> str:
    pc = (_PITCH_CLASS[letter.upper()] + {"#": 1, "b": -1, "": 0}[accidental]) % 12
    return NOTE_NAMES[pc]


def _accidental(raw: str | None) -> str:
    raw = (raw or "").strip().lower()
    if raw in ("#", "♯", "sharp", "-sharp"):
        return "#"
    if raw in ("b", "♭", "flat", "-flat"):
        return "b"
    return ""


_KEY_RE = re.compile(
    r"\b([A-G])(#|♯|♭|b(?=m\b|[^a-z]|$)|[ -]sharp\b|[ -]flat\b)?[ -]?"
    r"(major|minor|maj\b|min\b|m\b|dorian|aeolian|ionian)?",
)
_LOWER_KEY_RE = re.compile(
    r"\b(?:in|key of)\s+([a-g])(#|♯|♭|b|[ -]sharp|[ -]flat)?[ -](major|minor)\b", re.I
)
_BPM_RE = re.compile(
    r"(\d{2,3}(?:\.\d+)?)\s*(?:-|\s)?(?:bpm|beats per minute|beats a minute|beats/min)",
    re.IGNORECASE,
)
_TEMPO_NUM_RE = re.compile(r"\btempo (?:of |at |around |=\s*)?(\d{2,3}(?:\.\d+)?)\b", re.I)
_NO_DRUMS_RE = re.compile(
    r"\b(no|without)\s+(drums|percussion|beat)\b|\b(solo|unaccompanied|a cappella)\b", re.I
)


def _find_key(text: str) -> tuple[str | None, str | None]:
    """The first "E minor" / "F# major" / "Bbm" / "key of D" in the text."""
    for m in _KEY_RE.finditer(text):
        letter, acc, mode_word = m.group(1), m.group(2), (m.group(3) or "").lower()
        before = text[max(0, m.start() - 12) : m.start()].lower()
        if not mode_word and not re.search(r"(key of|in the key|\bkey)\s*$", before):
            continue  # a bare capital letter ("A calm piece") is not a key
        after = text[m.end() : m.end() + 4].lower()
        if (
            letter == "A"
            and (mode_word in ("", "m") or re.match(r"[ -]key", after))
            and not re.search(r"(in|of)\s*$", before)
        ):
            continue  # "A m...", "A minor-key ballad": an article, not the key of A
        mode = None
        if mode_word in ("major", "maj", "ionian"):
            mode = "major"
        elif mode_word in ("minor", "min", "m", "aeolian", "dorian"):
            mode = "minor"
        return _key_name(letter, _accidental(acc)), mode
    lower = _LOWER_KEY_RE.search(text)  # "in c minor": lower case only after "in"/"key of"
    if lower:
        return _key_name(lower.group(1), _accidental(lower.group(2))), lower.group(3).lower()
    mode_only = re.search(r"\b(major|minor)[ -](key|tonality|mode|scale)\b", text, re.I)
    return None, (mode_only.group(1).lower() if mode_only else None)


def _find_words(text: str, table: dict[str, str]) -> list[str]:
    """Canonical names whose words occur in ``text``, longest phrase first, each span once."""
    low = f" {text.lower()} "
    found: list[tuple[int, str]] = []
    for word in sorted(table, key=len, reverse=True):
        m = re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", low)
        if m:
            found.append((m.start(), table[word]))
            low = low[: m.start()] + " " * (m.end() - m.start()) + low[m.end() :]
    out: list[str] = []
    for _, name in sorted(found):
        if name not in out:
            out.append(name)
    return out


_GENRE_WORDS = {alias: name for name, g in GENRES.items() for alias in g.aliases}
_INSTRUMENT_WORDS = {alias: name for name, aliases in INSTRUMENTS.items() for alias in aliases}


def parse_music_prompt(text: str) -> MusicPrompt:
    """Read genre, mood, tempo, key/mode, instruments and energy from free text."""
    bpm = None
    m = _BPM_RE.search(text) or _TEMPO_NUM_RE.search(text)
    if m and 30 <= float(m.group(1)) <= 300:
        bpm = float(m.group(1))
    tempo_words = _find_words(text, {w: w for w in TEMPO_WORDS})
    bpm_range = TEMPO_WORDS[tempo_words[0]] if tempo_words and bpm is None else None
    key, mode = _find_key(text)
    genres = _find_words(text, _GENRE_WORDS)
    moods = _find_words(text, _MOOD_WORDS)
    energies = _find_words(text, _ENERGY_WORDS)
    no_drums = bool(_NO_DRUMS_RE.search(text))
    instruments = tuple(
        i for i in _find_words(text, _INSTRUMENT_WORDS) if not (no_drums and i == "drums")
    )
    return MusicPrompt(
        genre=genres[0] if genres else None,
        mood=moods[0] if moods else None,
        bpm=bpm,
        key=key,
        mode=mode,
        instruments=instruments,
        energy=energies[0] if energies else None,
        bpm_range=bpm_range,
        no_drums=no_drums,
        text=text,
    )


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _article(word: str) -> str:
    return "An" if word[0].lower() in "aeiou" else "A"


_ENERGY_PHRASES = {
    "low": ("low-energy", "gentle", "soft"),
    "medium": ("medium-energy", "steady", "balanced"),
    "high": ("high-energy", "intense", "powerful"),
}
_TEMPLATES = (
    "{A} {mood} {genre} {noun} in {key} at {bpm} BPM with {instruments}; {energy} throughout.",
    "{Genre} {noun}, {mood} and {energy}, {bpm} BPM, {key}, featuring {instruments}.",
    "Compose a {energy}, {mood} {genre} {noun} in {key} ({bpm} bpm) for {instruments}.",
    "{bpm} BPM {genre} in {key}: {instruments}. The mood is {mood}, the feel {energy}.",
    "I'd like {a} {mood} {genre} {noun} with {instruments}, {energy}, in {key} at {bpm} BPM.",
    "{Energy} {genre} {noun} in the key of {key}, tempo {bpm} BPM, {mood}, with {instruments}.",
)


def render_music_prompt(p: MusicPrompt, rng: random.Random) -> str:
    """One natural sentence stating everything ``p`` holds (it must hold every field)."""
    genre = GENRES[p.genre or "pop"]
    energy = rng.choice(_ENERGY_PHRASES[p.energy or "medium"])
    fields = {
        "mood": p.mood,
        "genre": p.genre,
        "Genre": (p.genre or "").capitalize(),
        "noun": genre.noun,
        "key": f"{p.key} {p.mode}",
        "bpm": f"{p.bpm:g}",
        "instruments": _join(list(p.instruments)),
        "energy": energy,
        "Energy": energy.capitalize(),
    }
    template = rng.choice(_TEMPLATES)
    fields["A"] = _article(str(p.mood))
    fields["a"] = fields["A"].lower()
    return template.format(**fields)


def random_music_prompt(rng: random.Random) -> MusicPrompt:
    """A plausible, fully specified prompt: the mood fits the genre, the mode fits the mood."""
    name = rng.choice(sorted(GENRES))
    genre = GENRES[name]
    mood = rng.choice(genre.moods)
    mood_mode, mood_energy = MOODS[mood]
    mode = mood_mode or rng.choice(("major", "minor"))
    energy = mood_energy if rng.random() < 0.6 else rng.choice(ENERGIES)
    bpm = float(rng.randint(*genre.bpm))
    n = rng.randint(2, min(4, len(genre.instruments)))
    instruments = tuple(rng.sample(genre.instruments, n))
    p = MusicPrompt(
        genre=name,
        mood=mood,
        bpm=bpm,
        key=rng.choice(NOTE_NAMES),
        mode=mode,
        instruments=instruments,
        energy=energy,
    )
    return replace(p, text=render_music_prompt(p, rng))


def music_prompts(seed: int | None = None) -> Iterator[MusicPrompt]:
    """An endless, reproducible stream of prompts (the validator's source)."""
    rng = random.Random(seed)
    while True:
        yield random_music_prompt(rng)
