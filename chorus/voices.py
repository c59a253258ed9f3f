"""Reference voices for voice cloning: who a validator asks a miner to sound like.

The built-in bank is ten speakers from Debian's Festival voices. Each is built from real
recordings of one person (diphone voices concatenate that person's recorded diphones; the
two HTS voices are statistical models trained on one speaker's recordings), and none shares
anything with the Piper voice that miners start from, so a miner cannot pass by returning
stock Piper. Reference clips (two sentences, about 4-9 s) are rendered once into a cache
folder. Operators can use their own recordings instead with ``VoiceBank.from_folder``.

Festival is a system package: ``apt-get install festival`` plus the ``festvox-*`` packages in
``FESTIVAL_PACKAGES``. Without them the built-in bank is simply smaller (or empty) and says
which packages would fill it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chorus.audio import AudioError, read, write
from chorus.errors import CallerError

AUDIO_SUFFIXES = (".wav", ".flac")
FESTIVAL_DIRS = (Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices"))


class VoiceBankError(CallerError):
    """A voice that is unknown or cannot be rendered; the message says how to fix it."""


_EN = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas and five thick slabs of blue cheese.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "The birch canoe slid on the smooth planks of the old wooden dock.",
    "Glue the sheet to the dark blue background before the paint dries.",
)
_IT = (
    "La casa di mio nonno era grande e piena di libri antichi.",
    "Domani andiamo al mare con tutta la famiglia, se il tempo lo permette.",
    "Il treno per Milano parte alle otto e mezza dalla stazione centrale.",
    "Mi piace molto leggere il giornale la mattina con un caffè.",
    "Nel giardino della scuola crescono rose rosse e girasoli gialli.",
    "Il ristorante in fondo alla strada chiude sempre a mezzanotte.",
)
_CS = (
    "Dobrý den, jak se dnes máte? Venku je krásné počasí.",
    "Zítra pojedeme vlakem do Prahy navštívit babičku.",
    "V knihovně je mnoho starých a zajímavých knih.",
    "Na zahradě kvetou růže a tulipány všech barev.",
    "Můj bratr pracuje v nemocnici jako lékař už deset let.",
    "Večer si rádi sedneme u krbu a posloucháme hudbu.",
)
_CA = (
    "Bon dia, com estàs? Avui fa un dia molt bonic a la ciutat.",
    "Demà anirem a la platja amb tota la família.",
    "El tren cap a Girona surt a les vuit del matí.",
    "M'agrada molt llegir el diari amb un cafè calent.",
    "Al jardí de l'escola hi creixen roses vermelles i gira-sols.",
    "La biblioteca del barri obre cada dia a les deu.",
)
_FI = (
    "Hyvää huomenta, miten sinä voit tänään?",
    "Huomenna menemme junalla Helsinkiin tapaamaan isoäitiä.",
    "Kirjastossa on paljon vanhoja ja mielenkiintoisia kirjoja.",
    "Puutarhassa kukkivat ruusut ja tulppaanit.",
    "Veljeni on työskennellyt sairaalassa lääkärinä kymmenen vuotta.",
    "Illalla istumme takan ääressä ja kuuntelemme musiikkia.",
)


@dataclass(frozen=True)
class FestivalVoice:
    """One built-in speaker: the Festival voice that renders it and what it says."""

    name: str
    festival: str
    package: str
    description: str
    sentences: tuple[str, ...]
    encoding: str = "latin-1"

    def installed(self) -> bool:
        return shutil.which("text2wave") is not None and any(
            (d / lang / self.festival).is_dir() for d in FESTIVAL_DIRS for lang in _langs(d)
        )


def _langs(root: Path) -> list[str]:
    return [p.name for p in root.iterdir()] if root.is_dir() else []


BUILTIN = (
    FestivalVoice("kal", "kal_diphone", "festvox-kallpc16k", "US English male, diphone", _EN),
    FestivalVoice("ked", "ked_diphone", "festvox-kdlpc16k", "US English male, diphone", _EN),
    FestivalVoice(
        "slt", "cmu_us_slt_arctic_hts", "festvox-us-slt-hts", "US English female, HTS", _EN
    ),
    FestivalVoice("lp", "lp_diphone", "festvox-italp16k", "Italian female, diphone", _IT),
    FestivalVoice("pc", "pc_diphone", "festvox-itapc16k", "Italian male, diphone", _IT),
    FestivalVoice(
        "dita", "czech_dita", "festvox-czech-dita", "Czech female, diphone", _CS, "iso-8859-2"
    ),
    FestivalVoice(
        "machac", "czech_machac", "festvox-czech-machac", "Czech male, diphone", _CS, "iso-8859-2"
    ),
    FestivalVoice("ona", "upc_ca_ona_hts", "festvox-ca-ona-hts", "Catalan female, HTS", _CA),
    FestivalVoice("lj", "suo_fi_lj_diphone", "festvox-suopuhe-lj", "Finnish female, diphone", _FI),
    FestivalVoice("mv", "hy_fi_mv_diphone", "festvox-suopuhe-mv", "Finnish male, diphone", _FI),
)
FESTIVAL_PACKAGES = ("festival", *(v.package for v in BUILTIN))
CLIPS_PER_VOICE = 3
MAX_CLIP_SECONDS = 10.0


def default_cache_dir() -> Path:
    """``$CHORUS_VOICE_CACHE``, else ``~/.cache/chorus/voices``."""
    env = os.environ.get("CHORUS_VOICE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "chorus" / "voices"


def render_festival(voice: FestivalVoice, text: str) -> tuple[np.ndarray, int]:
    """Speak ``text`` with a Festival voice through ``text2wave``."""
    if not voice.installed():
        raise VoiceBankError(
            f"voice {voice.name!r} needs Festival: apt-get install festival {voice.package}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        proc = subprocess.run(
            ["text2wave", "-eval", f"(voice_{voice.festival})", "-o", str(out)],
            input=text.encode(voice.encoding),
            capture_output=True,
            timeout=120,
        )
        if proc.returncode != 0 or not out.exists():
            err = proc.stderr.decode(errors="replace").strip()[-300:]
            raise VoiceBankError(f"festival failed for voice {voice.name!r}: {err}")
        return read(out)


def trim(samples: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """Cut leading/trailing silence (keeping a short margin) and cap at ``MAX_CLIP_SECONDS``."""
    loud = np.flatnonzero(np.abs(samples) > 0.02 * (np.max(np.abs(samples)) or 1.0))
    if loud.size == 0:
        return samples, rate
    margin = int(0.15 * rate)
    start, end = max(loud[0] - margin, 0), loud[-1] + margin
    return samples[start : min(end, start + int(MAX_CLIP_SECONDS * rate))], rate


def _clip_texts(voice: FestivalVoice) -> list[str]:
    """Pairs of sentences, each pair one reference clip: long enough for a speaker embedding."""
    s = voice.sentences
    return [f"{s[2 * i]} {s[2 * i + 1]}" for i in range(min(CLIPS_PER_VOICE, len(s) // 2))]


class VoiceBank:
    """Named speakers, each with one or more reference recordings on disk."""

    def __init__(
        self,
        recordings: dict[str, list[Path]],
        missing: dict[str, str] | None = None,
        festival: dict[str, FestivalVoice] | None = None,
        cache_dir: Path | None = None,
    ):
        self._recordings = recordings
        self._festival = festival or {}
        self._cache_dir = cache_dir
        self.missing = missing or {}

    @classmethod
    def builtin(cls, cache_dir: str | Path | None = None) -> VoiceBank:
        """The Festival speakers that are installed; clips are rendered on first use."""
        available = {v.name: v for v in BUILTIN if v.installed()}
        missing = {
            v.name: f"apt-get install festival {v.package}"
            for v in BUILTIN
            if v.name not in available
        }
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        return cls({}, missing=missing, festival=available, cache_dir=cache)

    @classmethod
    def from_folder(cls, path: str | Path) -> VoiceBank:
        """An operator's recordings: ``path/<voice>/*.wav|flac`` (one folder per speaker) or
        ``path/<voice>.wav|flac`` (one recording per speaker)."""
        root = Path(path)
        if not root.is_dir():
            raise VoiceBankError(f"voice folder {root} does not exist")
        recordings: dict[str, list[Path]] = {}
        for entry in sorted(root.iterdir()):
            if entry.is_dir():
                files = sorted(p for p in entry.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
                if files:
                    recordings[entry.name] = files
            elif entry.suffix.lower() in AUDIO_SUFFIXES:
                recordings.setdefault(entry.stem, []).append(entry)
        if not recordings:
            raise VoiceBankError(f"no .wav or .flac recordings in {root}")
        return cls(recordings)

    @property
    def voices(self) -> list[str]:
        return sorted({*self._recordings, *self._festival})

    def screen(self, problem: Callable[[np.ndarray, int], str | None]) -> dict[str, str]:
        """Leave out the operator recordings that cannot be read or in which ``problem``
        (samples, rate) finds a problem, and voices left with none; returns each left-out
        file with its reason. Festival clips are rendered on first use and not screened."""
        refused: dict[str, str] = {}
        for name, paths in list(self._recordings.items()):
            kept = []
            for path in paths:
                try:
                    why = problem(*read(path))
                except AudioError as e:
                    why = str(e)
                if why:
                    refused[str(path)] = why
                else:
                    kept.append(path)
            if kept:
                self._recordings[name] = kept
            else:
                del self._recordings[name]
        return refused

    def describe(self, name: str) -> str:
        voice = self._festival.get(name)
        return f"{voice.description} (Festival {voice.festival})" if voice else "operator recording"

    def recordings(self, name: str) -> list[Path]:
        """The reference files of ``name``, rendering and caching Festival clips if needed."""
        if name not in self._recordings:
            if name in self.missing:
                raise VoiceBankError(f"voice {name!r} is not installed: {self.missing[name]}")
            if name not in self._festival:
                raise VoiceBankError(f"unknown voice {name!r}; this bank has {self.voices}")
            self._recordings[name] = self._render(self._festival[name])
        return self._recordings[name]

    def reference(
        self, name: str, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, int]:
        """One reference recording of ``name`` (chosen with ``rng``; the first without)."""
        files = self.recordings(name)
        path = files[int(rng.integers(len(files)))] if rng is not None else files[0]
        try:
            return read(path)
        except AudioError as e:
            raise VoiceBankError(str(e)) from None

    def _render(self, voice: FestivalVoice) -> list[Path]:
        assert self._cache_dir is not None
        paths = []
        for text in _clip_texts(voice):
            key = hashlib.sha1(f"{voice.festival}|{text}".encode()).hexdigest()[:12]
            path = self._cache_dir / voice.name / f"{key}.wav"
            if not path.exists():
                samples, rate = trim(*render_festival(voice, text))
                peak = float(np.max(np.abs(samples))) or 1.0
                tmp = write(
                    path.with_suffix(f".{os.getpid()}.tmp.wav"), samples * (0.9 / peak), rate
                )
                tmp.replace(path)
            paths.append(path)
        return paths
