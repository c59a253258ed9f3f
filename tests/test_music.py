"""Text-to-music: the symbolic backend obeys its prompt and the evaluator can tell.

Everything here renders real audio (FluidSynth and the GM SoundFont where installed,
TinySoundFont or the numpy synthesizer otherwise) and scores it with the real evaluator.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import librosa
import numpy as np
import pytest

from chorus import degrade, music_cheats
from chorus.errors import CallerError
from chorus.generation import music
from chorus.generation.music import (
    Composer,
    FluidRenderer,
    Note,
    Part,
    SymbolicMusic,
    TinyRenderer,
    bundled_soundfont,
)
from chorus.music_prompts import GENRES, MusicPrompt, music_prompts, parse_music_prompt
from chorus.scoring.music import (
    GENRE_ENERGY,
    PERSISTENCE_FLOOR,
    SUSTAIN_DB,
    MusicEvaluator,
    grid_bpm,
    key_match,
    tempo_match,
)
from chorus.services import get
from chorus.services.music import MusicChallenge

FUNK = "An upbeat funk groove in E minor at 112 BPM with slap bass, electric piano and drums"
OTHER = "A dreamy synthwave track in Bb major at 86 BPM with synth lead, synth bass and drums"


@pytest.fixture(scope="module")
def backend() -> SymbolicMusic:
    return get("music").load_backend("symbolic", seed=0)  # reproducible pieces


@pytest.fixture(scope="module")
def evaluator() -> MusicEvaluator:
    return MusicEvaluator()


def _tempo_ok(found: float, asked: float) -> bool:
    return min(abs(np.log(found * f / asked)) for f in (1.0, 2.0, 0.5)) <= np.log(1.04)


def test_tempo_and_key_are_found_in_most_generated_pieces(
    backend: SymbolicMusic, evaluator: MusicEvaluator
) -> None:
    ours = keys = librosa_ok = 0
    n = 30
    for p in itertools.islice(music_prompts(seed=7), n):
        samples, rate = backend.compose(p.text, 8.0)
        score = evaluator.evaluate(samples, rate, MusicChallenge(p.text, 8.0))
        ours += _tempo_ok(score.tempo_bpm, p.bpm)
        keys += score.key == f"{p.key} {p.mode}"
        assert score.adherence_parts["duration"] == 1.0
        y = librosa.resample(samples, orig_sr=rate, target_sr=22050)
        tempo = np.atleast_1d(librosa.beat.beat_track(y=y, sr=22050)[0])[0]
        librosa_ok += _tempo_ok(float(tempo), p.bpm)
    assert ours >= 0.8 * n, f"tempo found in {ours}/{n}"
    assert keys >= 0.8 * n, f"key found in {keys}/{n}"
    assert librosa_ok >= 0.8 * n, f"librosa's beat tracker agrees in {librosa_ok}/{n}"


def test_bad_answers_score_clearly_below_faithful_music(
    backend: SymbolicMusic, evaluator: MusicEvaluator
) -> None:
    music, rate = backend.compose(FUNK, 10.0)
    other, _ = backend.compose(OTHER, 10.0)
    n = music.size
    t = np.arange(n) / rate
    noise = 0.3 * np.random.default_rng(0).standard_normal(n)
    square = np.clip(3 * np.sign(np.sin(2 * np.pi * 220 * t)), -1, 1)
    funk = MusicChallenge(FUNK, 10.0)
    faithful = evaluator.evaluate(music, rate, funk)
    assert faithful.score >= 0.85, faithful.to_json()
    assert faithful.quality >= 0.9
    bad = {
        "silence": (np.zeros(n, np.float32), "not_silent"),
        "noise": (noise.astype(np.float32), "not_noise"),
        "square": (square.astype(np.float32), "no_clipping"),
        "other prompt": (other, None),
    }
    for name, (samples, reason) in bad.items():
        s = evaluator.evaluate(samples, rate, funk)
        assert s.score <= faithful.score - 0.5, (name, s.to_json())
        assert s.reason == reason, (name, s.to_json())
    swapped = evaluator.evaluate(other, rate, funk).adherence_parts
    assert swapped["tempo_bpm"] < 0.5 and swapped["key"] < 0.5


def test_evaluator_reads_free_text_and_checks_duration(
    backend: SymbolicMusic, evaluator: MusicEvaluator
) -> None:
    prompt = "slow sad piano ballad in F sharp minor at 72 bpm, no drums"
    samples, rate = backend.compose(prompt, 8.0)
    assert "drums" not in backend.plan(prompt).instruments
    s = evaluator.evaluate(samples, rate, MusicChallenge(prompt, 8.0))
    assert s.key == "F# minor" and s.adherence_parts["drums"] > 0.5
    short = evaluator.evaluate(samples[: rate * 4], rate, MusicChallenge(prompt, 8.0))
    assert short.adherence_parts["duration"] == 0.0
    assert short.score == 0.0 and short.reason == "duration" and s.score > 0.8


@pytest.mark.parametrize("seconds", [1.0, 7.3, 60.0])
def test_duration_is_exact_and_the_mix_has_headroom(backend: SymbolicMusic, seconds: float) -> None:
    samples, rate = backend.compose(FUNK, seconds)
    assert rate >= 32000 and samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size / rate - seconds) <= 0.1
    assert np.isfinite(samples).all() and 0.3 < np.abs(samples).max() <= 0.9
    assert np.abs(samples[-int(0.01 * rate) :]).max() < 0.01  # faded out, no click
    for bad in (0.5, 61.0):
        with pytest.raises(ValueError):
            backend.compose(FUNK, bad)


def test_same_prompt_same_music_and_prompt_changes_the_music(backend: SymbolicMusic) -> None:
    a, _ = backend.compose(FUNK, 3.0)
    b, _ = backend.compose(FUNK, 3.0)
    c, _ = backend.compose(OTHER, 3.0)
    # FluidSynth's free-running modulators leave tiny differences between renders
    assert np.corrcoef(a, b)[0, 1] > 0.95 and abs(np.corrcoef(a, c)[0, 1]) < 0.5
    assert backend.plan(FUNK) == backend.plan(FUNK)


def test_numpy_synthesizer_fallback_keeps_tempo_and_key(
    evaluator: MusicEvaluator, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine without any General MIDI SoundFont: the numpy synthesizer, and why."""
    monkeypatch.setattr(music, "SOUNDFONTS", ())  # none installed here...
    monkeypatch.setattr(music, "BUNDLED_SOUNDFONT", ("no_such_package", "none.sf2"))  # ...or in pip
    fallback = SymbolicMusic()
    assert fallback.model == "symbolic+numpy-synth"
    assert "no General MIDI SoundFont" in caplog.text
    samples, rate = fallback.compose(FUNK, 8.0)
    s = evaluator.evaluate(samples, rate, MusicChallenge(FUNK, 8.0))
    assert s.key == "E minor" and _tempo_ok(s.tempo_bpm, 112)
    assert s.score > 0.8, s.to_json()


