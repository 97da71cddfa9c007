"""Group-side steps of the asynchronous baselines (AD-PSGD, Swift, DivShare); mixed into AgentGroup.

Placeholder: the baselines issue fills this in.
"""

from __future__ import annotations


class AsyncSteps:
    """Methods AgentGroup gains for event-driven baselines (see comdml_ray/baselines.py)."""
