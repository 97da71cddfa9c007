"""Group-side steps of the event-driven baselines (AD-PSGD, Swift, DivShare); mixed into AgentGroup.

Owns what an actor does when the driver's event clock (`comdml_ray/baselines.py`)
says "agent k finished a local step" or "these models/fragments reach agent k":
- `StepReport`: the small report of one local step (loss sum, batches) the driver reads;
- `FragmentSpec`, `fragment_indices` and `fragment_sizes`: DivShare's seeded cut of
  every tensor of a flat model into Omega fragments, computed the same way by sender
  and receiver, so only the values travel through the object store;
- `AsyncSteps`: the methods (one per event kind and algorithm) that `AgentGroup`
  gains; in Ray they are actor methods, called in virtual-time order by the driver.

A local step is `--step-batches` minibatches (each method's default in
`config.ASYNC_STEP_BATCHES`; 0: one round's work, `--local-epochs` passes over the
shard), `Agent.train_step`.  It is run when the driver processes the step's finish
event, from the parameters the agent had when the step started:
- if nobody touched the agent's model during the step (Swift, DivShare: only the
  agent itself changes its model), that is simply its current model, trained in place;
- if a neighbour averaged with it mid-step (AD-PSGD's passive side), the first such
  average saved the step's start value, and the finish applies the update computed
  from it on top of the current parameters, x_k <- x_k_now + (trained - start),
  as AD-PSGD applies a gradient computed on stale parameters.  BatchNorm running
  statistics are moving averages, not gradient steps: they become what the step's
  batches give when the average starts from the current value,
  trained + (1 - momentum)^batches * (now - start), which stays a valid variance
  (adding trained - start drove running variances negative: NaN, 10% accuracy).
So an evaluation between a step's start and finish sees the agent's current model,
never the result of a step that has not finished in virtual time.
Vectors are `flatten(model)`: parameters and BatchNorm buffers as one float32 array.
Payloads (models, fragments) travel as `store.Shipped` refs put by the actor that owns
them, never as return values.  No Ray imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from comdml_ray.learning.training import flatten, float_keys, unflatten_into
from comdml_ray.method.store import Shipped


@dataclass(frozen=True)
class StepReport:
    """What one finished local step reports to the driver (weights stay in the store)."""

    agent: int
    loss_sum: float  # sum of per-batch mean losses
    batches: int


@dataclass(frozen=True)
class FragmentSpec:
    """Which fragment a received array is: fragment q of sender's model after its step `step`."""

    sender: int
    step: int
    q: int


def fragment_indices(tensor_sizes: Sequence[int], fragments: int, seed: int, sender: int, step: int) -> list[np.ndarray]:
    """DivShare's cut: every tensor permuted (seeded by seed, sender, step) and sliced into
    `fragments` parts; fragment q is slice q of every tensor (docs/method.md §6.6).

    `tensor_sizes` are the sizes of the tensors in the flat vector's order (`flatten`).
    Sender and receivers compute the same index sets, so a fragment travels as its
    values alone.  Every parameter lies in exactly one fragment, and each fragment holds
    floor or ceil of 1/fragments of every tensor.
    """
    rng = np.random.default_rng([seed, sender, step])
    parts: list[list[np.ndarray]] = [[] for _ in range(fragments)]
    offset = 0
    for size in tensor_sizes:
        for q, piece in enumerate(np.array_split(offset + rng.permutation(size), fragments)):
            parts[q].append(piece)
        offset += size
    return [np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for p in parts]