def test_tinysoundfont_plays_the_soundfont_a_pip_wheel_ships(evaluator: MusicEvaluator) -> None:
    """Without apt packages a miner still plays sampled instruments: TinySoundFont (a pip
    wheel) renders the General MIDI SoundFont inside the pretty_midi wheel, drums on the
    drum channel, and the same piece every time."""
    pytest.importorskip("tinysoundfont", reason="make install adds it (pip --no-deps)")
    soundfont = bundled_soundfont()
    assert soundfont is not None and soundfont.name == "TimGM6mb.sf2"
    backend = SymbolicMusic(soundfont=str(soundfont), seed=5, renderer="tinysoundfont")
    assert backend.model == "symbolic+tinysoundfont:TimGM6mb.sf2"
    a, rate = backend.compose(FUNK, 8.0)
    b, _ = backend.compose(FUNK, 8.0)
    assert np.array_equal(a, b)  # no free-running modulators: a render repeats exactly
    s = evaluator.evaluate(a, rate, MusicChallenge(FUNK, 8.0))
    assert s.key == "E minor" and _tempo_ok(s.tempo_bpm, 112)
    assert s.adherence_parts["drums"] > 0.9 and s.score > 0.9, s.to_json()


def test_tinysoundfont_parts_ring_in_a_room_as_fluidsynth_parts_do() -> None:
    """TinySoundFont has no reverb; each part is played into a `Room` at its reverb send,
    so a released note rings on about as long and as loud as FluidSynth's reverb makes it."""
    pytest.importorskip("tinysoundfont", reason="make install adds it (pip --no-deps)")
    soundfont, rate = bundled_soundfont(), 44100
    assert soundfont is not None
    tiny = TinyRenderer(soundfont, rate)
    notes = [Note(0.2 + 0.4 * i, 0.3, 60 + 2 * i, 100) for i in range(4)]  # released by 1.7 s

    def tail_db(renderer: FluidRenderer | TinyRenderer, send: int) -> float:
        """The level 0.7-1.2 s after the last release, against the level while playing."""
        stem = renderer.render([Part("piano", 0, 0, 0.0, send, notes)], 3.0)[0]
        playing = np.mean(stem[int(0.2 * rate) : int(1.7 * rate)] ** 2)
        tail = np.mean(stem[int(2.4 * rate) : int(2.9 * rate)] ** 2)
        return float(10 * np.log10(tail / playing + 1e-12))

    dry, wet = tail_db(tiny, 0), tail_db(tiny, 100)
    assert wet > dry + 20, (dry, wet)  # measured: -31 dB against -81 dB
    assert np.array_equal(  # send 0: the room adds nothing
        tiny.room.play(np.ones(100, np.float32), 0), np.ones(100, np.float32)
    )
    try:
        fluid = FluidRenderer(soundfont, rate)
    except (ImportError, OSError, RuntimeError):
        return  # no FluidSynth here to compare with
    assert abs(wet - tail_db(fluid, 100)) < 5, (wet, tail_db(fluid, 100))  # measured: 0.1 dB


