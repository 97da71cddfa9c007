"""The group-side steps of one ComDML round, and the messages between them; mixed into AgentGroup.

Owns what an actor does in a ComDML round (docs/method.md §1, §4), in the order the
runtime calls it on every group:
1. `publish_states`: each agent announces its batches and *estimated* speed (under
   `--clock wall` the speed and link throughput it measured: `wall_steps`);
   the runtime gathers all groups' states into ONE object (`concat_states` on group 0);
2. `plan_round(r, states)`: every group solves the same offloading problem from that
   one object (decentralized planning; the runtime compares the digests) and keeps the
   plan; it returns its digest with the groups its offloaders send to (`out`) for the
   driver, and the plan itself as a second object that only the round's reducer reads;
3. `train_phase(r, dests)`: offloaders train prefix + aux head on the local loss and put
   activation chunks in the store; everyone else trains its own model.  It returns the
   report and, per helper group in `dests`, the list of `OffloadOut` for that group only;
4. `helper_phase(r, back, *inbound)`: helpers train their partners' suffixes on the
   chunks (one optimizer per round); they return, per offloader group in `back`, the
   trained suffixes of that group's agents only (`Shipped`);
For `local-deadline` (straggler-aware local SGD) `train_phase` is the whole round: each
agent trains the batches that fit before the round's deadline (`_deadline_round`).
5. `finish_phase(r, *returned)`: offloaders load their trained suffix; their aux heads
   then wait for the averaging step (`averaging.Averaging`), which averages them per
   split group in the same collective as the models.
So every actor receives the plan input once, a helper receives only its offloaders'
refs and an offloader only its helper's return: no actor sees another's full report.
"""

from __future__ import annotations

import hashlib

import numpy as np

from comdml_ray.learning.costmodel import SplitProfile
from comdml_ray.learning.training import SuffixTrainer, TrainStats, batches_per_round, flatten, train_prefix, unflatten_into
from comdml_ray.method.messages import AgentState, OffloadOut, PhaseReport, PlanDigest
from comdml_ray.method.store import Shipped
from comdml_ray.timing.clock import AgentWork
from comdml_ray.timing.profiles import AgentProfile, link_matrices
from solvers import OffloadProblem, Plan, solve

SPEED_EMA = 0.5  # weight of the newest observation in an agent's seconds-per-batch estimate


