"""The chorus command as a user runs it: real subprocesses, exit codes, no tracebacks."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import socket
import subprocess
import sys
import time
from argparse import Namespace

import httpx
import numpy as np
import pytest

from chorus import audio
from chorus.cli import _path_mistake
from chorus.errors import CallerError
from chorus.generation.music import bundled_soundfont
from chorus.localnet import LocalNet, LocalnetSettings
from chorus.miner import Miner, create_app
from chorus.piper import PiperTTS
from chorus.prompts import SpeechPrompts
from chorus.store import ValidatorStore
from chorus.validator import ValidatorSettings
from tests.cli import chorus_process, run_chorus
from tests.servers import Hole, ThreadServer, free_port, make_net


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["wallet", "show", "--wallet", "nobody"], "not found"),
        # a wallet or hotkey name is one plain name: never the wallets folder or outside it
        (["wallet", "create", "--wallet", ""], "--wallet '' is not a usable name"),
        (["wallet", "create", "--wallet", "../evil"], "--wallet '../evil' is not a usable name"),
        (["wallet", "create", "--hotkey", "a/b"], "--hotkey 'a/b' is not a usable name"),
        (["wallet", "show", "--hotkey", ".."], "--hotkey '..' is not a usable name"),
        (["chain", "register", "--wallet", "nobody"], "chorus wallet create --wallet nobody"),
        (["evaluate", "tts", "missing.wav", "--text", "hello"], "no such file: missing.wav"),
        (["generate", "tts", "  ", "-o", "x.wav"], "the text is empty"),
        (["generate", "tts", "?!", "-o", "x.wav"], "text: Value error, must contain a letter or"),
        (["generate", "music", "", "-o", "x.wav"], "the prompt is empty"),
        (["generate", "music", "...", "-o", "x.wav"], "the prompt must contain a letter"),
        (
            ["generate", "music", "a waltz", "--duration", "500", "-o", "x.wav"],
            "--duration 500 is out of range",
        ),
        (
            ["generate", "music", "a waltz", "--duration", "nan", "-o", "x.wav"],
            "--duration nan is out of range",
        ),
        (["generate", "music", "x" * 600, "-o", "x.wav"], "the prompt is 600 characters long"),
        # argparse knows each service's backends: it names the choices
        (
            ["generate", "tts", "hello", "-o", "x.wav", "--backend", "nope"],
            "invalid choice: 'nope'",
        ),
        # the limits a miner holds a request to hold on the command line too
        (["generate", "tts", "x" * 1001, "-o", "x.wav"], "at most 1000 characters"),
        (["generate", "clone", "x" * 1001, "--reference", "r.wav", "-o", "x.wav"], "at most 1000"),
        # every port option takes a port number
        (["miner", "--port", "70000"], "'70000' is not a port number (1-65535)"),
        (["validator", "--dashboard-port", "-1"], "'-1' is not a port number"),
        (["localnet", "--port", "65536"], "'65536' is not a port number"),
        (["localnet", "--port", "65535", "--miners", "3"], "ports end at 65535"),
        # a path that cannot be used says why (the tests run in the repository: chorus/
        # is a folder)
        (["generate", "tts", "hello", "-o", "chorus"], "--output chorus is a folder, not a file"),
        (["generate", "tts", "hi", "-o", "README.md/x.wav"], "README.md is a file, not a folder"),
        # chorus writes WAV or FLAC: another name would mislabel the file
        (["generate", "tts", "Hello", "-o", "x.mp3"], "--output x.mp3 must end in .wav or .flac"),
        (["generate", "music", "a waltz", "-o", "x"], "--output x must end in .wav or .flac"),
        (["bench", "--runs", "1", "--output", "chorus"], "--output chorus is a folder"),
        (["redteam", "--service", "tts", "--output", "chorus"], "--output chorus is a folder"),
        (["gateway", "--state", "chorus", "--api-keys", "chorus"], "Is a directory: chorus"),
        (["chain", "show", "--chain-path", "typo.db"], "chorus chain init --chain-path typo.db"),
        (["chain", "show", "--chain-path", "README.md"], "README.md is unavailable: file is not a"),
        # settings are checked before any wallet, chain, model or server
        (["miner", "--workers", "0"], "--workers must be at least 1"),
        (["miner", "--max-queue", "-1"], "--max-queue must be at least 1"),
        # a backend that loads a local model is refused without one (chorus ships none)
        (["miner", "--clone-backend", "neural"], "'neural' needs a local model: pass --clone-"),
        (["miner", "--music-backend", "musicgen"], "needs a local model: pass --music-weights"),
        (["miner", "--clone-backend", "world", "--clone-weights", "w.pt"], "'world' takes no"),
        (
            ["generate", "music", "a waltz", "--backend", "musicgen", "-o", "x.wav"],
            "'musicgen' needs a local model: pass --weights PATH",
        ),
        (["generate", "music", "a waltz", "--weights", "w", "-o", "x.wav"], "'symbolic' takes no"),
        # the symbolic backend's synthesizer, chosen by hand
        (
            ["generate", "music", "a waltz", "--renderer", "midi", "-o", "x.wav"],
            "unknown renderer 'midi'; choose from fluidsynth, tinysoundfont, numpy",
        ),
        (
            ["generate", "music", "a waltz", "--renderer", "tinysoundfont", "--soundfont", "no.sf2"]
            + ["-o", "x.wav"],
            "SoundFont 'no.sf2' is not a file",
        ),
        (
            ["generate", "music", "a waltz", "--backend", "musicgen", "--weights", "w"]
            + ["--renderer", "numpy", "-o", "x.wav"],
            "a renderer or SoundFont is for the symbolic music backend, not 'musicgen'",
        ),
        (  # the miner's default serves no music: the flag would be lost
            ["miner", "--music-renderer", "numpy"],
            "a renderer or SoundFont is for the symbolic music backend, not 'none'",
        ),
        (["miner", "--music-backend", "symbolic", "--music-renderer", "midi"], "unknown renderer"),
        (["validator", "--alpha", "5"], "--alpha must be at least 0 and below 1"),
        (["validator", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["validator", "--max-samples", "-1"], "--max-samples must be 0 (keep none) or more"),
        (["validator", "--timeout", "nan"], "--timeout must be a number of seconds above 0"),
        (["validator", "--corpus", "missing.txt"], "--corpus missing.txt: no such file"),
        (["localnet", "--alpha", "1"], "--alpha must be at least 0 and below 1"),
        (["gateway", "--state", ".", "--max-attempts", "0"], "--max-attempts must be at least 1"),
        (["gateway", "--state", ".", "--rate", "nan"], "rate above 0"),
        (
            ["gateway", "--state", ".", "--api-key", "al:secret-1", "--api-key", "al:secret-2"],
            "API key id 'al' is given twice",
        ),
        (["validator", "--rounds", "0"], "--rounds must be at least 1, not 0; omit it to run"),
        (["validator", "--rounds", "-1"], "--rounds must be at least 1, not -1"),
        (["bench", "--load", "-3"], "--load and --flood must be 0 or more"),
        (["bench", "--flood", "5"], "--flood needs --load N"),
        (["bench", "--load", "0", "--flood", "5"], "--flood needs --load N"),
        (["bench", "--runs", "0", "--load", "2"], "--runs must be at least 1"),
    ],
)
def test_user_mistakes_exit_2_with_a_message(tmp_path, args, message):
    r = run_chorus(*args, root=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_a_reference_a_miner_would_refuse_is_refused_before_any_model_loads(tmp_path):
    """1 s of speech-like noise: a miner refuses references under 2 s, and so does the CLI."""
    rng = np.random.default_rng(0)
    audio.write(tmp_path / "short.wav", 0.1 * rng.standard_normal(16000), 16000)
    r = run_chorus(
        "generate",
        "clone",
        "hello",
        "--reference",
        str(tmp_path / "short.wav"),
        "-o",
        "c.wav",
        root=tmp_path,
        timeout=60,
    )
    assert r.returncode == 2 and "1.00 s long" in r.stderr and "Traceback" not in r.stderr


def test_generate_clone_with_the_neural_backend_asks_for_its_weights(tmp_path):
    t = np.arange(4 * 16000) / 16000  # 4 s of noise that rises and falls like syllables
    wave = 0.1 * np.random.default_rng(0).standard_normal(t.size)
    audio.write(tmp_path / "ref.wav", wave * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2, 16000)
    args = ["generate", "clone", "hello", "--reference", str(tmp_path / "ref.wav")]
    r = run_chorus(*args, "--backend", "neural", "-o", "c.wav", root=tmp_path, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "'neural' needs a local model: pass --weights PATH" in r.stderr
    missing = str(tmp_path / "missing.pt")
    r = run_chorus(*args, "--backend", "neural", "--weights", missing, "-o", "c.wav", root=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"no EnvelopeNet weights at {missing}" in r.stderr


def test_a_port_in_use_is_refused_with_a_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_chorus(
            "dashboard", "--state", str(tmp_path), "--port", str(port), root=tmp_path, timeout=60
        )
    assert r.returncode == 2, r.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr


def test_localnet_on_a_port_in_use_is_refused_before_the_last_run_is_cleared(tmp_path):
    out = tmp_path / "out"
    kept = out / "validator-0" / "state.sqlite"  # the last run's state: removed by a new run
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"last run")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["localnet", "--miners", "1", "--port", str(port), "--out", str(out)]
        r = run_chorus(*args, root=tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr
    assert kept.read_bytes() == b"last run" and not (out / "chain.sqlite").exists()


def test_a_localnet_miner_that_cannot_start_is_reported_with_its_last_words(tmp_path):
    """A miner process that exits at start (a port taken after the check, a bad flag) ends
    the run with the last line of its log, as a user error, not a traceback."""
    net = LocalNet(tmp_path, LocalnetSettings(miners=1))
    (tmp_path / "logs").mkdir()
    say = "print('chorus: error: cannot listen on 127.0.0.1:1'); raise SystemExit(2)"
    with open(tmp_path / "logs" / "miner-0.log", "w") as log:
        net.procs.append(subprocess.Popen([sys.executable, "-c", say], stdout=log))
    net.procs[0].wait(30)
    with pytest.raises(CallerError, match=r"miner-0 could not start: chorus: error: cannot"):
        net.wait_ready(timeout=10)


def test_a_path_the_user_gave_that_cannot_be_used_exits_2_with_the_reason(tmp_path):
    net = make_net(tmp_path)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    common = ["--wallet-path", str(tmp_path / "wallets"), "--chain-path", str(net.chain.path)]
    # a state folder that is a file
    r = run_chorus("validator", *common, "--state", str(a_file), "--rounds", "1", root=tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"File exists: {a_file}" in r.stderr and "Traceback" not in r.stderr
    # a log file the gateway cannot create
    ValidatorStore(tmp_path / "state" / "state.sqlite")
    args = ["gateway", *common, "--state", str(tmp_path / "state"), "--api-key", "k1:secret-123"]
    args += ["--port", str(free_port()), "--log-file", str(a_file / "log.jsonl")]
    r = run_chorus(*args, "--wallet", "validator", root=tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"Not a directory: {a_file / 'log.jsonl'}" in r.stderr and "Traceback" not in r.stderr


def test_a_chain_or_state_file_that_is_not_sqlite_exits_2_with_the_reason(tmp_path):
    net = make_net(tmp_path)
    junk = tmp_path / "junk" / "state.sqlite"
    junk.parent.mkdir()
    junk.write_text("not a database, " * 100)
    wallets = ["--wallet-path", str(tmp_path / "wallets"), "--wallet", "validator"]
    chain = ["--chain-path", str(net.chain.path)]
    state = ["--state", str(junk.parent)]
    key = ["--api-key", "k1:secret-123", "--port", str(free_port())]
    ValidatorStore(tmp_path / "good" / "state.sqlite")
    for args in [
        ["miner", *wallets, "--chain-path", str(junk)],
        ["validator", *wallets, "--chain-path", str(junk), "--rounds", "1"],
        ["dashboard", "--state", str(tmp_path / "good"), "--chain-path", str(junk)],
        ["dashboard", *state, "--port", str(free_port())],
        ["gateway", *wallets, *chain, *state, *key],
        ["validator", *wallets, *chain, *state, "--rounds", "1"],
    ]:
        r = run_chorus(*args, root=tmp_path, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert "file is not a database" in r.stderr and "Traceback" not in r.stderr
    assert junk.read_text() == "not a database, " * 100  # nothing written into it


def test_only_errors_on_paths_the_user_gave_are_their_mistakes():
    args = Namespace(output="out/speech.wav", state=None)
    theirs = IsADirectoryError(errno.EISDIR, "Is a directory", "out/speech.wav")
    assert str(_path_mistake(theirs, args)) == "Is a directory: out/speech.wav"
    on_the_way = NotADirectoryError(errno.ENOTDIR, "Not a directory", "out")
    assert str(_path_mistake(on_the_way, args)) == "Not a directory: out"
    ours = PermissionError(errno.EACCES, "Permission denied", "/usr/share/chorus/model.onnx")
    assert _path_mistake(ours, args) is None  # a bug or a broken installation: a traceback
    worded = FileNotFoundError("wallet 'm' not found: create it with `chorus wallet create`")
    assert _path_mistake(worded, args) is worded


def test_a_corpus_that_cannot_be_read_is_refused_at_once(tmp_path):
    with pytest.raises(CallerError, match="no such file"):
        ValidatorSettings(corpus=str(tmp_path / "missing.txt"))
    binary = tmp_path / "corpus.txt"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(CallerError, match="not UTF-8 text"):
        SpeechPrompts(corpus=binary)
    with pytest.raises(CallerError, match="Is a directory"):
        SpeechPrompts(corpus=tmp_path)


def test_wallet_chain_and_unregistered_miner(tmp_path):
    assert run_chorus("wallet", "create", "--wallet", "m", root=tmp_path).returncode == 0
    r = run_chorus("chain", "register", "--wallet", "m", root=tmp_path)
    assert r.returncode == 2 and "create one with `chorus chain init`" in r.stderr
    assert not (tmp_path / "home" / "chain.sqlite").exists()  # no chain made up on the way
    assert run_chorus("chain", "init", root=tmp_path).returncode == 0
    r = run_chorus("miner", "--wallet", "m", "--port", "1", root=tmp_path)
    assert r.returncode == 2 and "not registered" in r.stderr
    r = run_chorus("chain", "register", "--wallet", "m", root=tmp_path)
    assert r.returncode == 0 and "uid 0" in r.stdout
    shown = json.loads(run_chorus("chain", "show", "--json", root=tmp_path).stdout)
    created = json.loads(run_chorus("wallet", "show", "--wallet", "m", root=tmp_path).stdout)
    assert shown["neurons"][0]["hotkey"] == created["hotkey"]


def test_generate_then_evaluate_tts(tmp_path):
    text = "Our guests arrived at the old station just before nine in the morning."
    out = tmp_path / "speech.wav"
    r = run_chorus("generate", "tts", text, "-o", str(out), root=tmp_path)
    assert r.returncode == 0, r.stderr
    samples, rate = audio.read(out)
    assert rate == 22050 and 1.5 < len(samples) / rate < 6
    r = run_chorus("evaluate", "tts", str(out), "--text", text, "--json", root=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert {"score", "wer", "transcript", "mos", "seconds"} <= result.keys()
    assert result["score"] > 0.6 and result["wer"] < 0.2


def test_chain_init_is_only_for_the_local_chain(tmp_path):
    r = run_chorus("chain", "init", "--chain", "bittensor", "--netuid", "1", root=tmp_path)
    assert r.returncode == 2 and "local chain" in r.stderr and "Traceback" not in r.stderr


def test_running_validator_serves_its_dashboard(tmp_path):
    net = make_net(tmp_path, miners=2)
    honest, slow = (w.hotkey.ss58_address for w in net.miners)
    port = free_port()
    args = [
        "validator",
        "--wallet",
        "validator",
        "--chain-path",
        str(net.chain.path),
        "--state",
        str(tmp_path / "state"),
        "--rounds",
        "2",
        "--timeout",
        "60",  # round 2 waits on the hole until the page is read; the honest miner needs ~1 s
        "--services",
        "tts",
        "--dashboard-port",
        str(port),
    ]
    miner = create_app(Miner(honest, net.chain, {"tts": PiperTTS()}))
    # round 1's call to the slow miner fails at once; round 2's is held open
    with Hole(drop=1) as hole, ThreadServer(miner) as server:
        net.chain.serve_axon(slow, "127.0.0.1", hole.port)
        net.chain.serve_axon(honest, "127.0.0.1", server.port)
        with chorus_process(*args, root=tmp_path, stderr=subprocess.PIPE) as proc:
            page, deadline = "", time.monotonic() + 120
            # until the honest miner is ranked and one of its answers is kept to listen to
            while not (honest[:10] in page and "<audio" in page) and time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
                time.sleep(0.3)
            assert proc.poll() is None, proc.stderr.read()  # served while the loop runs,
            # in the middle of it: round 2 is held on the hole, not recorded
            assert ValidatorStore(tmp_path / "state" / "state.sqlite").last_round() == 1
            assert honest[:10] in page and "<audio" in page
            hole.release()  # round 2 ends, and with it the run
            assert proc.wait(240) == 0, proc.stderr.read()


@pytest.mark.parametrize(("doc", "command"), [("miner.md", "miner"), ("validator.md", "validator")])
def test_operator_docs_list_every_flag(doc, command):
    """The flag tables in docs/ are what operators read; they must not drift from the CLI."""
    import re
    from pathlib import Path

    from chorus.cli import build_parser

    text = (Path(__file__).parent.parent / "docs" / doc).read_text()
    documented = set(re.findall(r"^\| `(--[a-z-]+)`", text, flags=re.M))
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    flags = {o for a in sub._actions for o in a.option_strings if o.startswith("--")}
    assert flags - {"--help"} <= documented, sorted(flags - documented - {"--help"})


def test_top_level_help_names_every_subcommand():
    from chorus.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert all(
        f" {name}," in parser.description or f" {name}." in parser.description for name in commands
    )


def test_miner_clone_backend_reuses_the_tts_voice():
    from chorus.cli import load_backends

    args = Namespace(
        tts_backend="piper", clone_backend="world", clone_weights=None, music_backend="none"
    )
    backends = load_backends(args)
    assert backends["clone"].tts is backends["tts"]  # one Piper model in memory, not two
    args.tts_backend = "degraded"
    degraded = load_backends(args)
    assert type(degraded["clone"].tts).__name__ == "PiperTTS"  # never clones the degraded voice
    assert degraded["clone"].tts is not degraded["tts"]


def test_the_music_synthesizer_is_chosen_from_the_command_line(tmp_path):
    """`chorus miner --music-renderer` and `chorus generate music --renderer`: an operator
    can serve or try TinySoundFont or the numpy synthesizer where FluidSynth is installed."""
    from chorus.cli import build_parser, load_backends

    def served(*flags: str) -> str:
        miner = ["miner", "--tts-backend", "none", "--clone-backend", "none"]
        args = build_parser().parse_args([*miner, "--music-backend", "symbolic", *flags])
        return load_backends(args)["music"].model

    assert served("--music-renderer", "numpy") == "symbolic+numpy-synth"
    soundfont = bundled_soundfont()
    if importlib.util.find_spec("tinysoundfont") and soundfont:  # make install adds both
        tiny = ("--music-renderer", "tinysoundfont", "--music-soundfont", str(soundfont))
        assert served(*tiny) == "symbolic+tinysoundfont:TimGM6mb.sf2"
    out = tmp_path / "m.wav"
    r = run_chorus(
        "generate", "music", "a waltz in D major", "--duration", "3", "--renderer", "numpy",
        "-o", str(out), root=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0 and "symbolic+numpy-synth" in r.stdout, r.stderr
    assert out.stat().st_size > 3 * 44100  # three seconds of 16-bit audio at least


def test_unknown_miner_backend_is_a_caller_error():
    from chorus.cli import load_backends

    args = Namespace(tts_backend="nope", clone_backend="none", music_backend="none")
    with pytest.raises(CallerError, match="unknown tts backend 'nope'; choose from"):
        load_backends(args)
