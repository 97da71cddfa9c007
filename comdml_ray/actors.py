"""The Ray actor that hosts agents, its object-store transport, and its dashboard metrics.

Owns `RayStore` (put/get/prefetch on Ray's object store: numpy arrays travel
zero-copy), `AgentHost` (an `AgentGroup` living in an actor process: picks its
device from the GPU ids Ray assigned, caps its share of a shared GPU, limits torch
threads to its CPUs) and `AgentMetrics` (the `ray.util.metrics` gauges and counters,
tagged by agent, that the Ray dashboard shows).  All agent logic lives in
`comdml_ray.agent`; this module only adapts it to Ray.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray.util import metrics

from comdml_ray.agent import AgentGroup, AgentInfo
from comdml_ray.config import RunConfig
from comdml_ray.telemetry import ActorTelemetry

METRIC_NAMES = (
    "comdml_round",
    "comdml_round_virtual_time_s",
    "comdml_round_wall_time_s",
    "comdml_bytes_sent_total",
    "comdml_bytes_offloaded_total",
    "comdml_partner",
    "comdml_split",
    "comdml_train_loss",
    "comdml_test_accuracy",
)


class RayStore:
    """Transport through Ray's object store."""

    def put(self, obj: Any) -> ray.ObjectRef:
        return ray.put(obj)

    def get(self, refs: Any) -> Any:
        return ray.get(refs)

    def prefetch(self, refs: list[ray.ObjectRef]) -> None:
        # Starts pulling the objects to this node without blocking: transfer overlaps compute.
        ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=True)


class AgentMetrics:
    """Per-agent metrics exported to the dashboard (Prometheus names in METRIC_NAMES)."""

    def __init__(self) -> None:
        tags = ("agent",)
        self.round = metrics.Gauge("comdml_round", "Last finished round", tag_keys=tags)
        self.virtual = metrics.Gauge("comdml_round_virtual_time_s", "Virtual finish time of the agent in its last round (s)", tag_keys=tags)
        self.wall = metrics.Gauge("comdml_round_wall_time_s", "Wall time of the last round (s)", tag_keys=tags)
        self.sent = metrics.Counter("comdml_bytes_sent_total", "Bytes the agent sent (weights and activations)", tag_keys=tags)
        self.offloaded = metrics.Counter("comdml_bytes_offloaded_total", "Bytes of activations the agent offloaded", tag_keys=tags)
        self.partner = metrics.Gauge("comdml_partner", "Helper the agent offloaded to in its last round (-1 none)", tag_keys=tags)
        self.split = metrics.Gauge("comdml_split", "Split point used in the last round (-1 none)", tag_keys=tags)
        self.loss = metrics.Gauge("comdml_train_loss", "Mean training loss of the last round", tag_keys=tags)
        self.accuracy = metrics.Gauge("comdml_test_accuracy", "Test accuracy of the averaged model (run level)")

    def record(self, rows: list[dict]) -> None:
        for r in rows:
            tags = {"agent": f"{r['agent']:03d}"}
            self.round.set(r["round"], tags)
            self.virtual.set(r["virtual_finish_s"], tags)
            self.wall.set(r["wall_time_s"], tags)
            if r["bytes_sent"] > 0:
                self.sent.inc(r["bytes_sent"], tags)
            if r["bytes_offloaded"] > 0:
                self.offloaded.inc(r["bytes_offloaded"], tags)
            self.partner.set(r["partner"], tags)
            self.split.set(r["split"], tags)
            self.loss.set(r["train_loss"], tags)

    def record_accuracy(self, acc: float) -> None:
        self.accuracy.set(acc)


class AgentHost(AgentGroup):
    """An AgentGroup inside a Ray actor: device from Ray's GPU ids, CPU threads from its share.

    The constructor only picks the device; `setup()` loads data and builds the agents,
    so a user-caused fault there (a missing dataset) reaches the driver as an exception
    it can print in one sentence (a failing actor constructor only says the actor died).
    """

    def __init__(self, group_id: int, agent_ids: list[int], cfg: RunConfig):
        import torch

        torch.set_num_threads(max(1, int(cfg.cpus_per_agent)))
        gpu_ids = ray.get_gpu_ids()
        device = "cpu"
        if gpu_ids and torch.cuda.is_available():
            device = "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU(s)
            if cfg.gpus_per_agent < 1:
                # Agents sharing a GPU each keep to their share of its memory.
                torch.cuda.set_per_process_memory_fraction(cfg.gpus_per_agent, 0)
        self.gpu_ids = [str(g) for g in gpu_ids]
        self._args = (group_id, list(agent_ids), cfg)
        self.device_name = device

    def setup(self) -> list[AgentInfo]:
        """Load the data, build the agents; returns their descriptions."""
        group_id, agent_ids, cfg = self._args
        AgentGroup.__init__(self, group_id, agent_ids, cfg, RayStore(), self.device_name)
        self.metrics = AgentMetrics()
        self.telemetry = ActorTelemetry(agent_ids, self.device_name, self.gpu_ids)  # log lines + extra metrics (issue 16)
        return self.describe()

    def __repr__(self) -> str:
        ids = self._args[1]
        who = f"agent {ids[0]:03d}" if len(ids) == 1 else f"agents {ids[0]:03d}-{ids[-1]:03d}"
        if not hasattr(self, "profiles"):
            return f"AgentHost({who} on {self.device_name}, not set up)"
        extra = "" if len(ids) == 1 else f" (+{len(ids) - 1} more)"
        return f"AgentHost({who} on {self.device_name}, {self.profiles[ids[0]]!r}{extra})"

    def placement(self) -> dict:
        """Where this actor runs: node id, pid, device and GPU ids (for tests and the summary)."""
        ctx = ray.get_runtime_context()
        return {"group": self._args[0], "node_id": ctx.get_node_id(), "pid": os.getpid(), "device": self.device_name, "gpu_ids": self.gpu_ids}

    def record_metrics(self, rows: list[dict], accuracy: float | None) -> None:
        self.metrics.record(rows)
        if accuracy is not None:
            self.metrics.record_accuracy(accuracy)
        self.telemetry.record(rows, accuracy)  # one INFO line per round, WARNING on a non-finite loss (issue 16)


AgentHostActor = ray.remote(AgentHost)
