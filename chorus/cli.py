"""The ``chorus`` command: wallet, chain, miner, validator, localnet, generate, evaluate.

Every user mistake (a missing wallet, a bad file, an unknown backend) ends with a one-line
message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import warnings
from pathlib import Path

from chorus import __version__

EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake by the user; printed as one line, exit code 2."""


# -- shared options ---------------------------------------------------------------------


def _wallet_args(p: argparse.ArgumentParser, default_name: str) -> None:
    p.add_argument("--wallet", default=default_name, help=f"wallet name (default {default_name})")
    p.add_argument("--hotkey", default="default", help="hotkey name (default: default)")
    p.add_argument(
        "--wallet-path", default=None, help="wallets folder (default ~/.bittensor/wallets)"
    )


def _chain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chain", default="local", choices=["local", "bittensor"], help="chain backend")
    p.add_argument(
        "--chain-path", default=None, help="local chain file (default ~/.chorus/chain.sqlite)"
    )
    p.add_argument(
        "--network",
        default="finney",
        help="bittensor network: finney, test, local or a ws:// endpoint (default finney)",
    )
    p.add_argument("--netuid", type=int, default=None, help="bittensor subnet uid")


def _open_chain(args):
    import bittensor as bt

    from chorus.chain import open_chain
    from chorus.config import default_wallet_path

    # Not loaded until a write needs to sign, so `chorus chain show` works without keys.
    signer = bt.Wallet(
        name=args.wallet, hotkey=args.hotkey, path=args.wallet_path or default_wallet_path()
    )
    return open_chain(
        args.chain, path=args.chain_path, network=args.network, netuid=args.netuid, wallet=signer
    )


def _register_hint(args) -> str:
    """The command that registers the wallet's hotkey on the chosen chain."""
    if args.chain == "bittensor":
        path = f" --wallet-path {args.wallet_path}" if args.wallet_path else ""
        return (
            f"btcli subnets register --netuid {args.netuid} --network {args.network} "
            f"--wallet {args.wallet} --wallet-hotkey {args.hotkey}{path}"
        )
    return f"chorus chain register --wallet {args.wallet} --hotkey {args.hotkey}"


def _permit_hint(args) -> str:
    """How to get a validator permit on the chosen chain."""
    if args.chain == "bittensor":
        return (
            f"stake to it with `btcli stake add --netuid {args.netuid} --network {args.network}"
            f" --wallet {args.wallet} --hotkey {args.hotkey}`; permits go to the top stakers"
        )
    return (
        f"run `chorus chain register --wallet {args.wallet} --hotkey {args.hotkey}"
        " --validator --stake 1000`"
    )


def _with_permit(args, why: str):
    """The wallet, the chain and the wallet's neuron, which must hold a validator permit."""
    wallet = _wallet(args)
    chain = _open_chain(args)
    me = chain.neuron(wallet.hotkey.ss58_address)
    if me is None or not me.validator_permit:
        raise UsageError(
            f"{args.wallet}/{args.hotkey} needs a validator permit{why}; {_permit_hint(args)}"
        )
    return wallet, chain, me


def _wallet(args):
    from chorus.auth import load_wallet

    return load_wallet(args.wallet, args.hotkey, args.wallet_path)


# -- wallet and chain -------------------------------------------------------------------


def cmd_wallet(args) -> int:
    from chorus.auth import create_wallet

    if args.action == "create":
        w = create_wallet(args.wallet, args.hotkey, args.wallet_path)
    else:
        w = _wallet(args)
    print(
        json.dumps(
            {
                "wallet": w.name,
                "hotkey_name": w.hotkey_str,
                "path": str(Path(w.path).expanduser()),
                "hotkey": w.hotkey.ss58_address,
                "coldkey": w.coldkeypub.ss58_address,
            },
            indent=2,
        )
    )
    return 0


