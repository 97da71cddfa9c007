"""The one typed way in to the agents (like Flower's `Backend`): the loops see these methods, nothing else.

Owns
- `Backend`: the typed methods that the synchronous rounds (`run.Run`) and the
  event loops (`baselines`) call on agent group g.  Each returns a `Handle` of its
  result (an ObjectRef in Ray, the value itself in process); `fetch` waits for
  values; `average` runs the round's collective over every group at once;
- `LocalBackend`: plain `AgentGroup`s in this process, called at once: a whole ComDML
  round and every baseline run in unit tests without Ray.
`actors.RayBackend` is the other implementation: the same methods as actor calls.
A method is named once, by reference to `AgentGroup`'s own method (no strings), and
`_call` says how one implementation invokes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

from comdml_ray.config import RunConfig
from comdml_ray.learning.costmodel import SplitProfile
from comdml_ray.learning.data import DatasetArrays, load_dataset
from comdml_ray.method.agent import AgentGroup, AgentInfo
from comdml_ray.method.async_steps import FragmentSpec, StepReport
from comdml_ray.method.checkpoint import SavedPart
from comdml_ray.method.messages import AgentState, OffloadOut, PhaseReport
from comdml_ray.method.store import LocalStore, Shipped
from comdml_ray.storage import OutDir
from comdml_ray.timing.setting import Setting

T = TypeVar("T")


class Handle(Generic[T]):
    """Typing marker: a result of type T that may still be in flight (ObjectRef, or the value)."""


class Backend:
    """Typed calls on agent groups; subclasses implement `_call`, `fetch` and `average`."""

    num_groups: int

    # ------------------------------------------------------------------ transport
    def _call(self, g: int, fn: Callable, *args: Any, returns: int | None = None) -> Any:
        """Invoke fn on group g: one handle, or (returns=n) a list of n handles of the n values it returns."""
        raise NotImplementedError

    def fetch(self, handles: list[Handle[T]]) -> list[T]:
        raise NotImplementedError

    def average(self, model: bool, aux: bool, after: list[Handle] | tuple = ()) -> list[Handle[None]]:
        """The round's collective over every group: the model's ring-order sum and/or the aux heads' sums (`averaging`).

        `after`: handles that must be ready first (a failed one cancels the collective, see `actors.AgentHost.allreduce`).
        """
        raise NotImplementedError

    def record_metrics(self, g: int, rows: list[dict], accuracy: float | None) -> None:
        """Per-agent dashboard metrics (only where there is a dashboard)."""

    # ------------------------------------------------------------------ set-up
    def describe(self, g: int) -> Handle[list[AgentInfo]]:
        return self._call(g, AgentGroup.describe)

    def profile_splits(self, g: int) -> Handle[SplitProfile]:
        return self._call(g, AgentGroup.profile_splits)

    def aux_sizes(self, g: int) -> Handle[list[int]]:
        return self._call(g, AgentGroup.aux_sizes)

    def set_setting(self, g: int, setting: Setting | Handle[Setting], prof: SplitProfile) -> Handle[None]:
        return self._call(g, AgentGroup.set_setting, setting, prof)

    # ------------------------------------------------------------------ synchronous rounds
    def publish_states(self, g: int, r: int) -> Handle[list[AgentState]]:
        return self._call(g, AgentGroup.publish_states, r)

    def concat_states(self, states: list[Handle[list[AgentState]]]) -> Handle[list[AgentState]]:
        return self._call(0, AgentGroup.concat_states, *states)

    def plan_round(self, g: int, r: int, states: Handle[list[AgentState]]) -> list[Handle]:
        """[the digest (for the driver), the plan (for the round's reducer)]."""
        return self._call(g, AgentGroup.plan_round, r, states, returns=2)

    def train_phase(self, g: int, r: int, dests: list[int]) -> list[Handle[PhaseReport] | Handle[list[OffloadOut]]]:
        """[report, then per group in dests the offloads bound for it]."""
        return self._call(g, AgentGroup.train_phase, r, dests, returns=1 + len(dests))

    def helper_phase(self, g: int, r: int, back: list[int], inbound: list[Handle[list[OffloadOut]]]) -> list[Handle]:
        """[report, then per group in back the trained suffixes of its offloaders]."""
        return self._call(g, AgentGroup.helper_phase, r, back, *inbound, returns=1 + len(back))

    def finish_phase(self, g: int, r: int, returned: list[Handle[dict[int, Shipped]]]) -> Handle[None]:
        return self._call(g, AgentGroup.finish_phase, r, *returned)

    # ------------------------------------------------------------------ wall-clock rounds (--clock wall)
    def warm_up(self, g: int) -> Handle[float]:
        return self._call(g, AgentGroup.warm_up)

    def wall_round(self, g: int, r: int) -> Handle[PhaseReport]:
        """The group's whole overlapped round; its peers' messages reach it directly (`actors.WallHost`)."""
        return self._call(g, AgentGroup.wall_round, r)

    def gossip_put(self, g: int) -> Handle[dict[int, Shipped]]:
        return self._call(g, AgentGroup.gossip_put)

    def gossip_mix(self, g: int, models: dict[int, Shipped]) -> Handle[None]:
        return self._call(g, AgentGroup.gossip_mix, models)

    def evaluate(self, g: int, agents: list[int], images: int | None = None, part: tuple[int, int] = (0, 1)) -> Handle[dict[int, float]]:
        return self._call(g, AgentGroup.evaluate, agents, images, part)

    def flat_model(self, g: int, k: int) -> Handle[np.ndarray]:
        return self._call(g, AgentGroup.flat_model, k)

    # ------------------------------------------------------------------ checkpoints
    def save_state(self, g: int, folder: OutDir, shared: bool) -> Handle[SavedPart]:
        return self._call(g, AgentGroup.save_state, folder, shared)

    def load_state(self, g: int, folder: OutDir, files: list[str], shared: bool) -> Handle[None]:
        return self._call(g, AgentGroup.load_state, folder, files, shared)

    def checkpoint_files(self, g: int, shared: bool) -> list[Handle]:
        """[the group's SavedPart, its checkpoint files (name -> bytes)]: two handles, so the files can go elsewhere than the part."""
        return self._call(g, AgentGroup.checkpoint_files, shared, returns=2)

    def restore_files(self, g: int, shared: bool, *files: Handle[dict[str, bytes]]) -> Handle[None]:
        return self._call(g, AgentGroup.restore_files, shared, *files)

    # ------------------------------------------------------------------ event-driven baselines
    def adpsgd_finish(self, g: int, k: int) -> Handle[StepReport]:
        return self._call(g, AgentGroup.adpsgd_finish, k)

    def async_snapshot(self, g: int, k: int) -> Handle[Shipped]:
        return self._call(g, AgentGroup.async_snapshot, k)

    def adpsgd_average(self, g: int, k: int, mid_step: bool, other: Handle[Shipped]) -> Handle[Shipped]:
        return self._call(g, AgentGroup.adpsgd_average, k, mid_step, other)

    def adpsgd_set(self, g: int, k: int, mid_step: bool, mean: Handle[Shipped]) -> Handle[None]:
        return self._call(g, AgentGroup.adpsgd_set, k, mid_step, mean)

    def swift_finish(self, g: int, k: int, weights: list[float], models: list[Handle[Shipped]]) -> list[Handle]:
        """[report, the trained model (Shipped)]."""
        return self._call(g, AgentGroup.swift_finish, k, weights, *models, returns=2)

    def tensor_sizes(self, g: int) -> Handle[list[int]]:
        return self._call(g, AgentGroup.tensor_sizes)

    def divshare_finish(
        self, g: int, k: int, step: int, fragments: int, received: list[FragmentSpec], values: list[Handle[Shipped]]
    ) -> list[Handle]:
        """[report, fragment 0 .. fragment Omega-1 (Shipped)]."""
        return self._call(g, AgentGroup.divshare_finish, k, step, fragments, received, *values, returns=1 + fragments)


class LocalBackend(Backend):
    """Plain AgentGroups in this process, called at once; handles are the values themselves."""

    def __init__(self, cfg: RunConfig, groups: list[list[int]], data: DatasetArrays | None = None):
        data = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
        self.cfg = cfg
        self.store = LocalStore()
        self.groups = [AgentGroup(g, ids, cfg, data, self.store) for g, ids in enumerate(groups)]
        self.num_groups = len(self.groups)
        # The same set-up as `run.Run`: describe, profile on group 0, one Setting for all.
        infos = sorted((i for grp in self.groups for i in grp.describe()), key=lambda i: i.agent)
        self.split_profile = self.groups[0].profile_splits()
        self.setting = Setting.build(
            cfg,
            groups,
            np.array([i.num_samples for i in infos]),
            np.array([i.batches_per_round for i in infos]),
            self.split_profile.base_sec_per_batch,
            self.split_profile.model_bytes,
        )
        self.use_setting(self.setting)

    def use_setting(self, setting: Setting) -> None:
        """Give every group this setting (tests change speeds with `dataclasses.replace`)."""
        self.setting = setting
        for grp in self.groups:
            grp.set_setting(setting, self.split_profile)

    def _call(self, g: int, fn: Callable, *args: Any, returns: int | None = None) -> Any:
        out = getattr(self.groups[g], fn.__name__)(*args)  # bound: also right for static methods (concat_states)
        return out if returns is None else [out] if returns == 1 else list(out)

    def fetch(self, handles: list[Any]) -> list[Any]:
        return list(handles)

    def average(self, model: bool, aux: bool, after: list | tuple = ()) -> list[None]:
        """The same arithmetic as the collective: each group's chunks start at home, visit every other group, end at home."""
        grps, n = self.groups, self.num_groups
        if model:
            blocks = [g.ring_start() for g in grps]
            for o in range(n):
                for h in range(1, n + 1):  # the groups after o in ring order, then o itself
                    blocks[o] = grps[(o + h) % n].ring_add(blocks[o], o)
            full = np.concatenate(blocks)
            for g in grps:
                g.ring_finish(full)
        if aux:
            total = sum(g.aux_partial() for g in grps)
            for g in grps:
                g.apply_aux(total)
        return [None] * n
