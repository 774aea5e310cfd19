"""``xmr eval``: retrieval quality, speed, memory and calibration on a labelled collection.

:func:`evaluate` (``run.py``) indexes and queries; :mod:`.metrics` holds the
metric functions, :mod:`.labels` the ground truth, :mod:`.compare` compares
two JSON reports, :mod:`.report` builds the tables and :mod:`.plot` the
reliability diagram.
"""

from __future__ import annotations

from xmr.evaluate.run import SCHEMA_ID, EvalOptions, EvalReport, evaluate

__all__ = ["SCHEMA_ID", "EvalOptions", "EvalReport", "evaluate"]
