"""Rewards that separate, in a local network: real miners over signed HTTP, a real validator,
weights through ``chorus.incentive``. One honest miner against three cheap cheats keeps at
least 80 % of the weight; two honest miners split it about evenly."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

import numpy as np

from chorus import degrade
from chorus.miner import Miner, create_app
from chorus.piper import PiperTTS
from chorus.store import ValidatorStore
from chorus.validator import Validator, ValidatorSettings
from tests.servers import ThreadServer, make_net


class CheapTTS:
    """Piper's words made cheaply worse by ``spoil`` (what a miner saving compute, or
    gaming a lenient score, would send)."""

    def __init__(self, piper: PiperTTS, spoil):
        self.piper, self.spoil, self.model = piper, spoil, "cheap"

    def synthesize(self, text: str, voice: str | None = None) -> tuple[np.ndarray, int]:
        return self.spoil(*self.piper.synthesize(text))


def weights_after_rounds(tmp_path, evaluator, backends: list, rounds: int = 4) -> list[float]:
    """Each backend served by its own miner; the weights the validator sets, in order."""
    net = make_net(tmp_path, miners=len(backends))
    with ExitStack() as stack:
        uids = []
        for wallet, backend in zip(net.miners, backends, strict=True):
            hotkey = wallet.hotkey.ss58_address
            app = create_app(Miner(hotkey, net.chain, {"tts": backend}))
            server = stack.enter_context(ThreadServer(app))
            net.chain.serve_axon(hotkey, "127.0.0.1", server.port)
            uids.append(net.chain.neuron(hotkey).uid)
        store = ValidatorStore(tmp_path / "state.sqlite")
        settings = ValidatorSettings(timeout_s=30, alpha=0.5, weights_interval_blocks=1, seed=4)
        validator = Validator(net.validator, net.chain, store, {"tts": evaluator}, settings)
        asyncio.run(validator.run(rounds=rounds))
        weights = net.chain.weights()[net.chain.neuron(validator.hotkey).uid]
    return [weights.get(uid, 0.0) for uid in uids]


def test_one_honest_miner_against_three_cheats_gets_at_least_80_percent(
    tmp_path, piper, tts_evaluator
):
    cheats = [
        CheapTTS(piper, lambda x, r: degrade.white_noise(x, r, snr_db=10.0)),
        CheapTTS(piper, degrade.monotone),
        CheapTTS(piper, lambda x, r: degrade.clip(x, r, threshold=0.1)),
    ]
    # Each cheat scores well under half the honest miner in every round (zero weight from
    # the first), so two rounds show it; the even split below needs four to average.
    honest, *rest = weights_after_rounds(
        tmp_path, tts_evaluator, [PiperTTS(seed=1), *cheats], rounds=2
    )
    assert honest >= 0.8, (honest, rest)


def test_two_honest_miners_split_evenly(tmp_path, tts_evaluator):
    first, second = weights_after_rounds(
        tmp_path, tts_evaluator, [PiperTTS(seed=1), PiperTTS(seed=2)]
    )
    assert abs(first - 0.5) <= 0.1 and abs(second - 0.5) <= 0.1, (first, second)
