"""The music red team, as tests: music must be music, and the right music.

On a seeded subset of the validator's own prompts (they state BPM and key, and name drums;
the red team's first cases at its default seed) the symbolic composer earns at least 0.85,
every cheap cheat of `chorus.music_cheats` (a pitched metronome over a drum kit among them)
at most 30 % of that, honest music for another prompt at most half, and the right piece
without the drums it was asked for at most 80 %.
Beside the table, each musicality measure is checked against the imitation it exists to
catch, and honest music of other styles (no drums, a solo instrument, the numpy
synthesizer, 5 to 15 s) must not be taken for an imitation.
"""

from __future__ import annotations

import numpy as np
import pytest

from chorus import music_cheats as cheats
from chorus import redteam
from chorus.errors import CallerError
from chorus.generation.music import RENDERERS, SymbolicMusic, bundled_soundfont
from chorus.scoring.music import STATIC_SHARE, MusicEvaluator
from chorus.scoring.runtime import ScoringRuntime
from chorus.services import get
from chorus.services.music import MusicChallenge, MusicResult

CASES = 3
CHEATS = (
    "clicks + drone + bass in key and tempo",
    "static loop of one bar",
    "single held chord",
    "random notes in key",
    "noise pulsed on the beat",
    "scale blips on the beat + drum kit",
    "scale walk, one held note a beat + drum kit",
    "3 s of the piece, then a held chord 15 dB down",
    "3 s of the piece, then it repeated 20 dB down",
    "3 s of the piece amid a held chord 19 dB down",
)
FUNK = "An upbeat funk groove in E minor at 112 BPM with slap bass, electric piano and drums"
# honest music unlike the red team's: no drums, solo instruments, pads, slow, short
STYLES = (
    ("slow sad piano ballad in F sharp minor at 72 bpm, no drums", 8.0),
    ("solo acoustic guitar in D major at 96 BPM, no drums", 5.0),
    ("a calm ambient soundscape with synth pad and strings in A minor at 62 BPM", 12.0),
    ("a gentle flute melody over harp in C major at 70 BPM", 15.0),
    ("classical piece for strings and cello in G major at 80 BPM, no percussion", 10.0),
    ("jazz trio with piano, upright bass and drums in Bb major at 140 BPM", 12.0),
)


@pytest.fixture(scope="module")
def report() -> redteam.ServiceReport:
    return redteam.attack_service(get("music"), CASES, redteam.DEFAULT_SEED, ScoringRuntime())


@pytest.fixture(scope="module")
def evaluator() -> MusicEvaluator:
    return MusicEvaluator()


@pytest.fixture(scope="module")
def composer() -> SymbolicMusic:
    return SymbolicMusic(seed=3)


def _rung(report: redteam.ServiceReport, name: str) -> redteam.Rung:
    return next(r for r in report.rungs if r.name == name)


def test_the_honest_composer_earns_the_floor(report: redteam.ServiceReport) -> None:
    assert report.cases == CASES
    assert report.honest.mean >= 0.85, report.honest.scores


@pytest.mark.parametrize("name", CHEATS)
def test_every_cheap_cheat_earns_at_most_30_percent(
    report: redteam.ServiceReport, name: str
) -> None:
    rung = _rung(report, name)
    assert rung.max_share == 0.3
    assert rung.share <= 0.3, (rung.scores, report.honest.scores)


def test_other_prompts_music_and_missing_drums_are_bounded(report: redteam.ServiceReport) -> None:
    other = _rung(report, "honest music for another prompt")
    assert other.share <= 0.5, other.scores
    no_drums = _rung(report, "right piece, drums missing")
    assert no_drums.share <= 0.8, no_drums.scores
    # and every claim the service declares (bounds, ladders, the floor) holds
    assert not report.failures, report.failures


def _honest_funk(
    evaluator: MusicEvaluator, composer: SymbolicMusic, seconds: float
) -> tuple[np.ndarray, int, MusicChallenge, MusicResult]:
    """The composer's FUNK piece of ``seconds``: its audio, rate, challenge and result."""
    challenge = MusicChallenge(FUNK, seconds)
    music, rate = composer.compose(FUNK, seconds)
    return music, rate, challenge, evaluator.evaluate(music, rate, challenge)


