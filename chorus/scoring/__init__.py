"""Scoring: evaluators that turn (audio, challenge) into a typed result with a score in
[0, 1] and the metrics behind it. They load their models once and are reused for every
call; the result types live with their services (``chorus.services``)."""
