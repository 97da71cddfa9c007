"""Offloading problem and its solvers (pure numpy + scipy + PuLP; no torch, no Ray).

`solve(problem, method)` is the one call the runtime makes each round:
- "greedy": the paper's decentralized slowest-first pairing (one-to-one);
- "exact": the optimal one-to-one plan in polynomial time (bisection + matching);
- "ilp": the PuLP integer program, one-to-one or many-to-one (helpers_can_serve > 1),
  falling back to `exact`/`greedy` (reason in `Plan.note` and the log) on any failure.
`evaluate_plan` scores any plan under the time model (docs/method.md §3.4).
"""

from __future__ import annotations

# Aliased so that `solvers.exact` / `solvers.greedy` stay the submodules.
from .exact import exact as _exact
from .exact import lower_bound
from .greedy import greedy as _greedy
from .plan import Plan, evaluate_plan, no_offload_plan
from .problem import AgentLinks, OffloadProblem, SplitTable

__all__ = [
    "METHODS",
    "AgentLinks",
    "OffloadProblem",
    "Plan",
    "SplitTable",
    "evaluate_plan",
    "lower_bound",
    "no_offload_plan",
    "solve",
]

METHODS = ("greedy", "exact", "ilp")


def solve(problem: OffloadProblem, method: str = "greedy", time_limit_s: float = 10.0, msg: bool = False) -> Plan:
    """Plan this round's offloading with `method` (see the module docstring)."""
    if method == "greedy":
        return _greedy(problem)
    if method == "exact":
        return _exact(problem)
    if method == "ilp":
        from .ilp import ilp  # PuLP is imported only when the ILP is asked for

        return ilp(problem, time_limit_s=time_limit_s, msg=msg)
    raise ValueError(f"unknown solver method {method!r}; use one of {', '.join(METHODS)}.")