def test_a_soundfont_named_but_unusable_is_refused_with_the_reasons(tmp_path: Path) -> None:
    """Who names a renderer or a SoundFont wants it: no quiet step down to numpy."""
    broken = tmp_path / "broken.sf2"
    broken.write_bytes(b"not a SoundFont")
    for renderer in ("fluidsynth", "tinysoundfont"):  # asked for by name
        with pytest.raises(CallerError, match=f"renderer {renderer} is unavailable"):
            SymbolicMusic(soundfont=str(broken), renderer=renderer)
    with pytest.raises(CallerError, match="no synthesizer here plays SoundFont") as refused:
        SymbolicMusic(soundfont=str(broken))  # the best there is: each one's reason
    assert "fluidsynth: " in str(refused.value) and "tinysoundfont: " in str(refused.value)
    with pytest.raises(CallerError, match="SoundFont '/nonexistent/none.sf2' is not a file"):
        SymbolicMusic(soundfont="/nonexistent/none.sf2")
    with pytest.raises(CallerError, match="unknown renderer 'midi'"):
        SymbolicMusic(renderer="midi")


def test_dense_music_is_not_taken_for_noise_and_noise_under_music_costs(
    evaluator: MusicEvaluator,
) -> None:
    """The floor is judged band by band: a metal riff's wall of guitars keeps its full
    credit (a ratio of sums put it at 0.6-0.8), and white noise 10 dB under the same
    riff lowers the measure and the score."""
    prompt = (
        "An intense, angry metal riff in E minor at 160 BPM with distorted guitar, bass and drums"
    )
    samples, rate = SymbolicMusic(seed=1).compose(prompt, 12.0)
    clean = evaluator.evaluate(samples, rate, MusicChallenge(prompt, 12.0))
    assert clean.quality_parts["snr"] == 1.0, clean.quality_parts
    noisy = evaluator.evaluate(
        *degrade.white_noise(samples, rate, 10.0), MusicChallenge(prompt, 12.0)
    )
    assert noisy.quality_parts["snr_db"] <= clean.quality_parts["snr_db"] - 2.5
    assert noisy.quality_parts["snr"] < 0.9 and noisy.score < clean.score


def test_a_fast_piece_read_at_half_tempo_is_judged_on_its_own_beat(
    evaluator: MusicEvaluator,
) -> None:
    """A 174 BPM riff is heard at 87 BPM (tempo credit allows the half); its beat grid
    is laid at the asked 174, else a grid beat holds two beats and a bar two bars, and
    its groove and persistence read like a cheat's (this riff scored 0)."""
    prompt = (
        "An angry metal riff in E minor at 174 BPM with bass and drums; high-energy throughout."
    )
    samples, rate = SymbolicMusic(seed=5).compose(prompt, 10.0)
    result = evaluator.evaluate(samples, rate, MusicChallenge(prompt, 10.0))
    assert _tempo_ok(result.tempo_bpm, 174) and result.adherence_parts["tempo_bpm"] == 1.0
    assert result.persistence > 0.55 and result.groove > 0.55, result.musicality_parts
    assert result.score > 0.9, result.to_json()
    assert grid_bpm(87.0, parse_music_prompt(prompt)) == 174.0
    assert grid_bpm(87.0, parse_music_prompt("E minor at 90 BPM")) == 87.0


