"""The ``chorus`` command: one subcommand per task (``chorus --help`` names them all).

Every user mistake (a missing wallet, a bad file, an unknown backend) ends with a one-line
message on stderr and exit code 2, never a traceback; ``chorus.errors`` decides which
errors are mistakes. Services add their own arguments from their descriptors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from chorus import __version__
from chorus.chain import Chain, Epoch, Neuron, Standing
from chorus.config import check_output_file, check_port, quiet_dependency_warnings
from chorus.errors import CallerError as UsageError
from chorus.errors import ChorusError, exit_code

# -- shared options ---------------------------------------------------------------------


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1-65535 (argparse exits 2 with the reason)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return port


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


def _with_permit(args, why: str, owner_may: bool = False):
    """The wallet, the chain and the wallet's neuron, which must hold a validator permit
    (or, with ``owner_may``, be the subnet owner's hotkey, which may set weights without)."""
    from chorus.chain import may_set_weights

    wallet = _wallet(args)
    chain = _open_chain(args)
    me = chain.neuron(wallet.hotkey.ss58_address)
    allowed = me is not None and (may_set_weights(chain, me) if owner_may else me.validator_permit)
    if not allowed:
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
    if args.action == "epochs" and args.chain != "local":
        raise UsageError(
            "`chorus chain epochs` lists the local chain's history; on Bittensor, "
            "`chorus chain show --chain bittensor` gives the last epoch"
        )
    if args.action == "init":
        from chorus.chain import default_chain_path
        from chorus.chain.local import LocalChain

        chain = LocalChain(
            args.chain_path or default_chain_path(),
            block_seconds=args.block_seconds,
            tempo=args.tempo,
            yuma_version=args.yuma,
        )
        print(
            f"local chain ready at {chain.path} (block {chain.block()}, tempo {chain.tempo}"
            f" blocks, Yuma {chain.params().yuma})"
        )
        return 0
    if args.action == "epochs" and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    w = _wallet(args) if args.action == "register" else None  # the wallet's hint comes first
    chain = _open_chain(args)
    if w is not None:
        n = chain.register(
            w.hotkey.ss58_address, w.coldkeypub.ss58_address, args.stake, args.validator
        )
        role = "validator" if n.validator_permit else "miner"
        print(f"registered {w.name}/{w.hotkey_str} as uid {n.uid} ({role}, stake {n.stake:g})")
    elif args.action == "epochs":
        _show_epochs(chain.epochs(args.limit), args.json)
    else:
        _show_chain(chain, args.json)
    return 0


# What an epoch says of a neuron, beyond what the neuron row already has.
STANDING_FIELDS = tuple(
    f.name for f in fields(Standing) if f.name not in {"uid", "hotkey", "stake", "validator_permit"}
)


def _standing(epoch: Epoch | None, neuron: Neuron) -> Standing | None:
    """The neuron's standing in the epoch, if it held its uid then (not a previous owner)."""
    standing = epoch.standing(neuron.uid) if epoch else None
    return standing if standing and standing.hotkey == neuron.hotkey else None


def _show_chain(chain: Chain, as_json: bool) -> None:
    """The metagraph: neurons, axons, weights and, per neuron, the last epoch's results."""
    neurons = chain.neurons()
    weights = chain.weights()
    epoch = chain.last_epoch()
    block = chain.block()
    commits = chain.weight_commits()
    if as_json:
        rows = []
        for n in neurons:
            row = n.to_json()
            standing = _standing(epoch, n)
            for field in STANDING_FIELDS:
                row[field] = getattr(standing, field) if standing else None
            rows.append(row)
        print(
            json.dumps(
                {
                    "block": block,
                    "epoch_block": epoch.block if epoch else None,
                    "owner_emission": epoch.owner_emission if epoch else None,
                    "neurons": rows,
                    "weights": weights,
                    "weight_commits": [c.to_json() for c in commits],
                },
                indent=2,
            )
        )
        return
    when = f"last epoch at block {epoch.block}" if epoch else "no epoch yet"
    print(f"block {block}, {len(neurons)} neurons, {when}")
    print(
        f"{'uid':>4}  {'hotkey':<14} {'stake':>9}  {'permit':<6} {'incent.':>7} {'divid.':>7}"
        f" {'emission':>9} {'trust':>6} {'vtrust':>6}  axon"
    )
    for n in neurons:
        s = _standing(epoch, n)

        def num(field: str, fmt: str = ".4f", s=s) -> str:
            return format(getattr(s, field), fmt) if s else "-"

        print(
            f"{n.uid:>4}  {n.hotkey[:12] + '..':<14} {n.stake:>9g}  "
            f"{'yes' if n.validator_permit else '':<6} {num('incentive'):>7} "
            f"{num('dividends'):>7} {num('emission', '.3f'):>9} {num('trust', '.3f'):>6} "
            f"{num('validator_trust', '.3f'):>6}  {n.url or '-'}"
        )
    if epoch and epoch.owner_emission is not None:
        print(f"subnet owner's cut of the epoch: {epoch.owner_emission:.3f}")
    for vuid, w in weights.items():
        shown = ", ".join(f"{u}: {x:.3f}" for u, x in sorted(w.items()))
        print(f"weights from uid {vuid}: {shown or '(none)'}")
    for c in commits:  # commit-reveal: each recorded commit and what the reveal did
        print(
            f"weights committed by uid {c.uid} at block {c.block}: {c.status}"
            f" (reveal at block ~{c.reveal_block}){': ' + c.reason if c.reason else ''}"
        )


def _show_epochs(epochs: list[Epoch], as_json: bool) -> None:
    """The epoch history: per epoch, each neuron's incentive, dividends and emission."""
    if as_json:
        print(json.dumps([e.to_json() for e in epochs], indent=2))
        return
    if not epochs:
        print("no epoch yet: the chain runs one every tempo blocks")
        return
    print(f"{'block':>7} {'uid':>4} {'incent.':>7} {'divid.':>7} {'emission':>9} {'vtrust':>6}")
    for e in epochs:
        for s in e.neurons:
            print(
                f"{e.block:>7} {s.uid:>4} {s.incentive:>7.4f} {s.dividends:>7.4f}"
                f" {s.emission:>9.3f} {s.validator_trust:>6.3f}"
            )


# -- miner and validator ----------------------------------------------------------------


def check_weights(service, backend: str, weights: str | None, flag: str) -> None:
    """Refuses, before anything loads, a backend that loads a local model when no ``flag``
    names one (chorus ships none), and a ``flag`` that the chosen backend would not take."""
    if backend in service.weights_backends and not weights:
        raise UsageError(
            f"the {service.name} backend {backend!r} needs a local model: pass {flag} PATH"
        )
    if weights and backend not in service.weights_backends:
        names = ", ".join(sorted(service.weights_backends))
        raise UsageError(f"{flag} is for the {names} backend; {backend!r} takes no weights")


def miner_backends(args) -> dict[str, str]:
    """The miner's backend per service whose ``--NAME-backend`` is not "none", checked
    before any loads."""
    from chorus.services import NO_BACKEND, registry

    chosen = {}
    for name, service in registry().items():
        choice = getattr(args, f"{name}_backend", None)
        if choice and choice != NO_BACKEND:
            check_weights(
                service, choice, getattr(args, f"{name}_weights", None), f"--{name}-weights"
            )
            chosen[name] = choice
        service.flag_options(args, choice or NO_BACKEND)  # flags for a backend not served
    if not chosen:
        raise UsageError("the miner has no backend to serve; pass --tts-backend piper")
    return chosen


def load_backends(args) -> dict:
    """The miner's backends, one per service whose ``--NAME-backend`` is not "none"."""
    from chorus.numba_cache import compile_lock
    from chorus.services import get

    backends: dict = {}
    with compile_lock():  # loading may compile numba kernels into the shared cache
        for name, choice in miner_backends(args).items():
            service = get(name)
            options = service.backend_options(args, backends) | service.flag_options(args, choice)
            backends[name] = service.load_backend(choice, **options)
    return backends


def cmd_miner(args) -> int:
    import uvicorn

    from chorus.auth import AccessPolicy
    from chorus.miner import Miner, MinerSettings, create_app

    settings = MinerSettings(  # refuses bad settings before anything else
        max_body_bytes=args.max_body_bytes,
        max_queue=args.max_queue,
        workers=args.workers,
        policy=AccessPolicy(
            min_stake=args.min_stake,
            blacklist=frozenset(args.blacklist or []),
            require_validator_permit=not args.allow_non_validators,
        ),
    )
    miner_backends(args)  # a backend without its weights is refused before the wallet
    check_port(args.host, args.port)
    wallet = _wallet(args)
    chain = _open_chain(args)
    hotkey = wallet.hotkey.ss58_address
    if chain.neuron(hotkey) is None:
        raise UsageError(
            f"hotkey {args.wallet}/{args.hotkey} ({hotkey}) is not registered; run "
            f"`{_register_hint(args)}`"
        )
    if args.chain == "bittensor":
        chain.check_clock(background=True)  # warns when off by more than a second
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


def cmd_validator(args) -> int:
    from chorus.config import chorus_home
    from chorus.store import ValidatorStore
    from chorus.validator import Validator, ValidatorSettings, format_round

    services = tuple(s.strip() for s in args.services.split(",") if s.strip())
    settings = ValidatorSettings(  # refuses bad settings before anything else
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
    if args.rounds is not None and args.rounds < 1:
        raise UsageError(f"--rounds must be at least 1, not {args.rounds}; omit it to run forever")
    if args.max_samples < 0:
        raise UsageError(f"--max-samples must be 0 (keep none) or more, not {args.max_samples}")
    if args.dashboard_port:
        check_port(args.dashboard_host, args.dashboard_port)
    wallet, chain, me = _with_permit(args, "", owner_may=True)
    if args.chain == "bittensor":
        chain.check_clock(background=True)  # warns when off by more than a second
    state = Path(args.state or chorus_home() / f"validator-{me.uid}")
    store = ValidatorStore(state / "state.sqlite", state / "samples", args.max_samples)
    from chorus.services import load_scoring

    validator = Validator(wallet, chain, store, load_scoring(services), settings)
    done = store.last_round()
    start = f"resuming after round {done}" if done else "starting at round 1"
    print(f"validator uid {me.uid} {start}; state in {state}", flush=True)

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
    from chorus.localnet import LocalnetSettings, run_localnet

    settings = LocalnetSettings(
        miners=args.miners,
        validators=args.validators,
        rounds=args.rounds,
        out=args.out,
        base_port=args.port,
        alpha=args.alpha,
        timeout_s=args.timeout,
        lazy=args.lazy_validator,
        services=tuple(x for x in (args.services or "").split(",") if x),
    )
    report = run_localnet(settings)
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        print(f"report: {args.report}")
    return 0


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

    from chorus.chain import default_chain_path, open_chain
    from chorus.dashboard import create_dashboard_app

    check_port(args.host, args.port)
    store = _validator_store(args.state)
    # The local chain the other commands use, when there is one: its weights and epochs.
    default = Path(default_chain_path())
    path = args.chain_path or (str(default) if default.exists() else None)
    chain = open_chain("local", path=path) if path else None
    app = create_dashboard_app(store, chain, args.validator_uid, args.gateway_db)
    shown = f", chain {path}" if path else ", no chain"
    print(f"dashboard for {args.state}{shown} on http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0


def cmd_gateway(args) -> int:
    import uvicorn

    from chorus.config import chorus_home
    from chorus.gateway import Gateway, GatewaySettings, RequestLog, create_gateway_app, load_keys
    from chorus.gateway_store import GatewayStore

    settings = GatewaySettings(
        timeout_s=args.timeout, max_attempts=args.max_attempts, rate=args.rate, burst=args.burst
    )
    keys = load_keys(args.api_keys, args.api_key)
    if not keys:
        raise UsageError("the gateway needs API keys: --api-key KEY or --api-keys FILE")
    check_port(args.host, args.port)
    wallet, chain, _ = _with_permit(args, " (miners answer no one else)")
    store = _validator_store(args.state)
    # The log file stays open for the life of the server.
    log = RequestLog(open(args.log_file, "a") if args.log_file else sys.stdout)  # noqa: SIM115
    db = GatewayStore(args.db or chorus_home() / "gateway.sqlite")
    gateway = Gateway(wallet, chain, store, keys, settings, log, db)
    url = f"http://{args.host}:{args.port}"
    print(f"gateway on {url}/v1 ({len(keys)} API keys); a playground page at {url}/", flush=True)
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
    from chorus.services import get

    service = get(args.service)
    challenge = service.challenge_from_args(args)  # bad input is refused before any loading
    check_output_file(args.output, "--output")
    audio.file_format(args.output, "--output")
    weights = getattr(args, "weights", None)  # only services with weights_backends have it
    check_weights(service, args.backend, weights, "--weights")
    options = ({"weights": weights} if weights else {}) | service.flag_options(args, args.backend)
    backend = service.load_backend(args.backend, **options)
    samples, rate = service.generate(backend, challenge)
    path = audio.write(args.output, samples, rate)
    print(f"wrote {path} ({len(samples) / rate:.2f} s at {rate} Hz, {backend.model})")
    return 0


def cmd_evaluate(args) -> int:
    from chorus import audio
    from chorus.services import get, load_scoring

    service = get(args.service)
    samples, rate = audio.read(args.audio)
    challenge = service.challenge_from_args(args)
    evaluator = load_scoring([service.name])[service.name]
    result = evaluator.evaluate(samples, rate, challenge).to_json()
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0


def cmd_bench(args) -> int:
    from chorus.bench import main as bench
    from chorus.load import FLOOD_REQUESTS

    if args.flood is not None and not args.load:
        raise UsageError("--flood needs --load N: it floods the miner the load bench starts")
    return bench(
        args.service,
        args.duration,
        args.runs,
        args.json,
        args.output,
        args.load,
        args.validator,
        args.voices,
        args.agreement,
        FLOOD_REQUESTS if args.flood is None else args.flood,
        args.asr,
    )


def cmd_redteam(args) -> int:
    from chorus.redteam import main as redteam

    if args.cases < 1:
        raise UsageError("--cases must be at least 1")
    return redteam(args.service, args.cases, args.seed, args.json, args.output)


# -- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from chorus.auth import AccessPolicy
    from chorus.bench import DEFAULT_RUNS
    from chorus.chain.local import DEFAULT_TEMPO
    from chorus.gateway import GatewaySettings
    from chorus.load import FLOOD_REQUESTS
    from chorus.localnet import LAZY_MODES, LocalnetSettings
    from chorus.miner import MinerSettings
    from chorus.services import NO_BACKEND, registry
    from chorus.validator import ValidatorSettings

    services = registry()
    ms, vs, gs, ls = MinerSettings(), ValidatorSettings(), GatewaySettings(), LocalnetSettings()
    parser = argparse.ArgumentParser(prog="chorus")
    parser.add_argument("--version", action="version", version=f"chorus {__version__}")
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("wallet", help="create or show a wallet (sr25519 keys)")
    p.add_argument("action", choices=["create", "show"])
    _wallet_args(p, "default")
    p.set_defaults(func=cmd_wallet)

    p = sub.add_parser(
        "chain", help="the chain: init, register, show the metagraph, list past epochs"
    )
    p.add_argument("action", choices=["init", "register", "show", "epochs"])
    _chain_args(p)
    _wallet_args(p, "default")
    p.add_argument("--stake", type=float, default=0.0, help="stake to register with")
    p.add_argument("--validator", action="store_true", help="give the hotkey a validator permit")
    p.add_argument("--block-seconds", type=float, default=None, help="(init) seconds per block")
    p.add_argument(
        "--tempo", type=int, default=None, help=f"(init) blocks per epoch ({DEFAULT_TEMPO})"
    )
    p.add_argument("--yuma", type=int, choices=[2, 3], default=None, help="(init) Yuma version (3)")
    p.add_argument("--limit", type=int, default=20, help="(epochs) how many, newest last")
    p.add_argument("--json", action="store_true", help="(show, epochs) print JSON")
    p.set_defaults(func=cmd_chain)

    p = sub.add_parser("miner", help="serve generation backends over signed HTTP")
    _wallet_args(p, "miner")
    _chain_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8091)
    p.add_argument("--axon-host", default=None, help="address published on the chain")
    for name, service in services.items():
        p.add_argument(
            f"--{name}-backend",
            default=service.miner_backend,
            help=f"{name} backend ({', '.join(service.backends)}) or {NO_BACKEND}"
            f" (default {service.miner_backend})",
        )
        service.add_miner_arguments(p)
    p.add_argument(
        "--min-stake", type=float, default=AccessPolicy.min_stake, help="minimum caller stake"
    )
    p.add_argument("--blacklist", nargs="*", help="hotkeys to refuse")
    p.add_argument(
        "--allow-non-validators",
        action="store_true",
        help="accept registered callers without a validator permit",
    )
    p.add_argument("--max-queue", type=int, default=ms.max_queue, help="requests before 429")
    p.add_argument("--max-body-bytes", type=int, default=ms.max_body_bytes)
    p.add_argument("--workers", type=int, default=ms.workers, help="generation threads")
    p.set_defaults(func=cmd_miner)

    p = sub.add_parser("validator", help="query miners, score them, set weights")
    _wallet_args(p, "validator")
    _chain_args(p)
    p.add_argument(
        "--services",
        default=",".join(services),
        help="comma-separated services to test, in turn (default: all, %(default)s); a miner "
        "that does not serve one scores 0 in its rounds",
    )
    p.add_argument("--rounds", type=int, default=None, help="stop after N rounds")
    p.add_argument("--alpha", type=float, default=vs.alpha, help="moving-average weight of past")
    p.add_argument("--timeout", type=float, default=vs.timeout_s, help="seconds per answer")
    p.add_argument("--batch-size", type=int, default=vs.batch_size, help="miners per round")
    p.add_argument(
        "--weights-interval",
        type=int,
        default=vs.weights_interval_blocks,
        help="blocks between weights",
    )
    p.add_argument(
        "--round-interval", type=float, default=vs.round_interval_s, help="pause between rounds"
    )
    p.add_argument("--state", default=None, help="state folder (default ~/.chorus/validator-UID)")
    p.add_argument("--max-samples", type=int, default=50, help="audio samples kept (0: none)")
    p.add_argument("--corpus", default=None, help="extra prompt sentences, one per line")
    p.add_argument("--voices", default=None, help="folder of reference recordings for clone")
    p.add_argument(
        "--dashboard-port",
        type=port_number,
        default=None,
        help="also serve the dashboard on this port",
    )
    p.add_argument("--dashboard-host", default="127.0.0.1", help="dashboard address")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_validator)

    p = sub.add_parser("localnet", help="a whole network on this machine, end to end")
    p.add_argument("--miners", type=int, default=ls.miners)
    p.add_argument(
        "--validators", type=int, default=ls.validators, help="honest validators (own stakes)"
    )
    p.add_argument(
        "--lazy-validator",
        choices=LAZY_MODES,
        default=None,
        help="add a validator that copies the consensus or sets random weights",
    )
    p.add_argument("--services", default=None, help="comma-separated services (default: all)")
    p.add_argument("--report", default=None, help="also write the outcome as JSON here")
    p.add_argument("--rounds", type=int, default=ls.rounds)
    p.add_argument("--out", default=ls.out, help="folder for chain, wallets, samples")
    p.add_argument("--port", type=port_number, default=ls.base_port, help="first miner port")
    p.add_argument("--alpha", type=float, default=ls.alpha, help="validator moving-average alpha")
    p.add_argument("--timeout", type=float, default=ls.timeout_s, help="seconds per answer")
    p.set_defaults(func=cmd_localnet)

    p = sub.add_parser("dashboard", help="a web page of a validator's scores and samples")
    p.add_argument("--state", required=True, help="validator state folder (state.sqlite)")
    p.add_argument(
        "--chain-path",
        default=None,
        help="local chain file, to show weights and epochs (default ~/.chorus/chain.sqlite "
        "when it exists)",
    )
    p.add_argument(
        "--validator-uid", type=int, default=None, help="whose weights (default: mean of all)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8300)
    p.add_argument("--gateway-db", default=None, help="a gateway's database, to show its usage")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("gateway", help="an OpenAI-style audio API served by the best miners")
    _wallet_args(p, "gateway")
    _chain_args(p)
    p.add_argument("--state", required=True, help="validator state folder: miners' scores")
    p.add_argument("--api-key", action="append", help="ID:KEY (or KEY) accepted as Bearer")
    p.add_argument("--api-keys", default=None, help="file of API keys, one ID:KEY a line")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8080)
    p.add_argument("--rate", type=float, default=gs.rate, help="requests per second per key")
    p.add_argument("--burst", type=float, default=gs.burst, help="requests a key may burst")
    p.add_argument("--timeout", type=float, default=gs.timeout_s, help="seconds per attempt")
    p.add_argument("--max-attempts", type=int, default=gs.max_attempts, help="miners per request")
    p.add_argument("--log-file", default=None, help="JSON request log (default stdout)")
    p.add_argument(
        "--db", default=None, help="voices and usage (default $CHORUS_HOME/gateway.sqlite)"
    )
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("generate", help="generate audio locally with a backend")
    gen = p.add_subparsers(dest="service", required=True)
    for name, service in services.items():
        g = gen.add_parser(name, help=service.title)
        service.add_arguments(g, "generate")
        g.add_argument("--backend", default=service.default_backend, choices=service.backends)
        if service.weights_backends:
            names = ", ".join(sorted(service.weights_backends))
            g.add_argument("--weights", default=None, help=f"local model for the {names} backend")
        g.add_argument("-o", "--output", required=True, help="WAV or FLAC file to write")
        g.set_defaults(func=cmd_generate)

    p = sub.add_parser("evaluate", help="score an audio file as a validator would")
    ev = p.add_subparsers(dest="service", required=True)
    for name, service in services.items():
        e = ev.add_parser(name, help=service.title)
        service.add_arguments(e, "evaluate")
        e.add_argument("audio")
        e.add_argument("--json", action="store_true", help="print one JSON object")
        e.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="time generation and evaluation per service")
    p.add_argument("--service", default="all", choices=[*services, "all"])
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of audio (default: "
        + ", ".join(f"{s.bench_seconds:g} for {n}" for n, s in services.items())
        + ")",
    )
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="timed runs after a warm-up")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of tables")
    p.add_argument("--output", default=None, help="also write the tables into this Markdown file")
    p.add_argument(
        "--load",
        type=int,
        default=0,
        metavar="N",
        help="instead: N concurrent signed requests against a real miner process "
        "(default 0: no load bench)",
    )
    p.add_argument(
        "--flood",
        type=int,
        default=None,  # refused without --load; FLOOD_REQUESTS with it
        metavar="N",
        help="with --load: then N signed requests from an unregistered key, 32 at a time, "
        f"and a validator's latency during them (default {FLOOD_REQUESTS}; 0: skip)",
    )
    p.add_argument(
        "--validator",
        action="store_true",
        help="instead: score one round of 10 miners' 30 s TTS answers, every evaluator loaded",
    )
    p.add_argument(
        "--asr",
        action="store_true",
        help="instead: WER and CPU of our Whisper decoding against faster-whisper's on 216 "
        "Piper readings, clean and degraded (about 20 minutes)",
    )
    p.add_argument(
        "--voices",
        action="store_true",
        help="instead: clone every voice of the built-in bank; the per-voice table",
    )
    p.add_argument(
        "--agreement",
        action="store_true",
        help="instead: a local network with 3 honest validators and a random one; "
        "their agreement and validator trust",
    )
    p.set_defaults(func=cmd_bench)

    from chorus.redteam import DEFAULT_CASES, DEFAULT_SEED

    p = sub.add_parser("redteam", help="score honest answers against degraded ones and cheats")
    p.add_argument("--service", default="all", choices=[*services, "all"])
    p.add_argument(
        "--cases",
        type=int,
        default=DEFAULT_CASES,
        help=f"prompts per service; the claims are judged (exit 1 if one fails) over at least "
        f"{DEFAULT_CASES}, fewer only print what would fail",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the prompts")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--output", default=None, help="also write the tables into this Markdown file")
    p.set_defaults(func=cmd_redteam)
    # named from the parser itself, so a new subcommand is never missing from the list
    parser.description = f"The chorus command: {', '.join(sub.choices)}."
    return parser


