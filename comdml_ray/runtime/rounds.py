"""The steps of one synchronous round over any `Backend`: what `run.Run` calls, and tests call in process.

Owns
- `train_round(be, r, comdml)`: for `local`, every group trains; for ComDML, states
  gathered into one object, a plan on every group, digests compared, then the train,
  helper and finish phases with each ref routed only where it is needed.  Returns the
  handles of the groups' reports and of the plan (None for local), and the digests;
- `wall_round(be, r, comdml)`: the same for `--clock wall`: one overlapped call per
  group after the plan (offloaders and helpers message each other, no barrier);
- `average(be, setting, aggregation, aux)`: start the averaging step (one collective,
  or one gossip step plus an aux-only collective) and return what to wait for.
With `backend.LocalBackend` every handle is already a value, so the same functions run
a whole round without Ray.
"""

from __future__ import annotations

from typing import Any

from comdml_ray.method.messages import PlanDigest
from comdml_ray.runtime.backend import Backend
from comdml_ray.timing.setting import Setting


class PlanDisagreement(RuntimeError):
    """Groups computed different plans from the same states (the planner is not deterministic)."""


def train_round(be: Backend, r: int, comdml: bool, fetch=None) -> tuple[list[Any], Any]:
    """Start round r's training on every group; returns (report handles, plan handle or None).

    `fetch` is how the caller waits for the digests (the runtime counts what it receives).
    """
    fetch = fetch or be.fetch
    n = be.num_groups
    if not comdml:
        return [be.train_phase(g, r, [])[0] for g in range(n)], None
    planned, digests = _plan(be, r, fetch)
    out = [list(d.out) for d in digests]  # helper groups of each group's offloaders
    back = [[s for s in range(n) if h in out[s]] for h in range(n)]  # offloader groups each group helps
    trained = [be.train_phase(g, r, out[g]) for g in range(n)]
    helped = [be.helper_phase(h, r, back[h], [trained[s][1 + out[s].index(h)] for s in back[h]]) for h in range(n)]
    for g in range(n):
        be.finish_phase(g, r, [helped[h][1 + back[h].index(g)] for h in out[g]])
    return [t[0] for t in trained] + [h[0] for h in helped], planned[0][1]


def _plan(be: Backend, r: int, fetch) -> tuple[list[list[Any]], list[PlanDigest]]:
    """States gathered into one object, a plan on every group, digests compared."""
    n = be.num_groups
    states = be.concat_states([be.publish_states(g, r) for g in range(n)])
    planned = [be.plan_round(g, r, states) for g in range(n)]
    digests: list[PlanDigest] = fetch([p[0] for p in planned])
    if len({d.digest for d in digests}) != 1:
        raise PlanDisagreement(
            f"round {r}: agents disagree on the plan ({sorted({d.digest for d in digests})}); the planning function must be deterministic."
        )
    return planned, digests


def wall_round(be: Backend, r: int, comdml: bool, fetch=None) -> tuple[list[Any], Any]:
    """Start round r on the wall clock (`wall_steps`): for ComDML the same plan, then one overlapped call per group.

    No barrier between offloaders and helpers: they message each other; each call
    returns when its agent's model is whole.  Returns (report handles, plan handle or None).
    """
    fetch = fetch or be.fetch
    plan = None
    if comdml:
        planned, _ = _plan(be, r, fetch)
        plan = planned[0][1]
    return [be.wall_round(g, r) for g in range(be.num_groups)], plan


def average(be: Backend, st: Setting, aggregation: str, aux: bool, fetch=None, after: list | tuple = ()) -> list[Any]:
    """Start the averaging: one collective (exact weighted mean) or one gossip step; returns the acks to wait for.

    `after`: handles the collective must wait for (a failed one cancels it instead of hanging it).
    """
    fetch = fetch or be.fetch
    if aggregation == "gossip":
        puts = fetch([be.gossip_put(g) for g in range(be.num_groups)])
        models = {k: s for d in puts for k, s in d.items()}
        mixes = [be.gossip_mix(g, {j: models[j] for k in ids for j in (k, *st.nbrs[k])}) for g, ids in enumerate(st.groups)]
        return mixes + (be.average(model=False, aux=True, after=after) if aux else [])
    return be.average(model=True, aux=aux, after=after)
