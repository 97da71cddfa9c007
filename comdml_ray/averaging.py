"""Group-side averaging: the exact all-reduce's local half, ComDML's aux-head averaging, and gossip; mixed into AgentGroup.

Owns
- `reduce_partial(model, aux)`: the group's pre-reduced contribution to the round's
  collective, one float64 vector [sum_k share_k * x_k | per split s: sum of w_k * aux_k
  over this group's offloaders of split s | per split s: sum of w_k], where share_k is
  agent k's share of all training data and w_k its sample count.  Agents packed in one
  actor are summed here, so the collective has one rank per actor, not per agent;
- `apply_total(total, model, aux)`: after the collective has summed every group's
  partial, every agent takes the exact data-weighted mean model, and every offloader
  of split s the mean of that split group's aux heads;
- `gossip_put` / `gossip_mix`: one Metropolis-Hastings step, x_i <- sum_j W_ij x_j over
  i's neighbours and itself, models as `Shipped` refs handed out by the driver.
The collective itself is the transport's: `ray.util.collective` in `actors.py`, a sum
over plain groups in `backend.LocalBackend`.  float64 partials keep the mean exact to
float32 rounding whatever the number of agents and the order of the sum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from comdml_ray.store import Shipped
from comdml_ray.topology import metropolis_hastings
from comdml_ray.training import flatten, unflatten_into


class Averaging:
    """Methods AgentGroup gains for the averaging step."""

    def aux_sizes(self) -> list[int]:
        """Floats of the aux head of every split row (in split-profile order)."""
        if "_aux_sizes" not in self.__dict__:
            model = next(iter(self.agents.values())).blank_model()
            self._aux_sizes = [sum(p.numel() for p in model.make_aux_head(int(m)).state_dict().values() if p.is_floating_point())
                               for m in self.split_profile.split_ids]
        return self._aux_sizes

    def reduce_partial(self, model: bool, aux: bool) -> np.ndarray:
        """This group's float64 contribution to the collective sum (layout in the module docstring)."""
        parts = []
        if model:
            share = self.setting.shares
            acc = None
            for k, a in self.agents.items():
                x = flatten(a.model).astype(np.float64) * share[k]
                acc = x if acc is None else acc + x
            parts.append(acc)
        if aux:
            sizes = self.aux_sizes()
            rows = {int(m): s for s, m in enumerate(self.split_profile.split_ids)}
            vecs = [np.zeros(n) for n in sizes]
            weights = np.zeros(len(sizes))
            for k, m in self.aux_used.items():
                w = float(self.agents[k].num_samples)
                vecs[rows[m]] += w * flatten(self.agents[k].aux[m]).astype(np.float64)
                weights[rows[m]] += w
            parts += [*vecs, weights]
        return np.concatenate(parts) if parts else np.zeros(0)

    def apply_total(self, total: np.ndarray, model: bool, aux: bool) -> None:
        """Set every agent's model to the mean and every offloader's aux head to its split group's mean."""
        pos = 0
        if model:
            size = flatten(next(iter(self.agents.values())).model).size
            mean = total[:size].astype(np.float32)
            for a in self.agents.values():
                unflatten_into(a.model, mean)
            pos = size
        if aux:
            sizes = self.aux_sizes()
            weights = total[pos + sum(sizes):]
            rows = {int(m): s for s, m in enumerate(self.split_profile.split_ids)}
            starts = pos + np.concatenate([[0], np.cumsum(sizes)])
            for k, m in self.aux_used.items():
                s = rows[m]
                unflatten_into(self.agents[k].aux[m], (total[starts[s]:starts[s + 1]] / weights[s]).astype(np.float32))
        self.aux_used = {}

    # ------------------------------------------------------------------ gossip
    def gossip_put(self) -> dict[int, Shipped]:
        return {k: Shipped.of(self.store, flatten(a.model)) for k, a in self.agents.items()}

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
            unflatten_into(a.model, mixed.astype(np.float32))