def test_plan_fills_blanks_from_genre_and_mood(backend: SymbolicMusic) -> None:
    plan = backend.plan("a sad song")
    assert plan.mode == "minor" and 40 <= plan.bpm <= 210 and plan.instruments
    plan = backend.plan("relaxing piano music")
    assert plan.mood == "calm" and plan.genre in ("jazz", "ambient", "classical", "bossa nova")
    asked = parse_music_prompt(FUNK)
    plan = backend.plan(FUNK)
    assert (plan.bpm, plan.mode, plan.genre) == (asked.bpm, asked.mode, asked.genre)
    assert set(asked.instruments) <= set(plan.instruments)


def test_tempo_and_key_credit_rules() -> None:
    asked = parse_music_prompt("E minor at 112 BPM")
    assert tempo_match(112 * 1.035, asked) == 1.0 and tempo_match(224.0, asked) == 1.0
    assert tempo_match(56.5, asked) == 1.0  # a clean half counts
    assert 0.0 < tempo_match(112 * 1.08, asked) < 1.0
    assert tempo_match(150.0, asked) == 0.0 and tempo_match(112 * 1.5, asked) == 0.0
    slow = parse_music_prompt("a slow ballad")
    assert tempo_match(70.0, slow) == 1.0 and tempo_match(140.0, slow) == 0.0
    assert tempo_match(100.0, parse_music_prompt("in E minor")) is None
    e, g, a, b = 4, 7, 9, 11
    assert key_match(e, "minor", asked) == 1.0
    assert key_match(g, "major", asked) == key_match(e, "major", asked) == 0.3  # relative, parallel
    assert key_match(b, "minor", asked) == key_match(a, "minor", asked) == 0.3  # a fifth away
    assert key_match(1, "major", asked) == 0.0
    assert key_match(e, "major", parse_music_prompt("a minor-key piece")) == 0.0


def test_energy_is_judged_within_the_genre_asked(
    backend: SymbolicMusic, evaluator: MusicEvaluator
) -> None:
    """'Gentle metal' is gentle for metal and 'intense classical' intense for classical: the
    composer's pieces read 0.6-0.7 and 0.2-0.3 on the energy index whatever level is asked,
    and get the credit; a metal piece answering a gentle classical prompt does not."""
    metal = "A gentle, angry metal riff in E minor at 150 BPM with distorted guitar, bass and drums"
    intense = "An intense classical piece in D minor at 120 BPM with strings and piano"
    gentle = "A gentle, calm classical piece in E minor at 150 BPM with strings and piano"
    riff = backend.compose(metal, 10.0)
    for prompt, audio in ((metal, riff), (intense, backend.compose(intense, 10.0))):
        score = evaluator.evaluate(*audio, MusicChallenge(prompt, 10.0))
        assert score.adherence_parts["energy"] >= 0.9, (prompt, score.energy_index)
    wrong = evaluator.evaluate(*riff, MusicChallenge(gentle, 10.0))
    assert wrong.adherence_parts["tempo_bpm"] == 1.0 and wrong.adherence_parts["key"] == 1.0
    assert wrong.adherence_parts["energy"] < 0.1, wrong.energy_index


def test_energy_credit_takes_the_better_of_the_genre_and_absolute_readings() -> None:
    def credit(index: float, energy: str | None, genre: str | None = None) -> float | None:
        return MusicEvaluator._energy_match(index, MusicPrompt(genre=genre, energy=energy))

    assert set(GENRE_ENERGY) == set(GENRES)  # a new genre needs its medium index
    assert credit(0.5, None, "metal") is None  # no level asked: not judged
    assert credit(0.70, "low") == 0.0  # no genre: the absolute levels only
    assert credit(0.70, "low", "metal") == 1.0  # gentle for metal
    assert credit(0.30, "low", "metal") == 1.0  # gentle at all: the absolute reading
    assert credit(GENRE_ENERGY["metal"] + 0.12, "high", "metal") == 1.0  # a step up, not down
    assert credit(GENRE_ENERGY["metal"] + 0.12, "low", "metal") < 1.0
    assert credit(0.70, "low", "classical") == 0.0  # a loud piece for gentle classical
    assert credit(0.70, "low", "no such genre") == 0.0  # unknown genre: absolute only


def test_jazz_whose_beats_two_apart_share_little_is_still_music(evaluator: MusicEvaluator) -> None:
    """Walking bass and a tune over chords struck on 1 and the 'and' of 2: beats two apart
    share a quarter of their pitch content, where one voice walking the scale shares 0.15
    or less. With the floor of beats one apart (0.20-0.30) this piece scored 0.08."""
    prompt = (
        "117 BPM jazz in B major: upright bass and trumpet. The mood is playful, the feel steady."
    )
    audio = SymbolicMusic(seed=31).compose(prompt, 12.0)
    score = evaluator.evaluate(*audio, MusicChallenge(prompt, 12.0))
    assert score.persistence_two_apart < PERSISTENCE_FLOOR[1]  # the case this is about
    assert score.score >= 0.8, score.musicality_parts