def cmd_chain(args) -> int:
    if args.action == "init" and args.chain != "local":
        raise UsageError(
            "`chorus chain init` creates a local chain; a Bittensor subnet exists already"
        )
    chain = _open_chain(args)
    if args.action == "init":
        if args.block_seconds is not None:
            from chorus.chain.local import LocalChain

            chain = LocalChain(chain.path, block_seconds=args.block_seconds)
        print(f"local chain ready at {chain.path} (block {chain.block()})")
    elif args.action == "register":
        w = _wallet(args)
        n = chain.register(
            w.hotkey.ss58_address, w.coldkeypub.ss58_address, args.stake, args.validator
        )
        role = "validator" if n.validator_permit else "miner"
        print(f"registered {w.name}/{w.hotkey_str} as uid {n.uid} ({role}, stake {n.stake:g})")
    else:
        neurons = chain.neurons()
        weights = chain.weights()
        if args.json:
            print(
                json.dumps(
                    {
                        "block": chain.block(),
                        "neurons": [n.to_json() for n in neurons],
                        "weights": weights,
                    },
                    indent=2,
                )
            )
            return 0
        print(f"block {chain.block()}, {len(neurons)} neurons")
        print(f"{'uid':>4}  {'hotkey':<50} {'stake':>9}  {'permit':<6}  axon")
        for n in neurons:
            print(
                f"{n.uid:>4}  {n.hotkey:<50} {n.stake:>9g}  "
                f"{'yes' if n.validator_permit else '':<6}  {n.url or '-'}"
            )
        for vuid, w in weights.items():
            shown = ", ".join(f"{u}: {x:.3f}" for u, x in sorted(w.items()))
            print(f"weights from uid {vuid}: {shown or '(none)'}")
    return 0


# -- miner and validator ----------------------------------------------------------------


def load_backends(args) -> dict:
    from chorus.generation import load_backend
    from chorus.generation.tts import PiperTTS

    backends: dict = {}
    for service in ("tts", "clone", "music"):
        name = getattr(args, f"{service}_backend", None)
        if name and name != "none":
            options = {}
            # The WORLD cloners speak with Piper first: reuse the TTS backend's voice rather
            # than loading a second copy (never the degraded one, which would clone badly).
            if service == "clone" and type(backends.get("tts")) is PiperTTS:
                options["tts"] = backends["tts"]
            if service == "clone" and args.clone_weights:
                options["weights"] = args.clone_weights
            backends[service] = load_backend(service, name, **options)
    if not backends:
        raise UsageError("the miner has no backend to serve; pass --tts-backend piper")
    return backends


def cmd_miner(args) -> int:
    import uvicorn

    from chorus.auth import AccessPolicy
    from chorus.miner import Miner, MinerSettings, create_app

    wallet = _wallet(args)
    chain = _open_chain(args)
    hotkey = wallet.hotkey.ss58_address
    if chain.neuron(hotkey) is None:
        raise UsageError(
            f"hotkey {args.wallet}/{args.hotkey} ({hotkey}) is not registered; run "
            f"`{_register_hint(args)}`"
        )
    settings = MinerSettings(
        max_body_bytes=args.max_body_bytes,
        max_queue=args.max_queue,
        workers=args.workers,
        policy=AccessPolicy(
            min_stake=args.min_stake,
            blacklist=frozenset(args.blacklist or []),
            require_validator_permit=not args.allow_non_validators,
        ),
    )
    backends = load_backends(args)
    miner = Miner(hotkey, chain, backends, settings)
    chain.serve_axon(hotkey, args.axon_host or args.host, args.port)
    print(
        f"miner {hotkey} serving {sorted(backends)} on http://{args.host}:{args.port}", flush=True
    )
    uvicorn.run(
        create_app(miner),
        host=args.host,
        port=args.port,
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=5,
    )
    return 0


def load_evaluators(services) -> dict:
    """One evaluator per service, sharing the speech models between TTS and cloning."""
    evaluators: dict = {}
    if "tts" in services or "clone" in services:
        from chorus.scoring.tts import TTSEvaluator

        evaluators["tts"] = TTSEvaluator()
    if "clone" in services:
        from chorus.scoring.clone import CloneEvaluator

        evaluators["clone"] = CloneEvaluator(tts_evaluator=evaluators["tts"])
    if "music" in services:
        from chorus.scoring.music import MusicEvaluator

        evaluators["music"] = MusicEvaluator()
    return evaluators


