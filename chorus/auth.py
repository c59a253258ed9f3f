"""Who may call a miner: btauth/1 signatures (``bittensor.http_auth``) plus chain checks.

Signing and verifying are the SDK's; this module adds what a subnet needs on top: the
caller must be registered on the chain, hold a validator permit and enough stake, and
not be blacklisted. The metagraph is cached and refreshed in the background of requests
so that a burst of calls does not hammer the chain.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import bittensor as bt
from bittensor import http_auth

from chorus.chain import Chain, Neuron
from chorus.errors import CallerError


class AuthFailure(CallerError):
    """A refused caller: ``status`` is the HTTP code (401 or 403), the message the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason, status)


def load_wallet(name: str, hotkey: str = "default", path: str | None = None) -> bt.Wallet:
    """An existing wallet whose hotkey can sign; a clear error if it is missing."""
    from chorus.config import default_wallet_path

    wallet = bt.Wallet(name=name, hotkey=hotkey, path=path or default_wallet_path())
    try:
        wallet.hotkey  # noqa: B018 - loads the keyfile, raising if absent
    except Exception as e:  # the SDK raises several types for a missing/broken keyfile
        raise FileNotFoundError(
            f"wallet {name!r} hotkey {hotkey!r} not found under {wallet.path}: "
            f"create it with `chorus wallet create --name {name} --hotkey {hotkey}` ({e})"
        ) from None
    return wallet


def create_wallet(name: str, hotkey: str = "default", path: str | None = None) -> bt.Wallet:
    """Create a coldkey (unencrypted here: local networks and tests) and a hotkey.

    An existing wallet is kept as it is, so running this twice is safe."""
    from chorus.config import default_wallet_path

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
    """What a miner demands of its callers."""

    min_stake: float = 0.0
    require_validator_permit: bool = True
    blacklist: frozenset[str] = frozenset()
    max_age_s: float = http_auth.DEFAULT_MAX_AGE
    metagraph_ttl_s: float = 30.0


class Gatekeeper:
    """Verifies a request's signature and the caller's standing on the chain."""

    def __init__(self, chain: Chain, own_hotkey: str, policy: AccessPolicy | None = None):
        self.chain = chain
        self.own_hotkey = own_hotkey
        self.policy = policy or AccessPolicy()
        self.nonces = http_auth.InMemoryNonceStore(retention=self.policy.max_age_s + 30)
        self._lock = threading.Lock()
        self._callers: dict[str, Neuron] = {}
        self._fetched_at = float("-inf")

    def _metagraph(self, force: bool = False) -> dict[str, Neuron]:
        with self._lock:
            stale = time.monotonic() - self._fetched_at > self.policy.metagraph_ttl_s
            if force or stale:
                self._callers = {n.hotkey: n for n in self.chain.neurons()}
                self._fetched_at = time.monotonic()
            return self._callers

    def _lookup(self, hotkey: str) -> Neuron | None:
        neuron = self._metagraph().get(hotkey)
        if neuron is None and time.monotonic() - self._fetched_at > 5.0:
            # A validator registered after our last refresh should not wait a whole TTL,
            # but unknown hotkeys must not be able to force a chain read per request.
            neuron = self._metagraph(force=True).get(hotkey)
        return neuron

    def check(self, headers: Mapping[str, str], body: bytes, method: str, path: str) -> Neuron:
        """The calling neuron, or AuthFailure(401 for a bad signature, 403 for standing)."""
        claimed = {k.lower(): v for k, v in headers.items()}.get(http_auth.HEADER_HOTKEY.lower())
        if claimed and claimed in self.policy.blacklist:
            raise AuthFailure(403, "caller hotkey is blacklisted by this miner")
        try:
            caller = http_auth.verify(
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
        neuron = self._lookup(caller.hotkey_ss58)
        if neuron is None:
            raise AuthFailure(403, "caller hotkey is not registered on the subnet")
        if self.policy.require_validator_permit and not neuron.validator_permit:
            raise AuthFailure(403, "caller has no validator permit")
        if neuron.stake < self.policy.min_stake:
            raise AuthFailure(
                403, f"caller stake {neuron.stake:g} is below the minimum {self.policy.min_stake:g}"
            )
        return neuron
