"""The chain: who is registered, with what stake and permit, where they serve, and the
weights validators set. One small interface, two backends (a local SQLite file, and the
real Bittensor network); miners and validators only ever see this interface."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

from chorus.errors import CallerError, ChainFault


class ChainError(ChainFault):
    """The chain refused or could not do something; the message says what."""


@dataclass(frozen=True)
class Neuron:
    uid: int
    hotkey: str
    coldkey: str
    host: str | None
    port: int | None
    stake: float
    validator_permit: bool

    @property
    def url(self) -> str | None:
        """The miner's base URL, or None if it has not published an axon."""
        if not self.host or not self.port:
            return None
        return f"http://{self.host}:{self.port}"

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Standing:
    """One neuron's row of the metagraph as of an epoch: what Yuma Consensus made of the
    weights. Scores are fractions in [0, 1]; ``emission`` is in the subnet's units."""

    uid: int
    hotkey: str
    stake: float
    validator_permit: bool
    rank: float
    trust: float
    consensus: float
    incentive: float
    dividends: float
    emission: float
    validator_trust: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Epoch:
    """The result of one epoch: its block, every neuron's standing, and the subnet
    owner's cut of the emission (None where the chain does not report it)."""

    block: int
    neurons: list[Standing]
    owner_emission: float | None = None

    def standing(self, uid: int) -> Standing | None:
        return next((s for s in self.neurons if s.uid == uid), None)

    def to_json(self) -> dict:
        return {
            "block": self.block,
            "owner_emission": self.owner_emission,
            "neurons": [s.to_json() for s in self.neurons],
        }


@dataclass(frozen=True)
class WeightCommit:
    """Weights committed on a commit-reveal subnet: the chain applies them at the reveal
    (``reveal_block``, when drand round ``reveal_round`` is out) after running every
    weights check again, and silently drops them when one fails. ``weights`` are the u16
    values committed; ``status`` is "pending" until the reveal block has passed, then
    "revealed" (the chain holds them), "lost" (it does not; ``reason`` says why), or
    "superseded" (a later commit's weights replaced them before they were checked)."""

    hotkey: str
    uid: int
    block: int
    reveal_round: int
    reveal_block: int
    weights: dict[int, int]
    status: str = "pending"
    reason: str = ""

    def to_json(self) -> dict:
        return asdict(self)


class Chain(Protocol):
    """What chorus needs from a chain; see chorus.chain.local for the reference backend."""

    def neurons(self) -> list[Neuron]: ...

    def neuron(self, hotkey: str) -> Neuron | None: ...

    def block(self) -> int: ...

    def serve_axon(self, hotkey: str, host: str, port: int) -> None: ...

    def set_weights(self, hotkey: str, weights: dict[int, float]) -> None: ...

    def weights(self) -> dict[int, dict[int, float]]: ...

    def last_epoch(self) -> Epoch | None:
        """The latest epoch's results, or None before the first epoch."""
        ...

    def weight_commits(self) -> list[WeightCommit]:
        """Weights committed on a commit-reveal subnet and what the reveal did, oldest
        first ([] where weights are set in the clear, as on the local chain)."""
        ...


def may_set_weights(chain: object, neuron: Neuron) -> bool:
    """Whether the chain lets ``neuron`` set weights: with a validator permit, or as the
    subnet owner's hotkey where the chain has one (``owner_hotkey()``): subtensor lets the
    owner set weights without a permit or the minimum stake (``check_validator_permit``)."""
    if neuron.validator_permit:
        return True
    owner = getattr(chain, "owner_hotkey", None)
    return callable(owner) and owner() == neuron.hotkey


def open_chain(kind: str = "local", **options) -> Chain:
    """Open a chain backend by name: "local" (option ``path``) or "bittensor" (options
    ``network``, ``netuid`` and ``wallet``, the signer of weights and axon updates). A
    local chain must exist (``chorus chain init`` creates one): a mistyped path is refused
    rather than opened as a new, empty chain."""
    if kind == "local":
        from pathlib import Path

        from chorus.chain.local import LocalChain

        path = Path(options.get("path") or default_chain_path()).expanduser()
        if not path.is_file():
            raise CallerError(
                f"no local chain at {path}; create one with `chorus chain init"
                f"{'' if options.get('path') is None else f' --chain-path {path}'}`"
            )
        return LocalChain(path)
    if kind == "bittensor":
        from chorus.chain.bittensor import open_subnet

        return open_subnet(
            options.get("network") or "finney", options.get("netuid"), options.get("wallet")
        )
    raise ChainError(f"unknown chain backend {kind!r}; available: local, bittensor")


def default_chain_path() -> str:
    from chorus.config import chorus_home

    return str(chorus_home() / "chain.sqlite")