def fragment_sizes(tensor_sizes: Sequence[int], fragments: int) -> list[int]:
    """Values in each fragment of `fragment_indices` (the same for every sender and step)."""
    return [sum(s // fragments + (q < s % fragments) for s in tensor_sizes) for q in range(fragments)]


class AsyncSteps:
    """Methods AgentGroup gains for the event-driven baselines (see comdml_ray/baselines.py)."""

    # ------------------------------------------------------------------ shared
    @property
    def _step_starts(self) -> dict[int, np.ndarray]:
        """agent -> its parameters at the start of the running step, saved on the first mid-step average."""
        if "_async_starts" not in self.__dict__:
            self._async_starts: dict[int, np.ndarray] = {}
        return self._async_starts

    def _touch(self, k: int, mid_step: bool) -> None:
        """Agent k's model is about to be changed by someone else: keep the running step's start value."""
        if mid_step and k not in self._step_starts:
            # Nothing changed the model since the step started, so this is the start value.
            self._step_starts[k] = flatten(self.agents[k].model)

    def _train_step(self, k: int) -> StepReport:
        """Run agent k's local step from the parameters it had when the step started (see module doc)."""
        a = self.agents[k]
        start = self._step_starts.pop(k, None)
        step_batches = int(self.setting.step_batches[k])
        if start is None:
            stats = a.train_step(step_batches)
        else:
            current = flatten(a.model).astype(np.float64)
            unflatten_into(a.model, start)
            stats = a.train_step(step_batches)
            trained = flatten(a.model).astype(np.float64)
            new = current + (trained - start)  # parameters: the stale update on top of the current values
            # BatchNorm running statistics are moving averages, not gradient steps: adding
            # (trained - start) can drive a running variance negative (NaN in eval).  The
            # average after T batches is linear in its initial value with weight (1-m)^T, so
            # the same batches seen from the current value give trained + (1-m)^T (current - start).
            is_buf, keep = self._buffer_layout(a.model)
            decay = keep[is_buf] ** stats.batches
            new[is_buf] = trained[is_buf] + decay * (current[is_buf] - start[is_buf])
            unflatten_into(a.model, new.astype(np.float32))
        return StepReport(k, stats.loss_sum, stats.batches)

    def _buffer_layout(self, model) -> tuple[np.ndarray, np.ndarray]:
        """Positions of running statistics in the flat vector, and 1 - momentum of their module, (P,) each."""
        if "_async_buffers" not in self.__dict__:
            params = {name for name, _ in model.named_parameters()}
            sd = model.state_dict()
            is_buf, keep = [], []
            for key in float_keys(model):
                n = sd[key].numel()
                buf = key not in params
                mom = getattr(model.get_submodule(key.rpartition(".")[0]), "momentum", None) if buf else None
                is_buf.append(np.full(n, buf))
                # momentum None (cumulative average) or unknown: keep the trained statistics.
                keep.append(np.full(n, 1.0 - mom if isinstance(mom, float) else 0.0))
            self._async_buffers = (np.concatenate(is_buf), np.concatenate(keep))
        return self._async_buffers

    def async_snapshot(self, k: int) -> Shipped:
        """Agent k's current flat model, put in the store for a partner."""
        return Shipped.of(self.store, flatten(self.agents[k].model))

    # ------------------------------------------------------------------ AD-PSGD
    def adpsgd_finish(self, k: int) -> StepReport:
        return self._train_step(k)

    def adpsgd_average(self, k: int, mid_step: bool, other: Shipped) -> Shipped:
        """Passive side of a pairwise average: x_k <- (x_k + x_other) / 2; returns the mean for the partner."""
        self._touch(k, mid_step)
        a = self.agents[k]
        mean = ((flatten(a.model).astype(np.float64) + other.open(self.store)) / 2).astype(np.float32)
        unflatten_into(a.model, mean)
        return Shipped.of(self.store, mean)

    def adpsgd_set(self, k: int, mid_step: bool, mean: Shipped) -> None:
        """Active side of a pairwise average: take the mean the partner computed (x_i = x_j)."""
        self._touch(k, mid_step)
        unflatten_into(self.agents[k].model, mean.open(self.store))

    # ------------------------------------------------------------------ Swift
    def swift_finish(self, k: int, weights: list[float], *models: Shipped) -> tuple[StepReport, Shipped]:
        """Finish a step, then mix with the last model received from each neighbour; never waits.

        `weights` = [w_kk, w_kj for each of `models`] (Metropolis-Hastings over the
        neighbours k has a model of, w_kk = 1 - their sum).  Returns the report and the
        trained (pre-mix) model, which the driver sends to k's neighbours.
        """
        rep = self._train_step(k)
        trained = flatten(self.agents[k].model)
        mixed = weights[0] * trained.astype(np.float64)
        for w, x in zip(weights[1:], models, strict=True):
            mixed += w * x.open(self.store)
        unflatten_into(self.agents[k].model, mixed.astype(np.float32))
        return rep, Shipped.of(self.store, trained)

    # ------------------------------------------------------------------ DivShare
    def tensor_sizes(self) -> list[int]:
        """Sizes of the model's floating tensors in `flatten` order (every agent's model has the same)."""
        if "_async_tensor_sizes" not in self.__dict__:
            model = next(iter(self.agents.values())).model
            sd = model.state_dict()
            self._async_tensor_sizes = [int(sd[key].numel()) for key in float_keys(model)]
        return self._async_tensor_sizes

    def divshare_finish(self, k: int, step: int, fragments: int, received: list[FragmentSpec], *values: Shipped) -> tuple:
        """Finish step `step`, cut the trained model into fragments, then aggregate what arrived.

        Each parameter becomes the mean of its local (trained) value and every copy of
        it received since k's last step.  Returns (report, fragment_0 .. fragment_{Omega-1})
        of the trained model, which the driver sends to random agents.
        """
        rep = self._train_step(k)
        a = self.agents[k]
        trained = flatten(a.model)
        sizes = self.tensor_sizes()
        mine = fragment_indices(sizes, fragments, self.cfg.seed, k, step)
        out = [Shipped.of(self.store, trained[idx]) for idx in mine]
        if received:
            total = trained.astype(np.float64)
            count = np.ones(trained.size)
            cuts: dict[tuple[int, int], list[np.ndarray]] = {}
            for spec, vals in zip(received, values, strict=True):
                key = (spec.sender, spec.step)
                if key not in cuts:
                    cuts[key] = fragment_indices(sizes, fragments, self.cfg.seed, *key)
                idx = cuts[key][spec.q]
                total[idx] += vals.open(self.store)
                count[idx] += 1
            unflatten_into(a.model, (total / count).astype(np.float32))
        return (rep, *out)
