"""Group-side averaging: the group's part of the model all-reduce, ComDML's aux heads, gossip; mixed into AgentGroup.

Owns the arithmetic; the transport between groups is the caller's (`ray.util.collective`
in `actors.AgentHost.allreduce`, plain calls in `backend.LocalBackend.average`):
- the model: the exact data-weighted mean sum_k share_k x_k (local-deadline: FedNova's
  step-normalised mean, `contribution`), summed in the one order a
  ring all-reduce over the agents uses (chunk c of the flat model, which belongs to agent
  c, is summed x_c + x_{c+1} + ... + x_{c-1}, in float32), so a run's results do not
  depend on how agents are packed into actors.  Agents are numbered contiguously by
  group, so the sum of a group's chunks starts in that group (`ring_start`, its agents
  from c on), passes once through every other group in ring order (`ring_add`: all of
  that group's agents at once: the pre-reduction), and ends back in its own group
  (`ring_add`: its agents before c).  One hop per group; `ring_finish` applies the result;
- the same sums in one collective (`gather_payload`, `gathered_finish`): every group
  gathers every agent's scaled model and every group's aux partial and sums them itself
  in that order (`ring_order_sum`; the aux partials in group order): one call instead
  of one hop per group, for fleets whose models are small enough to gather
  (`actors.GATHER_LIMIT_BYTES`); the results are the ring's, bit for bit;
- the aux heads: a float64 sum per split group (`aux_partial`, `apply_aux`);
- gossip: one Metropolis-Hastings step, x_i <- sum_j W_ij x_j over i's neighbours and
  itself, models as `Shipped` refs handed out by the driver.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from comdml_ray.learning.training import flatten, float_keys, unflatten_into
from comdml_ray.method.store import Shipped
from comdml_ray.timing.topology import metropolis_hastings


def ring_order_sum(x: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """The ring's sum from all N scaled models (N, size): chunk c is x_c + x_{c+1} + ... + x_{c-1}, one agent at a time in float32."""
    n, size = x.shape
    src, cols = np.repeat(np.arange(n), np.diff(bounds)), np.arange(size)
    acc = np.zeros(size, dtype=np.float32)
    for _ in range(n):
        acc += x[src, cols]
        src = (src + 1) % n
    return acc