def plan_digest(plan: Plan) -> str:
    h = hashlib.sha256()
    h.update(np.asarray(plan.partner, dtype=np.int64).tobytes())
    h.update(np.asarray(plan.split, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def problem_from_states(states: list[AgentState], prof: SplitProfile, exchange_s: np.ndarray, helpers_can_serve: int) -> OffloadProblem:
    profiles = [AgentProfile(s.agent, 1.0, s.bandwidth_Bps, s.latency_s) for s in states]
    bw, lat = link_matrices(profiles)  # computed where the solver reads them, never N x N in memory
    if any(s.links for s in states):  # online profiling (wall clock): observed throughput of links used before, both directions
        bw = np.asarray(bw)
        for s in states:
            for src, bps in s.links:
                bw[src, s.agent] = bw[s.agent, src] = bps
    return OffloadProblem(
        batches=np.array([s.batches for s in states], dtype=float),
        sec_per_batch=np.array([s.sec_per_batch for s in states]),
        bandwidth=bw,
        latency=lat,
        splits=prof.table(),
        overhead_s=np.asarray(exchange_s, dtype=float),
        inbound_bandwidth=np.array([s.bandwidth_Bps for s in states]),
        helpers_can_serve=helpers_can_serve,
    )


def out_groups(plan: Plan, ids: list[int], owner: dict[int, int]) -> tuple[int, ...]:
    """The groups hosting the helpers of these agents' offloads, sorted."""
    return tuple(sorted({owner[int(plan.partner[k])] for k in ids if plan.partner[k] >= 0}))


class ComdmlSteps:
    """Methods AgentGroup gains for ComDML rounds (see the module docstring for the order)."""

    def publish_states(self, round_idx: int) -> list[AgentState]:
        """Each agent announces its batches and *estimated* speed, smoothed over what it observed."""
        if self.cfg.clock == "wall":
            return self._observed_states()
        truth = self.setting.sec_per_batch(max(round_idx - 1, 0))
        out = []
        for k, a in self.agents.items():
            # What the agent observed last round (its virtual seconds per batch) updates its estimate.
            a.sec_estimate = truth[k] if a.sec_estimate is None else SPEED_EMA * truth[k] + (1 - SPEED_EMA) * a.sec_estimate
            bpr = batches_per_round(a.num_samples, self.cfg.batch_size, self.cfg.local_epochs)
            out.append(AgentState(k, bpr, float(a.sec_estimate), a.profile.bandwidth_Bps, a.profile.latency_s))
        return out

    def _observed_states(self) -> list[AgentState]:
        """Wall clock: the estimates are what the agent measured (warm-up, then an EWMA over rounds: `wall_steps`)."""
        out = []
        for k, a in self.agents.items():
            bpr = batches_per_round(a.num_samples, self.cfg.batch_size, self.cfg.local_epochs)
            links = tuple(sorted((int(j), float(v)) for j, v in a.link_estimate.items()))
            out.append(AgentState(k, bpr, float(a.sec_estimate), a.profile.bandwidth_Bps, a.profile.latency_s, links))
        return out

    def concat_states(self, *state_lists: list[AgentState]) -> list[AgentState]:
        """Every group's states as one list in agent order: the one object every group plans from."""
        return sorted((s for lst in state_lists for s in lst), key=lambda s: s.agent)

    def plan_round(self, round_idx: int, states: list[AgentState]) -> tuple[PlanDigest, Plan]:
        """Compute the round's plan from every agent's published state (the same on every group)."""
        problem = problem_from_states(states, self.split_profile, self.setting.exchange_s, self.cfg.helpers_can_serve)
        self.plan = solve(problem, method=self.cfg.scheduler)
        return PlanDigest(self.group_id, plan_digest(self.plan), out_groups(self.plan, self.ids, self.setting.owner)), self.plan

    def train_phase(self, round_idx: int, dests: list[int] = ()) -> PhaseReport | tuple:
        """Offloaders first (they never wait), then everyone's own model (solo agents and helpers)."""
        rep = PhaseReport()
        plan = self.plan if self.cfg.algorithm == "comdml" else None
        outs: dict[int, list[OffloadOut]] = {h: [] for h in dests}
        owner = self.setting.owner
        for k in [k for k in self.ids if plan is not None and plan.partner[k] >= 0]:
            out = self._offload(k, rep)
            self.agents[k].park()  # back to flat state: one live module at a time
            outs[owner[out.helper]].append(out)
        limit = self._deadline_round(round_idx) if self.cfg.algorithm == "local-deadline" else None
        for k in self.ids:
            if k not in rep.work:
                stats = self.agents[k].train_alone(None if limit is None else int(limit[k]))
                self.agents[k].park()
                rep.work[k] = AgentWork(k, own_batches=stats.batches)
                rep.add(k, stats.loss_sum, stats.batches, 0)
        return (rep, *[outs[h] for h in dests]) if dests else rep

    def _deadline_round(self, round_idx: int) -> np.ndarray:
        """local-deadline: every agent's batches before the round's deadline, and the FedNova weights of the average.

        FedNova (Wang et al. 2020) normalises each agent's update by the steps it took:
        x <- x0 + tau_eff * sum_k p_k (x_k - x0) / tau_k, tau_eff = sum_k p_k tau_k, so an
        agent that trained fewer batches is not under-weighted, and one that trained more
        does not pull the average its way.  Every group computes the same tau from the
        setting (no message), keeps the round's start model x0 (every agent holds it after
        the exact all-reduce), and the averaging step sums w_k x_k + (p_k - w_k) x0 with
        w_k = tau_eff p_k / tau_k (`averaging.Averaging.contribution`).
        """
        _, tau = self.setting.deadline_batches(round_idx, self.cfg.deadline_quantile)
        p = self.setting.shares
        self._nova_weights = float(np.dot(p, tau)) * p / tau
        self._round_start = self.agents[self.ids[0]].flat().copy()
        return tau

    def _offload(self, k: int, rep: PhaseReport) -> OffloadOut:
        a = self.agents[k]
        row = int(self.plan.split[k])
        m = int(self.split_profile.split_ids[row])
        out = OffloadOut(k, int(self.plan.partner[k]), m, Shipped.of(self.store, flatten(a.model, a.model.suffix_keys(m))))
        stats = TrainStats()
        act_bytes = 0
        batches, lrs = a.next_round()
        for chunk in train_prefix(
            a.model.prefix(m), a.aux_head(m), a.x, a.y, batches, a.prefix_optimizer(m), self.cfg.chunk_batches, stats, a.encoder, lrs
        ):
            out.chunk_refs.append(self.store.put(chunk))
            act_bytes += sum(b.nbytes for b in chunk)  # encoded size: what the clock charges
        self.aux_used[k] = m
        rep.work[k] = AgentWork(k, prefix_batches=stats.batches, partner=out.helper, split_row=row, bytes_offloaded=act_bytes)
        rep.add(k, stats.loss_sum, stats.batches, out.suffix.nbytes + act_bytes)
        return out

    def helper_phase(self, round_idx: int, back: list[int], *inbound: list[OffloadOut]) -> PhaseReport | tuple:
        """Helpers train their partners' suffixes on the received activations, chunk by chunk."""
        rep = PhaseReport()
        returns: dict[int, dict[int, Shipped]] = {g: {} for g in back}
        owner = self.setting.owner
        for off in (o for lst in inbound for o in lst):
            helper = self.agents[off.helper]
            holder = helper.suffix_holder()
            unflatten_into(holder, off.suffix.open(self.store), holder.suffix_keys(off.split))
            refs = off.chunk_refs
            lrs = helper.schedule.for_batches(round_idx, len(refs) * self.cfg.chunk_batches)  # the offloader's round's rates
            trainer = SuffixTrainer(holder.suffix(off.split), helper.opt, self.device, lrs)
            for i, ref in enumerate(refs):
                if i + 1 < len(refs):
                    self.store.prefetch([refs[i + 1]])  # fetch the next chunk while training on this one
                trainer.train_chunk(self.store.get(ref))  # one copy to the device per chunk
            trained = Shipped.of(self.store, flatten(holder, holder.suffix_keys(off.split)))
            helper.pool.give(holder)
            returns[owner[off.offloader]][off.offloader] = trained
            rep.work.setdefault(off.helper, AgentWork(off.helper)).suffix_batches[off.offloader] = trainer.stats.batches
            rep.add(off.helper, trainer.stats.loss_sum, trainer.stats.batches, trained.nbytes)
        return (rep, *[returns[g] for g in back]) if back else rep

    def finish_phase(self, round_idx: int, *returned: dict[int, Shipped]) -> None:
        """Offloaders load the suffix their helper trained (their aux heads are averaged with the models)."""
        for d in returned:
            for k, shipped in d.items():
                a = self.agents[k]
                unflatten_into(a.model, shipped.open(self.store), a.model.suffix_keys(self.aux_used[k]))
                a.park()