def cmd_validator(args) -> int:
    from chorus.config import chorus_home
    from chorus.store import ValidatorStore
    from chorus.validator import Validator, ValidatorSettings, format_round

    wallet, chain, me = _with_permit(args, "")
    services = tuple(s.strip() for s in args.services.split(",") if s.strip())
    settings = ValidatorSettings(
        services=services,
        batch_size=args.batch_size,
        timeout_s=args.timeout,
        alpha=args.alpha,
        weights_interval_blocks=args.weights_interval,
        round_interval_s=args.round_interval,
        seed=args.seed,
        corpus=args.corpus,
        voices=args.voices,
    )
    state = Path(args.state or chorus_home() / f"validator-{me.uid}")
    store = ValidatorStore(state / "state.sqlite", state / "samples", args.max_samples)
    validator = Validator(wallet, chain, store, load_evaluators(services), settings)
    print(
        f"validator uid {me.uid} resuming after round {store.last_round()}; state in {state}",
        flush=True,
    )

    def show(report) -> None:
        print(format_round(report), flush=True)

    async def run() -> None:
        server = None
        if args.dashboard_port:
            import uvicorn

            from chorus.dashboard import create_dashboard_app

            app = create_dashboard_app(store, chain, me.uid)
            config = uvicorn.Config(
                app, host=args.dashboard_host, port=args.dashboard_port, log_level="warning"
            )
            server = uvicorn.Server(config)
            print(f"dashboard on http://{args.dashboard_host}:{args.dashboard_port}/", flush=True)
        served = asyncio.create_task(server.serve()) if server else None
        try:
            await validator.run(rounds=args.rounds, on_round=show)
        finally:
            if served is not None:
                server.should_exit = True
                await served

    asyncio.run(run())
    return 0


def cmd_localnet(args) -> int:
    from chorus.localnet import run_localnet

    return run_localnet(
        miners=args.miners,
        rounds=args.rounds,
        out=Path(args.out),
        base_port=args.port,
        alpha=args.alpha,
        timeout=args.timeout,
    )


# -- dashboard and gateway --------------------------------------------------------------


def _validator_store(state: str):
    """An existing validator state folder's store; never creates an empty one."""
    from chorus.store import ValidatorStore

    path = Path(state).expanduser() / "state.sqlite"
    if not path.is_file():
        raise UsageError(f"no validator state in {state} ({path.name} missing); see --state")
    return ValidatorStore(path, path.parent / "samples")