def test_soft_attacks_under_a_held_line_are_still_attacks(evaluator: MusicEvaluator) -> None:
    """Plucked notes rising 1.0-2.3 dB under a held line (a harp under a flute) vary as much
    as any attacks; at a 1.5 dB bar three of them counted and the texture read 0. A held
    chord (one attack where it starts) still reads none."""
    rate = evaluator.rate
    t = np.arange(6 * rate) / rate

    def tone(hz: float) -> np.ndarray:
        return sum(np.sin(2 * np.pi * hz * k * t) / k for k in range(1, 7))

    rng = np.random.default_rng(0)
    plucks = np.zeros_like(t)
    for start in np.arange(0.1, 5.8, 0.4):
        hz = 220 * 2 ** (rng.integers(0, 12) / 12)
        since = np.clip(t - start, 0, None)
        envelope = np.clip((t - start) / 0.03, 0, 1) * np.exp(-since / 0.3)
        plucks += envelope * np.sin(2 * np.pi * hz * t) * (1 + 0.5 * np.sin(4 * np.pi * hz * t))
    challenge = MusicChallenge("A minor, 150 BPM", 6.0)
    soft = evaluator.evaluate((0.5 * tone(440) + 0.6 * plucks).astype(np.float32), rate, challenge)
    assert soft.onset_variety > 0.45, soft.onset_variety
    held = evaluator.evaluate(music_cheats.held_chord("A minor", 6.0), music_cheats.RATE, challenge)
    assert held.onset_variety == 0.0


def test_a_second_melody_instrument_plays_a_countermelody(evaluator: MusicEvaluator) -> None:
    """A prompt naming two melody instruments hears both: the first plays the tune, the
    second a line of chord tones in longer notes. This piece (its flute left out, the cello
    playing over a piano's arpeggio) scored 0 on FluidSynth, which `make install` sets up:
    its beats shared too little pitch content (TinySoundFont and numpy renders of it pass
    either way, so there only the parts are checked). The parts come from a fixed random
    sequence; any sequence gives the flute its countermelody."""
    prompt = (
        "79 BPM classical in D minor: cello and flute. The mood is melancholic, "
        "the feel medium-energy."
    )
    backend = SymbolicMusic(seed=5)
    parts = {p.instrument: p for p in Composer(backend.plan(prompt), random.Random(0)).compose(10)}
    tune, counter = parts["cello"].notes, parts["flute"].notes
    assert len(counter) < len(tune) and min(n.duration for n in counter[:-1]) > 1.0
    # no unisons where the registers meet (violin and harmonica: 2 of 5 notes clashed)
    folk = backend.plan("A folk tune in G major at 100 BPM with violin and harmonica")
    near = {p.instrument: p.notes for p in Composer(folk, random.Random(0)).compose(15)}
    for n in near["harmonica"][:-1]:
        sounding = [
            t.pitch for t in near["violin"] if t.start <= n.start + 0.03 < t.start + t.duration
        ]
        assert all(abs(n.pitch - p) > 2 for p in sounding), (n, sounding)
    audio, rate = backend.compose(prompt, 10.0)
    assert not np.allclose(audio, backend.compose(prompt, 10.0, omit=("flute",))[0], atol=1e-3)
    score = evaluator.evaluate(audio, rate, MusicChallenge(prompt, 10.0))
    assert score.score >= 0.8, score.musicality_parts


def test_what_sounds_between_a_reggae_bands_drum_hits_is_heard(evaluator: MusicEvaluator) -> None:
    """Sustain is judged on the harmonic part: on the small SoundFont a one-drop's kick and
    rim shot peaked 20 dB over the bass and guitar ringing after them, and this honest
    piece read -21 dB, as a blip per beat does, and scored 0.46."""
    pytest.importorskip("tinysoundfont", reason="make install adds it (pip --no-deps)")
    prompt = (
        "A happy reggae groove in C# major at 70 BPM with organ, bass, drums and electric "
        "guitar; steady throughout."
    )
    backend = SymbolicMusic(soundfont=str(bundled_soundfont()), seed=7, renderer="tinysoundfont")
    s = evaluator.evaluate(*backend.compose(prompt, 15.0), MusicChallenge(prompt, 15.0))
    assert s.sustain_db > SUSTAIN_DB[1] and s.score > 0.8, s.to_json()
