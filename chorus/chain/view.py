"""A miner's copy of the metagraph, kept fresh by a background thread.

Request handlers never read the chain: they look a hotkey up in the last good copy (a
dict). A thread re-reads the chain every ``ttl_s``; when a read fails or hangs, the copy
it has stays in use (its age is logged) and the thread retries with a growing delay. Only
when no copy was ever read does a lookup fail, with a ``ChainError`` (HTTP 503) that says
why. An unknown hotkey may ask for an early re-read, so a validator registered a moment
ago is accepted on its first request, but such forced reads are rate-limited
(``force_interval_s``) so unknown callers cannot make the miner hammer the chain.

It works with any ``Chain``. A backend that caches its own reads (``BittensorChain``'s
``metagraph(force=...)``) is asked for a fresh read, since this view is the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from chorus.chain import Chain, ChainError, Neuron

log = logging.getLogger("chorus.chain.view")

# Lookups that may wait for the next read at once (only while there is no copy yet); the
# rest are answered at once, so a flood during an outage cannot pile up waiters.
MAX_WAITERS = 64


def read_neurons(chain: Chain) -> list[Neuron]:
    """Every neuron, read from the chain now (past any cache of the backend's own)."""
    refresh = getattr(chain, "metagraph", None)
    if callable(refresh):
        refresh(force=True)
    return chain.neurons()


class MetagraphView:
    """Hotkey -> Neuron from the last good metagraph read; see the module docstring.

    ``clock`` (monotonic seconds) decides ages, due times and the forced-read rate limit;
    the thread also wakes at least every ``poll_s`` real seconds to look at it, so a test
    may drive it with a fake clock. ``wait_s`` bounds how long a lookup waits for a
    forced read (or for the very first read) before it answers from what it has.
    """

    def __init__(
        self,
        chain: Chain,
        ttl_s: float = 30.0,
        force_interval_s: float = 5.0,
        wait_s: float = 3.0,
        retry_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        poll_s: float = 5.0,
    ):
        self.chain = chain
        self.ttl_s = ttl_s
        self.force_interval_s = force_interval_s
        self.wait_s = wait_s
        self.retry_s = retry_s
        self.clock = clock
        self.poll_s = poll_s
        self.reads = 0  # chain reads attempted
        self.forced = 0  # of which asked for by a lookup
        self.failures = 0  # failed reads in a row
        self.error: str | None = None  # why the last read failed; None after a success
        self._callers: dict[str, Neuron] | None = None
        self._read_at = -math.inf  # clock time the current copy's read began
        self._due = -math.inf  # when the next background read is due
        self._forced_at = -math.inf  # when a lookup last asked for a read
        self._asked = False
        self._waiters: list[Future] = []  # resolved by the next read that starts
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._generation = 0  # bumped by close(): a thread of an older one exits

    # -- state ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether a copy was ever read."""
        return self._callers is not None

    @property
    def age_s(self) -> float | None:
        """Seconds since the copy in use was read; None before the first good read."""
        return None if self._callers is None else self.clock() - self._read_at

    def start(self) -> MetagraphView:
        """Start the background thread (again, after ``close``); a no-op if it runs."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, args=(self._generation,), name="metagraph-view", daemon=True
                )
                self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread; a read in progress finishes in the background. The copy stays
        readable, and ``start`` (or the next lookup that asks for a read) starts again."""
        with self._cond:
            self._generation += 1
            self._thread = None
            self._cond.notify_all()

    # -- lookups (from the event loop) ---------------------------------------------------

    def get(self, hotkey: str) -> Neuron | None:
        """The hotkey's neuron in the copy, never touching the chain; ChainError if there
        is no copy yet."""
        callers = self._callers
        if callers is None:
            raise ChainError(self._no_copy_reason())
        return callers.get(hotkey)

    async def lookup(self, hotkey: str) -> Neuron | None:
        """The hotkey's neuron. A hotkey missing from the copy (or no copy at all) asks
        for a fresh read, rate-limited, and waits for it at most ``wait_s``; the event
        loop is never blocked. ChainError (503) only if no copy was ever read."""
        callers = self._callers
        if callers is not None and hotkey in callers:
            return callers[hotkey]
        waiter = self._ask()
        if waiter is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.wrap_future(waiter), self.wait_s)
        return self.get(hotkey)

    def _ask(self) -> Future | None:
        """Ask the thread for a read now, unless one was asked for less than
        ``force_interval_s`` ago and a copy exists (then None). The future resolves (True
        on success) when a read that began after this call ends."""
        self.start()
        with self._cond:
            now = self.clock()
            if now - self._forced_at >= self.force_interval_s:
                self._forced_at = now
                self._asked = True
                self.forced += 1
            elif self._callers is not None or len(self._waiters) >= MAX_WAITERS:
                return None  # rate-limited; with no copy yet, wait for the next read
            waiter: Future = Future()
            waiter.set_running_or_notify_cancel()  # a waiter's timeout cannot cancel it
            self._waiters.append(waiter)
            self._cond.notify_all()
            return waiter

    def _no_copy_reason(self) -> str:
        why = f": {self.error}" if self.error else " yet"
        return (
            f"this miner has not read the metagraph{why}; it cannot check callers until "
            "the chain answers"
        )

    # -- the thread ----------------------------------------------------------------------

    def _run(self, generation: int) -> None:
        while True:
            with self._cond:
                while (
                    generation == self._generation and not self._asked and self.clock() < self._due
                ):
                    self._cond.wait(min(self.poll_s, max(0.0, self._due - self.clock())))
                if generation != self._generation:
                    return  # closed: waiters are left to the next thread, or time out
                self._asked = False
                waiters, self._waiters = self._waiters, []
            ok = self.read()
            for w in waiters:
                w.set_result(ok)

    def read(self) -> bool:
        """Read the chain now (in the calling thread) and update the copy; False, with
        the copy kept, if the read fails."""
        started = self.clock()
        self.reads += 1
        try:
            neurons = read_neurons(self.chain)
            callers = {n.hotkey: n for n in neurons}
        except Exception as e:  # any backend, any failure: keep serving the last copy
            reason = e.reason if isinstance(e, ChainError) else f"{type(e).__name__}: {e}"
            with self._cond:
                self.failures += 1
                self.error = reason
                delay = min(self.ttl_s, self.retry_s * 2 ** min(self.failures - 1, 16))
                self._due = self.clock() + delay
            if self._callers is None:
                log.warning(
                    "metagraph read failed (%s); no copy yet, callers get 503; retry in %.0f s",
                    reason,
                    delay,
                )
            else:
                log.warning(
                    "metagraph read failed (%s); serving the copy read %.0f s ago; retry in %.0f s",
                    reason,
                    self.clock() - self._read_at,
                    delay,
                )
            return False
        with self._cond:
            recovered = self.failures
            self._callers, self._read_at = callers, started
            self.failures, self.error = 0, None
            self._due = self.clock() + self.ttl_s
        if recovered:
            log.warning("metagraph read again after %d failed reads", recovered)
        return True