def _stdout_closed() -> bool:
    """Whether the reader of our standard output has gone (a pipe reports an error)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poll.poll(0))
    except (OSError, ValueError):
        return False


def _path_mistake(error: OSError, args: argparse.Namespace | None) -> Exception | None:
    """A file-system error as the user's mistake, or None if it is not one. An error on a
    path the user gave (an argument, ``CHORUS_HOME``, ``CHORUS_WALLET_PATH``, a file under
    one or a folder on its way) reads "Is a directory: /tmp"; a FileNotFoundError with its
    own message (a missing wallet) stays as it is. Anything else is ours to fix."""
    if error.filename is not None and args is not None:
        given = [os.environ.get("CHORUS_HOME"), os.environ.get("CHORUS_WALLET_PATH")]
        for value in vars(args).values():
            given += value if isinstance(value, list) else [value]
        failed = Path(os.path.abspath(os.fsdecode(error.filename)))
        paths = [
            Path(os.path.abspath(os.path.expanduser(g))) for g in given if g and isinstance(g, str)
        ]
        for path in paths:
            if path == failed or path in failed.parents or failed in path.parents:
                return UsageError(f"{error.strerror or error}: {os.fsdecode(error.filename)}")
    if isinstance(error, FileNotFoundError) and error.filename is None:
        return error
    return None


def main(argv: list[str] | None = None) -> int:
    quiet_dependency_warnings()
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)  # plug-in services load here
        logging.basicConfig(
            level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError as e:
        if not _stdout_closed():  # a peer's socket, not our reader: an error like any other
            print(f"chorus: error: {e}", file=sys.stderr)
            return 1
        # The reader went away (`chorus ... | head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ChorusError, OSError) as e:
        error = _path_mistake(e, args) if isinstance(e, OSError) else e
        if error is None:
            raise  # a file of our own (or no file at all): a bug, with its traceback
        print(f"chorus: error: {error}", file=sys.stderr)
        return exit_code(error)


if __name__ == "__main__":
    sys.exit(main())
