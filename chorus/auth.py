"""Who may call a miner: btauth/1 signatures (``bittensor.http_auth``) plus chain checks.

Signing and verifying are the SDK's; this module adds what a subnet needs on top: the
caller must be registered on the chain, hold a validator permit and enough stake, and
not be blacklisted. That standing is checked first, on the claimed hotkey, against a copy
of the metagraph refreshed by a background thread (chorus.chain.view), so a slow chain
never holds a request up and keys that could never pass cost no signature check. Replay
protection keeps its nonces in bounded memory (``BoundedNonceStore``).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import bittensor as bt
from bittensor import http_auth

from chorus.chain import Chain, Neuron
from chorus.chain.view import MetagraphView
from chorus.errors import CallerError


class AuthFailure(CallerError):
    """A refused caller: ``status`` is the HTTP code (401 or 403), the message the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason, status)


def check_key_names(name: str, hotkey: str) -> None:
    """Refuse wallet and hotkey names that are not one plain folder or file name: an
    empty one puts keys straight into the wallets folder, ``../x`` outside it."""
    for flag, value in (("--wallet", name), ("--hotkey", hotkey)):
        if not value or "/" in value or os.sep in value or ".." in value:
            raise CallerError(
                f"{flag} {value!r} is not a usable name: it must be non-empty, without '/' or '..'"
            )


def load_wallet(name: str, hotkey: str = "default", path: str | None = None) -> bt.Wallet:
    """An existing wallet whose hotkey can sign; a clear error if it is missing."""
    from chorus.config import default_wallet_path

    check_key_names(name, hotkey)
    wallet = bt.Wallet(name=name, hotkey=hotkey, path=path or default_wallet_path())
    try:
        wallet.hotkey  # noqa: B018 - loads the keyfile, raising if absent
    except Exception as e:  # the SDK raises several types for a missing/broken keyfile
        raise FileNotFoundError(
            f"wallet {name!r} hotkey {hotkey!r} not found under {wallet.path}: "
            f"create it with `chorus wallet create --wallet {name} --hotkey {hotkey}` ({e})"
        ) from None
    return wallet


def create_wallet(name: str, hotkey: str = "default", path: str | None = None) -> bt.Wallet:
    """Create a coldkey (unencrypted here: local networks and tests) and a hotkey.

    An existing wallet is kept as it is, so running this twice is safe."""
    from chorus.config import default_wallet_path

    check_key_names(name, hotkey)
    wallet = bt.Wallet(name=name, hotkey=hotkey, path=path or default_wallet_path())
    if not wallet.coldkeypub_file.exists_on_device():
        wallet.create_new_coldkey(use_password=False, suppress=True)
    if not wallet.hotkey_file.exists_on_device():
        wallet.create_new_hotkey(use_password=False, suppress=True)
    return wallet


def sign(wallet: bt.Wallet, method: str, path: str, body: bytes, receiver: str) -> dict[str, str]:
    """btauth/1 headers for one request to ``receiver`` (a fresh nonce every call)."""
    return http_auth.sign(wallet, method=method, path=path, body=body, receiver_ss58=receiver)


@dataclass
class AccessPolicy:
    """What a miner demands of its callers, and how it keeps the checks cheap."""

    min_stake: float = 0.0
    require_validator_permit: bool = True
    blacklist: frozenset[str] = frozenset()
    max_age_s: float = http_auth.DEFAULT_MAX_AGE
    metagraph_ttl_s: float = 30.0  # the metagraph is re-read this often, in the background
    force_refresh_s: float = 5.0  # an unknown caller may force a re-read this often at most
    refresh_wait_s: float = 3.0  # how long an unknown caller waits for that re-read
    max_nonces: int = 50_000  # replay-protection entries kept, all callers together
    max_nonces_per_caller: int = 4_096


