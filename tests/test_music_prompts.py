"""Music prompts: generated text carries its ground truth, and free text is read back."""

from __future__ import annotations

import itertools
from dataclasses import replace

from chorus.music_prompts import (
    GENRES,
    INSTRUMENTS,
    MusicPrompt,
    music_prompts,
    parse_music_prompt,
)


def _canon(p: MusicPrompt) -> MusicPrompt:
    return replace(p, instruments=tuple(sorted(p.instruments)))


def test_generated_prompts_are_reproducible_and_parse_back_to_their_truth() -> None:
    first = [p.text for p in itertools.islice(music_prompts(seed=3), 50)]
    assert first == [p.text for p in itertools.islice(music_prompts(seed=3), 50)]
    assert first != [p.text for p in itertools.islice(music_prompts(seed=4), 50)]
    templates = set()
    for p in itertools.islice(music_prompts(seed=11), 300):
        assert p.genre in GENRES and p.bpm and p.key and p.mode and p.energy and p.instruments
        assert all(i in INSTRUMENTS for i in p.instruments)
        assert _canon(parse_music_prompt(p.text)) == _canon(p), p.text
        templates.add(p.text.split()[0])
    assert len(templates) >= 5  # varied sentences, not one template


def test_parser_reads_free_text() -> None:
    p = parse_music_prompt(
        "An upbeat funk groove in E minor at 112 BPM with slap bass, electric piano and drums"
    )
    assert (p.genre, p.bpm, p.key, p.mode) == ("funk", 112.0, "E", "minor")
    assert p.instruments == ("slap bass", "electric piano", "drums")
    assert p.mood is None and p.energy is None  # "upbeat" is a tempo word here

    p = parse_music_prompt("slow, sad piano ballad in F sharp minor without drums")
    assert (p.key, p.mode, p.mood, p.bpm, p.no_drums) == ("F#", "minor", "sad", None, True)
    assert p.bpm_range is not None and p.bpm_range[1] <= 90
    assert p.instruments == ("piano",)

    p = parse_music_prompt("Mellow lo-fi hip hop, Bbm, 85 bpm, rhodes and a soft 808")
    assert (p.genre, p.key, p.mode, p.bpm, p.energy) == ("lofi", "Bb", "minor", 85.0, "low")
    assert p.instruments == ("electric piano", "synth bass")

    p = parse_music_prompt("Epic orchestral score in the key of D with choir and brass, tempo 90")
    assert (p.genre, p.mood, p.key, p.mode, p.bpm) == ("classical", "epic", "D", None, 90.0)

    assert parse_music_prompt("a slow waltz in c minor").key == "C"
    p = parse_music_prompt("A minor-key ballad")  # an article and a mode, not A minor
    assert (p.key, p.mode) == (None, "minor")

    p = parse_music_prompt("A calm high-energy piece")  # "A" is an article, not a key
    assert (p.key, p.mode, p.mood, p.energy) == (None, None, "calm", "high")

    empty = parse_music_prompt("something nice")
    assert empty == MusicPrompt() and empty.tonic is None
