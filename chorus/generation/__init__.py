"""Generation backends, one module per service. Each backend is a class with a ``model``
(what ``/v1/info`` reports) and the method its service's protocol names (``synthesize``,
``clone`` or ``compose``; see ``chorus.services``); which backends exist, and how they are
loaded by name, is declared by the services."""

from __future__ import annotations

from chorus.errors import CallerError


class BackendError(CallerError):
    """A backend option that does not work (a missing weights folder, say)."""
