"""D-PSGD on the event clock: synchronous rounds of local training and one gossip step, ended by a barrier.

Owns `run_dpsgd`: every agent's finish time (training plus the exchange with each
neighbour) is pushed on the clock; the barrier is the last one popped, the same
virtual round time as the synchronous loop under `--aggregation gossip`.
"""

from __future__ import annotations

import numpy as np

from comdml_ray.baselines.events import EventClock, StepDone
from comdml_ray.baselines.recorder import Period, Recorder, evaluate_now
from comdml_ray.config import RunConfig
from comdml_ray.runtime.backend import Backend
from comdml_ray.timing.setting import Setting


def run_dpsgd(ex: Backend, st: Setting, cfg: RunConfig, rec: Recorder, after_row=None) -> EventClock:
    """Synchronous rounds: local training, one gossip step on the topology; a round ends at a barrier event.

    Every agent's finish time is pushed on the clock; the barrier is the last one
    popped, the same virtual round time as the synchronous loop under gossip.
    """
    n = st.n
    clock = EventClock()
    exch = st.gossip_exchange_s()
    last_finish = np.zeros(n)
    t0 = 0.0
    for r in range(cfg.rounds):
        reports = [ex.train_phase(g, r, [])[0] for g in range(st.num_groups)]
        sec = st.sec_per_batch(r)
        for k in range(n):
            clock.push(t0 + st.batches[k] * sec[k] + exch[k], StepDone(k, r))
        while len(clock):
            t, ev = clock.pop()
            last_finish[ev.agent] = t
        t0 = clock.now  # the barrier: the last agent's finish
        # Gossip with the groups' own methods (the topology's neighbours, MH weights).
        puts = ex.fetch([ex.gossip_put(g) for g in range(st.num_groups)])
        models = {k: s for d in puts for k, s in d.items()}
        for g, mine in enumerate(st.groups):
            ex.gossip_mix(g, {j: models[j] for k in mine for j in (k, *st.nbrs[k])})
        p = Period(
            r,
            virtual_time_s=t0,
            reports=reports,
            steps=np.ones(n, dtype=int),
            last_finish=last_finish.copy(),
            bytes_sent=np.array([len(st.nbrs[k]) * st.model_bytes for k in range(n)], dtype=float),
        )
        last = cfg.is_last(r, t0)
        if cfg.evaluates(r, t0):
            evaluate_now(ex, st, p, cfg.eval_images(last=last))
        rec.close(p)
        if last:
            break
        if after_row is not None:
            after_row(r, t0, None)  # no checkpoint of D-PSGD's loop (yet): only fault injection uses this
    rec.flush()
    return clock
