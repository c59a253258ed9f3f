"""Prompts for speech services that never run dry.

Sentences are assembled from templates filled with names, places, numbers, dates,
ordinals, times and prices, so that a miner cannot cache answers and must read numbers
correctly. Each prompt is rewritten to words (``chorus.text.spell_out``) before it is
sent: the miner is judged on speaking, not on guessing how to read "$12.50". Operators
can add a corpus file with one sentence per line.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from chorus.errors import CallerError
from chorus.text import normalize, spell_out

CHARS_PER_SECOND = 15.0  # normalised prompt characters per second of natural speech

NAMES = [
    "Alice",
    "Marcus",
    "Priya",
    "Tomás",
    "Grace",
    "Kenji",
    "Olivia",
    "Samuel",
    "Amara",
    "Lena",
    "Victor",
    "Hannah",
    "Daniel",
    "Sofia",
    "Ibrahim",
    "Clara",
    "Noah",
    "Maya",
]
PLACES = [
    "Denver",
    "the harbour",
    "Lisbon",
    "the old library",
    "Nairobi",
    "the train station",
    "Toronto",
    "the museum",
    "Melbourne",
    "the market square",
    "Oslo",
    "the city hall",
]
THINGS = [
    "tickets",
    "books",
    "oranges",
    "chairs",
    "lamps",
    "bicycles",
    "umbrellas",
    "notebooks",
    "paintings",
    "plates",
    "candles",
    "jackets",
]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
TEMPLATES = [
    "{name} bought {n} {thing} for ${price} at {place}.",
    "The meeting with {name} moved to {month} {day_ord}, at {hour}:{minute:02d}.",
    "Please call {name} before {hour} o'clock; the package costs ${price}.",
    "In {year}, {name} walked {n} miles from {place} to {place2}.",
    "Our {ord} guest tonight is {name}, who arrived from {place} on {month} {day_ord}.",
    "The train to {place} leaves at {hour}:{minute:02d} and the fare is ${price}.",
    "{name} scored {pct}% on the test, which placed her {ord} out of {n} students.",
    "About {big} people visited {place} in {year}, nearly {pct}% more than before.",
    "Bring {n} {thing} to {place} on {month} {day_ord}; {name} will pay ${price}.",
    "The {ord} chapter, written by {name} in {year}, describes a storm over {place}.",
    "If the price rises to ${price}, {name} will order only {n} {thing}.",
    "We expect {name} at {place} at {hour}:{minute:02d} on the {day_ord} of {month}.",
]
SIMPLE = [
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "A gentle breeze carried the smell of fresh bread through the narrow street.",
    "She opened the window and watched the city wake up under a pale blue sky.",
    "Good science depends on careful measurement and honest reporting of results.",
    "The children laughed as the kite climbed higher above the green hills.",
    "Every evening the old clock in the hall chimes softly before dinner.",
]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(frozen=True)
class SpeechPrompt:
    """``text`` is the prompt spelled out (numbers, dates, sums as words), as it is sent."""

    text: str


class SpeechPrompts:
    """An endless, seeded source of varied sentences (and the operator's own corpus)."""

    def __init__(self, seed: int | None = None, corpus: str | Path | None = None):
        self.rng = random.Random(seed)
        self.corpus: list[str] = []
        if corpus:
            try:
                lines = Path(corpus).expanduser().read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
                raise CallerError(f"cannot read corpus {corpus}: {why or e}") from None
            self.corpus = [s.strip() for s in lines if s.strip()]
            if not self.corpus:
                raise CallerError(f"corpus {corpus} has no sentences")

    def sentence(self) -> str:
        r = self.rng
        if self.corpus and r.random() < 0.5:
            return r.choice(self.corpus)
        if r.random() < 0.15:
            return r.choice(SIMPLE)
        place, place2 = r.sample(PLACES, 2)
        return r.choice(TEMPLATES).format(
            name=r.choice(NAMES),
            place=place,
            place2=place2,
            thing=r.choice(THINGS),
            n=r.randint(2, 40),
            big=r.randint(1_200, 98_000),
            price=f"{r.randint(1, 250)}.{r.choice([0, 5, 25, 50, 75, 99]):02d}",
            month=r.choice(MONTHS),
            day_ord=_ordinal(r.randint(1, 28)),
            ord=_ordinal(r.randint(1, 12)),
            hour=r.randint(1, 12),
            minute=r.choice([0, 5, 15, 30, 45]),
            year=r.randint(1950, 2025),
            pct=r.randint(3, 95),
        )

    def next(self, sentences: int = 1) -> SpeechPrompt:
        """A prompt of one or more sentences (longer prompts test longer audio)."""
        written = " ".join(self.sentence() for _ in range(sentences))
        return SpeechPrompt(spell_out(written))


def expected_seconds(text: str) -> float:
    """How long a natural reading of ``text`` takes, from its normalised length."""
    return max(len(normalize(text)), 1) / CHARS_PER_SECOND


def speech_text(seconds: float, seed: int = 0) -> str:
    """Prompt sentences adding up to about ``seconds`` of speech (for benchmarks)."""
    prompts, parts = SpeechPrompts(seed=seed), []
    while expected_seconds(" ".join(parts)) < seconds:
        parts.append(prompts.next().text)
    return " ".join(parts)