def cmd_dashboard(args) -> int:
    import uvicorn

    from chorus.chain import open_chain
    from chorus.dashboard import create_dashboard_app

    store = _validator_store(args.state)
    chain = open_chain("local", path=args.chain_path) if args.chain_path else None
    app = create_dashboard_app(store, chain, args.validator_uid)
    print(f"dashboard for {args.state} on http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0


def cmd_gateway(args) -> int:
    import uvicorn

    from chorus.gateway import Gateway, GatewaySettings, RequestLog, create_gateway_app, load_keys

    keys = load_keys(args.api_keys, args.api_key)
    if not keys:
        raise UsageError("the gateway needs API keys: --api-key KEY or --api-keys FILE")
    wallet, chain, _ = _with_permit(args, " (miners answer no one else)")
    settings = GatewaySettings(
        timeout_s=args.timeout, max_attempts=args.max_attempts, rate=args.rate, burst=args.burst
    )
    # The log file stays open for the life of the server.
    log = RequestLog(open(args.log_file, "a") if args.log_file else sys.stdout)  # noqa: SIM115
    gateway = Gateway(wallet, chain, _validator_store(args.state), keys, settings, log)
    print(f"gateway on http://{args.host}:{args.port}/v1 ({len(keys)} API keys)", flush=True)
    uvicorn.run(
        create_gateway_app(gateway),
        host=args.host,
        port=args.port,
        log_level=args.log_level.lower(),
    )
    return 0


# -- generate and evaluate --------------------------------------------------------------


def cmd_generate(args) -> int:
    from chorus import audio
    from chorus.generation import load_backend

    backend = load_backend(args.service, args.backend)
    if args.service == "tts":
        samples, rate = backend.synthesize(args.text, args.voice)
    elif args.service == "clone":
        ref, ref_rate = audio.read(args.reference)
        samples, rate = backend.clone(args.text, ref, ref_rate)
    else:
        samples, rate = backend.compose(args.prompt, args.duration)
    path = audio.write(args.output, samples, rate)
    print(f"wrote {path} ({len(samples) / rate:.2f} s at {rate} Hz, {backend.model})")
    return 0


def cmd_evaluate(args) -> int:
    from chorus import audio

    samples, rate = audio.read(args.audio)
    evaluator = load_evaluators({args.service})[args.service]
    if args.service == "tts":
        result = evaluator.evaluate(samples, rate, args.text)
    elif args.service == "clone":
        ref, ref_rate = audio.read(args.reference)
        result = evaluator.evaluate(samples, rate, args.text, ref, ref_rate)
    else:
        result = evaluator.evaluate(samples, rate, args.prompt, args.duration)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        for key, value in result.to_json().items():
            print(f"{key:>20}: {value}")
    return 0


def cmd_bench(args) -> int:
    from chorus.bench import main as bench

    return bench(
        args.service,
        args.duration,
        args.runs,
        args.json,
        args.output,
        args.load,
        args.validator,
        args.voices,
    )


# -- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chorus", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"chorus {__version__}")
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("wallet", help="create or show a wallet (sr25519 keys)")
    p.add_argument("action", choices=["create", "show"])
    _wallet_args(p, "default")
    p.set_defaults(func=cmd_wallet)

    p = sub.add_parser("chain", help="the local chain: init, register, show the metagraph")
    p.add_argument("action", choices=["init", "register", "show"])
    _chain_args(p)
    _wallet_args(p, "default")
    p.add_argument("--stake", type=float, default=0.0, help="stake to register with")
    p.add_argument("--validator", action="store_true", help="give the hotkey a validator permit")
    p.add_argument("--block-seconds", type=float, default=None, help="(init) seconds per block")
    p.add_argument("--json", action="store_true", help="(show) print JSON")
    p.set_defaults(func=cmd_chain)

    p = sub.add_parser("miner", help="serve generation backends over signed HTTP")
    _wallet_args(p, "miner")
    _chain_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8091)
    p.add_argument("--axon-host", default=None, help="address published on the chain")
    p.add_argument("--tts-backend", default="piper", help="tts backend (piper, degraded) or none")
    p.add_argument("--clone-backend", default="none", help="clone backend (world, neural) or none")
    p.add_argument("--clone-weights", default=None, help="weights file for a neural clone backend")
    p.add_argument("--music-backend", default="none", help="music backend (symbolic) or none")
    p.add_argument("--min-stake", type=float, default=0.0, help="minimum caller stake")
    p.add_argument("--blacklist", nargs="*", help="hotkeys to refuse")
    p.add_argument(
        "--allow-non-validators",
        action="store_true",
        help="accept registered callers without a validator permit",
    )
    p.add_argument("--max-queue", type=int, default=8, help="requests waiting before 429")
    p.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024)
    p.add_argument("--workers", type=int, default=1, help="generation threads")
    p.set_defaults(func=cmd_miner)

    p = sub.add_parser("validator", help="query miners, score them, set weights")
    _wallet_args(p, "validator")
    _chain_args(p)
    p.add_argument("--services", default="tts,clone,music", help="comma-separated services to test")
    p.add_argument("--rounds", type=int, default=None, help="stop after N rounds")
    p.add_argument("--alpha", type=float, default=0.9, help="moving-average weight of the past")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per miner answer")
    p.add_argument("--batch-size", type=int, default=16, help="miners queried per round")
    p.add_argument("--weights-interval", type=int, default=10, help="blocks between weights")
    p.add_argument("--round-interval", type=float, default=0.0, help="pause between rounds (s)")
    p.add_argument("--state", default=None, help="state folder (default ~/.chorus/validator-UID)")
    p.add_argument("--max-samples", type=int, default=50, help="audio samples kept")
    p.add_argument("--corpus", default=None, help="extra prompt sentences, one per line")
    p.add_argument("--voices", default=None, help="folder of reference recordings for clone")
    p.add_argument(
        "--dashboard-port", type=int, default=None, help="also serve the dashboard on this port"
    )
    p.add_argument("--dashboard-host", default="127.0.0.1", help="dashboard address")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_validator)

    p = sub.add_parser("localnet", help="a whole network on this machine, end to end")
    p.add_argument("--miners", type=int, default=3)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--out", default="demo-out", help="folder for chain, wallets, samples")
    p.add_argument("--port", type=int, default=18091, help="first miner port")
    p.add_argument("--alpha", type=float, default=0.5, help="validator moving-average alpha")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per miner answer")
    p.set_defaults(func=cmd_localnet)

    p = sub.add_parser("dashboard", help="a web page of a validator's scores and samples")
    p.add_argument("--state", required=True, help="validator state folder (state.sqlite)")
    p.add_argument("--chain-path", default=None, help="local chain file, to show weights")
    p.add_argument(
        "--validator-uid", type=int, default=None, help="whose weights (default: mean of all)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8300)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("gateway", help="an OpenAI-style audio API served by the best miners")
    _wallet_args(p, "gateway")
    _chain_args(p)
    p.add_argument("--state", required=True, help="validator state folder: miners' scores")
    p.add_argument("--api-key", action="append", help="ID:KEY (or KEY) accepted as Bearer")
    p.add_argument("--api-keys", default=None, help="file of API keys, one ID:KEY a line")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--rate", type=float, default=1.0, help="requests per second per key")
    p.add_argument("--burst", type=float, default=10.0, help="requests a key may burst")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per miner attempt")
    p.add_argument("--max-attempts", type=int, default=3, help="miners tried per request")
    p.add_argument("--log-file", default=None, help="JSON request log (default stdout)")
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("generate", help="generate audio locally with a backend")
    gen = p.add_subparsers(dest="service", required=True)
    g = gen.add_parser("tts", help="text to speech")
    g.add_argument("text")
    g.add_argument("--backend", default="piper")
    g.add_argument("--voice", default=None)
    g2 = gen.add_parser("clone", help="text in the voice of a reference recording")
    g2.add_argument("text")
    g2.add_argument("--reference", required=True, help="WAV/FLAC of the voice to clone")
    g2.add_argument("--backend", default="world")
    g3 = gen.add_parser("music", help="music that follows a text prompt")
    g3.add_argument("prompt")
    g3.add_argument("--duration", type=float, default=15.0, help="seconds (default 15)")
    g3.add_argument("--backend", default="symbolic")
    for each in (g, g2, g3):
        each.add_argument("-o", "--output", required=True, help="WAV or FLAC file to write")
        each.set_defaults(func=cmd_generate)

    p = sub.add_parser("evaluate", help="score an audio file as a validator would")
    ev = p.add_subparsers(dest="service", required=True)
    e = ev.add_parser("tts", help="speech against the text it should say")
    e.add_argument("--text", required=True)
    e2 = ev.add_parser("clone", help="cloned speech against its text and reference voice")
    e2.add_argument("--text", required=True)
    e2.add_argument("--reference", required=True, help="the reference recording")
    e3 = ev.add_parser("music", help="music against the prompt it should follow")
    e3.add_argument("--prompt", required=True)
    e3.add_argument("--duration", type=float, default=None, help="asked duration (s)")
    for each in (e, e2, e3):
        each.add_argument("audio")
        each.add_argument("--json", action="store_true", help="print one JSON object")
        each.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="time generation and evaluation per service")
    p.add_argument("--service", default="all", choices=["tts", "clone", "music", "all"])
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of audio (default 30 for tts and clone, 15 for music)",
    )
    p.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of tables")
    p.add_argument("--output", default=None, help="also write the tables into this Markdown file")
    p.add_argument(
        "--load",
        type=int,
        default=0,
        metavar="N",
        help="instead: N concurrent signed requests against a real miner process",
    )
    p.add_argument(
        "--validator",
        action="store_true",
        help="instead: score one round of 10 miners' 30 s TTS answers, every evaluator loaded",
    )
    p.add_argument(
        "--voices",
        action="store_true",
        help="instead: clone every voice of the built-in bank; the per-voice table",
    )
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    # resemblyzer's webrtcvad and pyworld import pkg_resources, which warns on every start.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    from chorus.audio import AudioError
    from chorus.chain import ChainError
    from chorus.generation import BackendError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (UsageError, FileNotFoundError, AudioError, ChainError, BackendError, ValueError) as e:
        print(f"chorus: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
