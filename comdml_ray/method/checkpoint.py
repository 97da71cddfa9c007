"""The agents' side of checkpoints: what a group saves and restores; mixed into AgentGroup.

Owns
- `AgentSnapshot`: everything that makes agent k's next round what it would have been
  had the run never stopped: its model (parameters and BatchNorm statistics as one flat
  float32 vector, plus the non-floating entries such as BatchNorm's batch counters),
  its full-model optimizer (SGD momentum), its torch Generator (the batch order of
  every later round), ComDML's speed estimate, aux heads and one prefix optimizer per
  split it has offloaded at, and, for the event-driven baselines, the parameters saved
  at the start of a step that a neighbour's average interrupted (AD-PSGD);
- `GroupSnapshot`: the snapshots of one group's agents, the process's global torch RNG
  (agent set-up and aux heads are seeded explicitly; kept so a restore is complete),
  and, when every agent holds the same model (`RunConfig.one_model`: after an exact
  all-reduce), that model once instead of once per agent;
- `Checkpointing`: the group methods `state_dict` / `load_state_dict` (in memory, for
  tests and `backend.LocalBackend`); `checkpoint_files` / `restore_files`, the group's
  files as bytes (name -> bytes), which the runtime carries through Ray's object store
  to a writer on the driver's node when the output folder is a local path (a path on
  the driver's node, absent on the others); and `save_state` / `load_state`, which
  write and read those files in a checkpoint folder (`storage.OutDir`) directly from
  the actor, for a folder every node reaches (s3://, gs://, ...).  Weights never pass
  through the driver.
Files are `torch.save`d plain dicts and tensors, read back with `weights_only=True`.
Numpy's global RNG is not used by any agent (every draw has its own seeded Generator).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import time
from dataclasses import dataclass

import torch

from comdml_ray.storage import OutDir

SHARED_MODEL_FILE = "model.pt"


def group_file(g: int) -> str:
    return f"group-{g:03d}.pt"


@dataclass
class AgentSnapshot:
    agent: int
    floats: torch.Tensor | None  # (P,) flat float32 model; None when the group's shared model holds it
    buffers: dict[str, torch.Tensor]  # non-floating model entries (BatchNorm num_batches_tracked)
    optim: dict  # full-model optimizer state_dict
    gen: torch.Tensor  # the agent's torch.Generator state (uint8)
    sec_estimate: float | None
    aux: dict[int, dict[str, torch.Tensor]]  # split m -> aux head state_dict
    prefix_optim: dict[int, dict]  # split m -> prefix(m) + aux(m) optimizer state_dict
    step_start: torch.Tensor | None = None  # (P,) event-driven: parameters at the running step's start
    rounds_trained: float = 0  # the learning-rate schedule's clock in epochs (`agent.Agent.next_round`, `train_step`)
    stream: list[torch.Tensor] | None = None  # event-driven, --step-batches: index batches drawn but not yet trained


@dataclass
class GroupSnapshot:
    group: int
    agents: dict[int, AgentSnapshot]
    torch_rng: torch.Tensor
    shared_model: torch.Tensor | None = None  # (P,) the one model every agent holds (one_model runs)


@dataclass(frozen=True)
class SavedPart:
    """What a group reports after writing its part of a checkpoint (a few bytes to the driver)."""

    group: int
    agents: tuple[int, ...]
    file: str
    nbytes: int
    seconds: float


def _shallow(obj) -> dict:
    # dataclasses.asdict would deep-copy every tensor.
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def encode(snap: GroupSnapshot) -> bytes:
    d = _shallow(snap)
    d["agents"] = {k: _shallow(a) for k, a in snap.agents.items()}
    buf = io.BytesIO()
    torch.save(d, buf)
    return buf.getvalue()


def decode(data: bytes) -> GroupSnapshot:
    d = torch.load(io.BytesIO(data), weights_only=True)
    d["agents"] = {int(k): AgentSnapshot(**a) for k, a in d["agents"].items()}
    return GroupSnapshot(**d)


class Checkpointing:
    """Methods AgentGroup gains for checkpoints (see the module docstring)."""

    def state_dict(self, shared: bool) -> GroupSnapshot:
        """This group's agents as they are now; shared: their (identical) model is stored once, by group 0."""
        starts = self.__dict__.get("_async_starts", {})
        snaps = {}
        for k, a in self.agents.items():
            snaps[k] = AgentSnapshot(
                agent=k,
                floats=None if shared else torch.from_numpy(a.flat().copy()),
                buffers=a.int_entries(),
                optim=copy.deepcopy(a.full_optim.state_dict()),  # deep copies: training goes on after a snapshot
                gen=a.gen.get_state(),
                sec_estimate=None if a.sec_estimate is None else float(a.sec_estimate),
                aux={m: copy.deepcopy(head.state_dict()) for m, head in a.aux.items()},
                prefix_optim={m: copy.deepcopy(opt.state_dict()) for m, opt in a.prefix_optim.items()},
                step_start=torch.from_numpy(starts[k]) if k in starts else None,
                rounds_trained=a.rounds_trained,
                stream=[b.clone() for b in a.__dict__["_stream"]] if "_stream" in a.__dict__ else None,
            )
        model = None
        if shared and self.group_id == 0:
            model = torch.from_numpy(next(iter(self.agents.values())).flat().copy())
        return GroupSnapshot(self.group_id, snaps, torch.get_rng_state(), model)

    def load_state_dict(self, snap: GroupSnapshot, shared_model: torch.Tensor | None = None) -> None:
        """Put this group's agents back to their snapshot (agents of other groups in `snap` are skipped)."""
        starts = {}
        for k, a in self.agents.items():
            s = snap.agents.get(k)
            if s is None:
                continue
            floats = s.floats if s.floats is not None else shared_model
            if floats is None:
                raise ValueError(f"checkpoint of agent {k} has no model: the shared model file is missing")
            a.set_weights(floats.numpy())  # one vector for every agent of a shared model
            a.int_state = a.int_entries() | {n: t.detach().clone() for n, t in s.buffers.items()}
            a.full_optim.load_state_dict(s.optim)
            a.gen.set_state(s.gen)
            a.sec_estimate = s.sec_estimate
            a.rounds_trained = s.rounds_trained
            a.aux, a.prefix_optim = {}, {}
            for m, head in s.aux.items():
                a.aux_head(int(m)).load_state_dict(head)  # (re)creates the head, then its weights
            for m, opt in s.prefix_optim.items():
                a.prefix_optimizer(int(m)).load_state_dict(opt)
            if s.step_start is not None:
                starts[k] = s.step_start.numpy().copy()
            if s.stream is not None:
                a._stream = [b.clone() for b in s.stream]
            else:
                a.__dict__.pop("_stream", None)
            a.park()
        self._async_starts = starts
        self.aux_used = {}
        torch.set_rng_state(snap.torch_rng)  # last: building aux heads above reseeds the global RNG

    # ------------------------------------------------------------------ files
    def checkpoint_files(self, shared: bool) -> tuple[SavedPart, dict[str, bytes]]:
        """This group's part of a checkpoint as files (name -> bytes): its group file and, for group 0 of a one-model run, the model."""
        t0 = time.perf_counter()
        snap = self.state_dict(shared)
        files: dict[str, bytes] = {}
        if snap.shared_model is not None:
            files[SHARED_MODEL_FILE] = encode(GroupSnapshot(-1, {}, snap.torch_rng, snap.shared_model))
            snap.shared_model = None
        files[group_file(self.group_id)] = encode(snap)
        nbytes = sum(len(b) for b in files.values())
        return SavedPart(self.group_id, tuple(self.ids), group_file(self.group_id), nbytes, time.perf_counter() - t0), files

    def restore_files(self, shared: bool, *files: dict[str, bytes]) -> None:
        """Restore this group's agents from checkpoint files (name -> bytes): the group files that hold them, and the model when shared."""
        merged_files = {k: v for d in files for k, v in d.items()}
        model = None
        if shared:
            if SHARED_MODEL_FILE not in merged_files:
                raise ValueError(f"checkpoint of group {self.group_id} lacks {SHARED_MODEL_FILE}, the model every agent shares")
            model = decode(merged_files[SHARED_MODEL_FILE]).shared_model
        merged: dict[int, AgentSnapshot] = {}
        rng = None
        for name, data in sorted(merged_files.items()):
            if name == SHARED_MODEL_FILE:
                continue
            snap = decode(data)
            merged.update({k: s for k, s in snap.agents.items() if k in self.agents})
            rng = snap.torch_rng if rng is None or snap.group == self.group_id else rng
        missing = sorted(set(self.agents) - set(merged))
        if missing:
            raise ValueError(f"the checkpoint files {sorted(merged_files)} hold no state for agents {missing}")
        self.load_state_dict(GroupSnapshot(self.group_id, merged, rng), model)

    def save_state(self, folder: OutDir, shared: bool) -> SavedPart:
        """Write this group's checkpoint files into `folder` from here (a folder every node reaches)."""
        t0 = time.perf_counter()
        part, files = self.checkpoint_files(shared)
        for name, data in files.items():
            folder.write_bytes(name, data)
        return dataclasses.replace(part, seconds=time.perf_counter() - t0)

    def load_state(self, folder: OutDir, files: list[str], shared: bool) -> None:
        """Restore this group's agents from the group files in `folder` that hold them (one when the layout is unchanged)."""
        names = [*files, *([SHARED_MODEL_FILE] if shared else [])]
        try:
            self.restore_files(shared, {name: folder.read_bytes(name) for name in names})
        except ValueError as e:
            raise ValueError(f"checkpoint {folder.uri}: {e}") from None