class Averaging:
    """Methods AgentGroup gains for the averaging step."""

    def aux_sizes(self) -> list[int]:
        """Floats of the aux head of every split row (in split-profile order)."""
        if "_aux_sizes" not in self.__dict__:
            model = next(iter(self.agents.values())).blank_model()
            self._aux_sizes = [
                sum(p.numel() for p in model.make_aux_head(int(m)).state_dict().values() if p.is_floating_point())
                for m in self.split_profile.split_ids
            ]
        return self._aux_sizes

    # ------------------------------------------------------------------ the model: a ring in agent order
    def _bounds(self) -> np.ndarray:
        """Chunk c of the flat model belongs to agent c: [bounds[c], bounds[c+1]) (the model's size never changes: computed once)."""
        if "_bounds_of_chunks" not in self.__dict__:
            size = next(iter(self.agents.values())).flat().size
            self._bounds_of_chunks = np.linspace(0, size, self.cfg.agents + 1).astype(np.int64)
        return self._bounds_of_chunks

    def contribution(self, k: int) -> np.ndarray:
        """Agent k's term of the all-reduce's sum, float32: its model scaled by its data share p_k.

        local-deadline (FedNova): w_k x_k + (p_k - w_k) x0 on the parameters, with the round's
        weights w and start model x0 (`comdml_steps.ComdmlSteps._deadline_round`), so the sum
        is x0 + sum_k w_k (x_k - x0); BatchNorm running statistics are not gradient steps and
        keep the plain p_k x_k.
        """
        share = np.float32(self.setting.shares[k])
        x = self.agents[k].flat()  # the stored vector, or the live module's: read only
        if self.cfg.algorithm != "local-deadline":
            return x * share
        w = np.where(self._parameter_mask(), np.float32(self._nova_weights[k]), share)
        return w * x + (share - w) * self._round_start

    def _parameter_mask(self) -> np.ndarray:
        """(size,) True where the flat model holds a trained parameter, False for BatchNorm buffers (computed once)."""
        if "_is_parameter" not in self.__dict__:
            model = next(iter(self.agents.values())).pool.template  # the model's layout, no agent's module borrowed
            params = dict(model.named_parameters())
            sd = model.state_dict()
            self._is_parameter = np.concatenate([np.full(sd[k].numel(), k in params) for k in float_keys(model)])
        return self._is_parameter

    def ring_block(self, owner: int) -> tuple[int, int]:
        """The part of the flat model whose chunks belong to group `owner`'s agents."""
        ids, b = self.setting.groups[owner], self._bounds()
        return int(b[ids[0]]), int(b[ids[-1] + 1])

    def ring_start(self) -> np.ndarray:
        """Scale every agent's model by its data share; start the sums of this group's chunks, (block,) float32.

        Chunk c's sum runs x_c + x_{c+1} + ... + x_{N-1} + x_0 + ... + x_{c-1}, added one
        agent at a time in float32: here from agent c to this group's last agent.
        """
        self._scaled = {k: self.contribution(k) for k in self.agents}
        b, (lo, hi) = self._bounds(), self.ring_block(self.group_id)
        acc = np.zeros(hi - lo, dtype=np.float32)
        for k in self.ids:  # agent k adds to the chunks c <= k
            acc[: b[k + 1] - lo] += self._scaled[k][lo : b[k + 1]]
        return acc

    def ring_add(self, acc: np.ndarray, owner: int) -> np.ndarray:
        """Add this group's agents, in id order, to the running sums of group `owner`'s chunks.

        Another group's chunks get every agent of this group; this group's own chunks, back
        from their trip round the ring, get the agents before each chunk's own (k < c).
        """
        lo, hi = self.ring_block(owner)
        if owner != self.group_id:
            for k in self.ids:
                acc += self._scaled[k][lo:hi]
            return acc
        b = self._bounds()
        for k in self.ids:  # agent k adds to the chunks c > k
            acc[b[k + 1] - lo :] += self._scaled[k][b[k + 1] : hi]
        return acc

    # ------------------------------------------------------------------ the same sums gathered: one collective
    def gather_payload(self, model: bool, aux: bool) -> np.ndarray:
        """This group's part of the gathered all-reduce, float32 (the same length on every group).

        Its agents' scaled models in id order, with zero rows up to the largest group's
        agent count, then its aux partial's float64 bytes (as float32 pairs).
        """
        parts = []
        if model:
            size = int(self._bounds()[-1])
            x = np.zeros((self._gather_width(), size), dtype=np.float32)
            for i, k in enumerate(self.ids):
                x[i] = self.contribution(k)  # as ring_start scales
            parts.append(x.ravel())
        if aux:
            parts.append(self.aux_partial().view(np.float32))
        return np.concatenate(parts)

    def _gather_width(self) -> int:
        """Model rows in every group's payload: the largest group's agent count."""
        return max(len(ids) for ids in self.setting.groups)

    def gathered_finish(self, parts: list[np.ndarray], model: bool, aux: bool) -> None:
        """Every group's `gather_payload`, in group order: the model summed as the ring sums it, the aux heads in group order."""
        width = self._gather_width()
        size = int(self._bounds()[-1]) if model else 0
        if model:
            x = np.concatenate(
                [p[: width * size].reshape(width, size)[: len(ids)] for p, ids in zip(parts, self.setting.groups, strict=True)]
            )
            self.ring_finish(ring_order_sum(x, self._bounds()))
        if aux:
            total = 0  # as LocalBackend.average sums the groups' partials
            for p in parts:
                total = total + np.ascontiguousarray(p[width * size :]).view(np.float64)
            self.apply_aux(total)

    def ring_finish(self, full: np.ndarray) -> None:
        """Every agent takes the summed model (the exact data-weighted mean, to float32 rounding): one vector, held once."""
        for a in self.agents.values():
            a.set_weights(full)
        self._scaled = {}

    # ------------------------------------------------------------------ aux heads: a float64 sum per split group
    def aux_partial(self) -> np.ndarray:
        """[per split s: sum of w_k * aux_k over this group's offloaders of split s | per split s: sum of w_k], float64."""
        sizes = self.aux_sizes()
        rows = {int(m): s for s, m in enumerate(self.split_profile.split_ids)}
        vecs = [np.zeros(n) for n in sizes]
        weights = np.zeros(len(sizes))
        for k, m in self.aux_used.items():
            w = float(self.agents[k].num_samples)
            vecs[rows[m]] += w * flatten(self.agents[k].aux[m]).astype(np.float64)
            weights[rows[m]] += w
        return np.concatenate([*vecs, weights])

    def apply_aux(self, total: np.ndarray) -> None:
        """Every offloader's aux head becomes its split group's data-weighted mean."""
        sizes = self.aux_sizes()
        weights = total[sum(sizes) :]
        rows = {int(m): s for s, m in enumerate(self.split_profile.split_ids)}
        starts = np.concatenate([[0], np.cumsum(sizes)])
        for k, m in self.aux_used.items():
            s = rows[m]
            unflatten_into(self.agents[k].aux[m], (total[starts[s] : starts[s + 1]] / weights[s]).astype(np.float32))
        self.aux_used = {}

    # ------------------------------------------------------------------ gossip
    def gossip_put(self) -> dict[int, Shipped]:
        return {k: Shipped.of(self.store, a.flat()) for k, a in self.agents.items()}

    def gossip_mix(self, models: dict[int, Any]) -> None:
        """x_i <- sum_j W_ij x_j over i's neighbours and itself (Metropolis-Hastings weights)."""
        nbrs = self.setting.nbrs
        if "_mh" not in self.__dict__:
            self._mh = metropolis_hastings(nbrs)  # (N, N), the same every round
        w = self._mh
        for k, a in self.agents.items():
            js = [k, *nbrs[k]]
            vecs = self.store.get([models[j].ref for j in js])
            mixed = np.tensordot(w[k, js], np.stack(vecs).astype(np.float64), axes=1)
            a.set_weights(mixed.astype(np.float32))