def test_each_measure_catches_the_imitation_it_is_made_for(
    evaluator: MusicEvaluator, composer: SymbolicMusic
) -> None:
    seconds = 10.0
    music, rate, challenge, honest = _honest_funk(evaluator, composer, seconds)
    assert honest.musicality >= 0.9, honest.musicality_parts
    assert all(v >= 0.9 for k, v in honest.musicality_parts.items() if k != "organization")

    def judge(samples: np.ndarray, at: int = cheats.RATE) -> MusicResult:
        return evaluator.evaluate(samples, at, challenge)

    drone = judge(cheats.held_chord(FUNK, seconds))
    assert drone.musicality_parts["change"] == 0.0 and drone.harmonic_change < 0.005
    assert drone.melody_pitches <= 2 and drone.reason == "musicality"
    clicks = judge(cheats.clicks_drone(FUNK, seconds))
    assert clicks.musicality_parts["change"] == 0.0 and clicks.onset_variety < 0.2
    assert clicks.adherence_parts["drums"] < 0.1  # one click timbre is not a drum kit
    loop = judge(cheats.static_loop(music, rate, 112.0, seconds), rate)
    assert loop.loop_distance < 0.03 < 0.15 < honest.loop_distance
    assert loop.musicality_parts["not_loop"] == 0.0 and loop.harmonic_change < 0.005
    notes = judge(cheats.random_notes(FUNK, seconds, seed=1))
    assert notes.persistence < honest.persistence and notes.musicality <= 0.5
    noise = judge(cheats.pulsed_noise(FUNK, seconds))
    assert noise.reason == "not_noise" and noise.musicality <= 0.1
    # a pitched metronome over a drum kit grooves, but its blips die within the beat...
    blips = judge(cheats.scale_walk_kit(FUNK, seconds))
    assert blips.sustain_db < -22.0 < -18.0 < honest.sustain_db
    assert blips.musicality_parts["sustain"] == 0.0
    # ...and held notes of one voice share nothing from beat to beat: the groove alone fails
    walk = judge(cheats.scale_walk_kit(FUNK, seconds, held=True))
    assert walk.persistence < 0.22 and walk.organization == 0.0
    for cheat in (drone, clicks, loop, noise, blips, walk):
        assert cheat.musicality <= 0.1 and cheat.score <= 0.1 * honest.score, cheat.to_json()