class BoundedNonceStore:
    """Replay protection (``http_auth.NonceStore``) in bounded memory.

    Each accepted (hotkey, nonce) is kept for ``retention`` seconds (at least the
    freshness window: anything older is refused as stale before the store is asked).
    Expired entries go first; beyond ``max_per_caller`` entries for one hotkey, or
    ``max_entries`` in all, the oldest entry is dropped and its hotkey's *floor* raised to
    its nonce: from then on, for ``retention`` seconds, that hotkey's nonces at or below
    the floor are refused as replays. So no nonce is ever accepted twice inside the
    window, whatever the flood; the price is that, past a cap, a request that arrives
    after newer ones from the same hotkey may be refused too. A hotkey's record (its
    floor) outlives its entries by at most ``retention``; in a miner only hotkeys that
    passed the standing check reach the store, so there are no more records than
    permitted neurons on the subnet.
    """

    def __init__(
        self,
        retention: float,
        max_entries: int = 50_000,
        max_per_caller: int = 4_096,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_entries < 1 or max_per_caller < 1:
            raise ValueError("nonce store caps must be at least 1")
        self.retention = retention
        self.max_entries = max_entries
        self.max_per_caller = max_per_caller
        self.clock = clock
        self.evicted = 0  # entries dropped before they expired
        self._all: OrderedDict[tuple[str, int], float] = OrderedDict()  # -> expiry
        self._callers: dict[str, _CallerNonces] = {}
        self._swept_at = clock()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._all)

    @property
    def callers(self) -> int:
        return len(self._callers)

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        now = self.clock()
        with self._lock:
            self._expire(now)
            caller = self._callers.get(hotkey_ss58)
            if caller is None:
                caller = self._callers[hotkey_ss58] = _CallerNonces()
            elif nonce_ns in caller.nonces or (
                caller.floor_until > now and nonce_ns <= caller.floor
            ):
                return False
            if len(caller.nonces) >= self.max_per_caller:
                self._evict(hotkey_ss58, next(iter(caller.nonces)), now)
            if len(self._all) >= self.max_entries:
                self._evict(*next(iter(self._all)), now)
            caller.nonces[nonce_ns] = None
            self._all[(hotkey_ss58, nonce_ns)] = now + self.retention
            return True

    def _evict(self, hotkey: str, nonce: int, now: float) -> None:
        del self._all[(hotkey, nonce)]
        caller = self._callers[hotkey]
        del caller.nonces[nonce]
        caller.floor = max(caller.floor, nonce) if caller.floor_until > now else nonce
        caller.floor_until = now + self.retention
        self.evicted += 1

    def _expire(self, now: float) -> None:
        while self._all:
            (hotkey, nonce), expiry = next(iter(self._all.items()))
            if expiry > now:
                break
            del self._all[(hotkey, nonce)]
            caller = self._callers[hotkey]
            del caller.nonces[nonce]
            if not caller.nonces and caller.floor_until <= now:
                del self._callers[hotkey]
        if now - self._swept_at > self.retention:  # hotkeys left with only an old floor
            self._swept_at = now
            for hotkey in [
                h for h, c in self._callers.items() if not c.nonces and c.floor_until <= now
            ]:
                del self._callers[hotkey]


@dataclass
class _CallerNonces:
    nonces: dict[int, None] = field(default_factory=dict)  # in the order accepted
    floor: int = 0
    floor_until: float = float("-inf")


class Gatekeeper:
    """Decides who may call the miner, cheapest check first.

    ``admit`` looks the *claimed* sender (the signed header's hotkey) up in the
    metagraph view (a dict; the chain is read in the background, chorus.chain.view) and
    applies the policy, so callers that could never pass cost no signature check and no
    nonce-store entry. ``verify`` then checks the signature, freshness, receiver and
    replay for those that could.
    """

    def __init__(
        self,
        chain: Chain,
        own_hotkey: str,
        policy: AccessPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.chain = chain
        self.own_hotkey = own_hotkey
        self.policy = policy or AccessPolicy()
        self.view = MetagraphView(
            chain,
            ttl_s=self.policy.metagraph_ttl_s,
            force_interval_s=self.policy.force_refresh_s,
            wait_s=self.policy.refresh_wait_s,
            clock=clock,
        )
        self.nonces = BoundedNonceStore(
            retention=self.policy.max_age_s + 30,
            max_entries=self.policy.max_nonces,
            max_per_caller=self.policy.max_nonces_per_caller,
            clock=clock,
        )

    def start(self) -> Gatekeeper:
        self.view.start()
        return self

    def close(self) -> None:
        self.view.close()

    async def admit(self, headers: Mapping[str, str]) -> Neuron:
        """The claimed sender's neuron if its standing lets it call; AuthFailure (401 with
        no sender, 403 for standing) or ChainError (503, no metagraph yet) otherwise.
        Nothing here is authenticated yet: it only decides whether to check the rest."""
        claimed = {k.lower(): v for k, v in headers.items()}.get(http_auth.HEADER_HOTKEY.lower())
        if not claimed:
            raise AuthFailure(401, f"MalformedAuth: missing {http_auth.HEADER_HOTKEY}")
        if claimed in self.policy.blacklist:
            raise AuthFailure(403, "caller hotkey is blacklisted by this miner")
        neuron = await self.view.lookup(claimed)
        if neuron is None:
            raise AuthFailure(403, "caller hotkey is not registered on the subnet")
        if self.policy.require_validator_permit and not neuron.validator_permit:
            raise AuthFailure(403, "caller has no validator permit")
        if neuron.stake < self.policy.min_stake:
            raise AuthFailure(
                403, f"caller stake {neuron.stake:g} is below the minimum {self.policy.min_stake:g}"
            )
        return neuron

    def verify(self, headers: Mapping[str, str], body: bytes, method: str, path: str) -> None:
        """The btauth/1 signature, receiver, freshness and replay checks: AuthFailure(401)."""
        try:
            http_auth.verify(
                headers,
                body,
                method=method,
                path=path,
                self_hotkey_ss58=self.own_hotkey,
                max_age=self.policy.max_age_s,
                nonce_store=self.nonces,
            )
        except http_auth.AuthError as e:
            raise AuthFailure(401, f"{type(e).__name__}: {e}") from None