def test_one_voice_at_a_slow_tempo_is_still_one_voice(
    evaluator: MusicEvaluator, composer: SymbolicMusic
) -> None:
    """At 60 BPM the beat is read at 120 (the tempo prior prefers 80-160), so a note held a
    beat fills two of the grid's beats, which share it (it kept 93 % of the honest score):
    beats two apart still share nothing, also when the walk starts half a beat late, while
    music keeps its chords."""
    prompt = "A mysterious ambient soundscape in Eb minor at 60 BPM with harp, strings and piano"
    challenge = MusicChallenge(prompt, 12.0)
    honest = evaluator.evaluate(*composer.compose(prompt, 12.0), challenge)
    assert honest.persistence_two_apart >= 0.3 and honest.musicality >= 0.9, honest.to_json()
    walk = cheats.scale_walk_kit(prompt, 12.0, held=True)
    lead_in = np.concatenate([np.zeros(cheats.RATE // 2, np.float32), walk])[: walk.size]
    for samples in (walk, lead_in):
        found = evaluator.evaluate(samples, cheats.RATE, challenge)
        assert found.tempo_bpm == pytest.approx(120.0, rel=0.03)
        assert found.persistence > 0.3 and found.persistence_two_apart < 0.2
        assert found.organization == 0.0 and found.score == 0.0, found.to_json()


def test_a_few_seconds_of_music_and_filler_after_it_do_not_pay(
    evaluator: MusicEvaluator, composer: SymbolicMusic
) -> None:
    seconds = 12.0
    music, rate, challenge, honest = _honest_funk(evaluator, composer, seconds)
    assert honest.quality_parts["not_mostly_quiet"] == 1.0

    def after_3_s(filler: str, db: float, at_s: float = 0.0) -> MusicResult:
        x = cheats.fragment_in_filler(music, rate, FUNK, seconds, filler, db, at_s=at_s)
        return evaluator.evaluate(x, rate, challenge)

    # barely playing after the opening: a quiet stretch is quiet, whatever its notes
    for filler in ("repeat", "chord"):
        quiet = after_3_s(filler, -30.0)
        assert quiet.quality_parts["playing_share"] < 0.5
        assert quiet.reason == "not_mostly_quiet"
        assert quiet.score == 0.0, quiet.to_json()
    # audible, a held chord is judged as the half of the piece it fills: no change
    chord = after_3_s("chord", -12.0)
    assert chord.quality_parts["not_mostly_quiet"] == 1.0
    assert chord.musicality_parts["change"] == 0.0 and chord.score == 0.0, chord.to_json()
    # in the middle, each half holds music, but most beats are the same as the next
    amid = after_3_s("chord", -12.0, at_s=4.5)
    assert amid.quality_parts["not_mostly_quiet"] == 1.0
    zero, one = STATIC_SHARE
    assert amid.static_share > zero and honest.static_share < one
    assert amid.musicality_parts["not_static"] == 0.0 and amid.score == 0.0, amid.to_json()
    # a fragment too long for the piece is a mistake, said as such
    with pytest.raises(ValueError, match="does not fit"):
        cheats.fragment_in_filler(music, rate, FUNK, 2.0, "chord", -12.0)
    # and 3 s tiled (5.6 beats: windows every quarter beat line up) is a loop at any level
    for db in (0.0, -12.0):
        tiled = after_3_s("repeat", db)
        assert tiled.loop_distance < 0.1 < 0.15 < honest.loop_distance
        assert tiled.score <= 0.3 * honest.score, tiled.to_json()


@pytest.mark.parametrize("renderer", RENDERERS)
def test_music_of_other_styles_is_not_taken_for_an_imitation(
    evaluator: MusicEvaluator, renderer: str
) -> None:
    # TinySoundFont plays the SoundFont a pip wheel ships, as where no apt package is
    soundfont = str(bundled_soundfont()) if renderer == "tinysoundfont" else None
    try:
        backend = SymbolicMusic(soundfont=soundfont, seed=3, renderer=renderer)
    except CallerError as e:  # not installed here: `make install` installs both
        pytest.skip(str(e))
    found = {}
    for prompt, seconds in STYLES:
        samples, rate = backend.compose(prompt, seconds)
        found[prompt] = evaluator.evaluate(samples, rate, MusicChallenge(prompt, seconds))
    worst = min(found.values(), key=lambda r: r.musicality)
    assert worst.musicality >= 0.8, worst.musicality_parts
    # a solo guitar's last note dies away over 1.5 s of a 5 s piece: not a quiet stretch
    assert all(r.quality_parts["not_mostly_quiet"] == 1.0 for r in found.values())
    assert np.mean([r.musicality for r in found.values()]) >= 0.95


def test_results_carry_the_musicality_measurements(
    evaluator: MusicEvaluator, composer: SymbolicMusic
) -> None:
    samples, rate = composer.compose(FUNK, 6.0)
    result = evaluator.evaluate(samples, rate, MusicChallenge(FUNK, 6.0))
    assert result.score == pytest.approx(result.quality * result.adherence * result.musicality)
    again = MusicResult.from_json(result.to_json())
    assert set(again.musicality_parts) >= {
        "change", "not_loop", "not_static", "harmony", "sustain", "melody", "texture",
        "organization",
    }  # fmt: skip
    for name in ("beat_variation", "loop_distance", "static_share", "harmonic_change",
                 "melody_pitches", "melody_rate", "onset_variety", "organization",
                 "sustain_db", "high_share", "persistence", "persistence_two_apart"):  # fmt: skip
        assert getattr(again, name) is not None, name
    assert again.adherence_parts["instruments"] > 0.9
