"""The run's setting in one pure place: who the agents are, how they are linked, what the clock charges.

Owns `Setting`, built once by the driver (`Setting.build`) after the actors have
described their agents and the split profile is known, then shared (one object in
the store) with every agent group and with the event loops of the baselines:
- per agent: samples, batches per round, slowdown, link bandwidth and latency (the
  profile's, times `--link-efficiency` and plus half of `--transfer-latency-ms` per
  link end, so a link i->j pays it once: the link model measured on a real cluster);
- the link matrices (a link i->j runs at its slower end's bandwidth and pays both
  ends' latency), the `--topology` neighbours, the seconds of the averaging step;
- the layout's owner map (agent -> actor) and the evaluated agents;
- `sec_per_batch(r)`: every agent's true seconds per batch in round r (drift included);
- `deadline_batches(r, q)`: local-deadline's round: the deadline (the q-quantile of the
  agents' full-round compute times, from the speeds they observed last round) and the
  batches each agent trains before it at its true speed this round.
No torch, no Ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from comdml_ray.config import RunConfig
from comdml_ray.timing.clock import exchange_seconds
from comdml_ray.timing.profiles import drift_slowdowns, link_matrices, make_profiles
from comdml_ray.timing.topology import neighbours
from solvers import AgentLinks


@dataclass(frozen=True)
class Setting:
    """Everything the clocks and the planners need about the agents, and where each agent lives."""

    n: int
    groups: tuple[tuple[int, ...], ...]  # agent ids hosted by each actor
    num_samples: np.ndarray  # (N,) training samples per agent
    batches: np.ndarray  # (N,) batches of one round (one local step)
    slowdown: np.ndarray  # (N,) profile slowdowns at round 0
    base_sec_per_batch: float
    model_bytes: int
    agent_bw: np.ndarray  # (N,) bytes/s of each agent's own link
    agent_lat: np.ndarray  # (N,) s
    link_bw: AgentLinks | np.ndarray  # (N, N) bytes/s, computed where read (`profiles.link_matrices`)
    link_lat: AgentLinks | np.ndarray  # (N, N) s
    nbrs: list[list[int]]  # the --topology neighbours
    exchange_s: np.ndarray  # (N,) seconds of the averaging step under --aggregation
    eval_ids: list[int]
    drift: float
    drift_prob: float
    seed: int
    step_batches: np.ndarray | None = None  # (N,) minibatches of one asynchronous local step (None: one round's work)
    collective_step_s: float = 0.0  # what each averaging step costs beyond its bytes (`--collective-step-ms`, §3.5)

    @property
    def owner(self) -> dict[int, int]:
        return {k: g for g, ids in enumerate(self.groups) for k in ids}

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    @property
    def shares(self) -> np.ndarray:
        """(N,) each agent's share of the training data: its weight in the exact average."""
        return self.num_samples / self.num_samples.sum()

    def sec_per_batch(self, r: int) -> np.ndarray:
        """Every agent's true seconds per full-model batch in round (or epochs-equivalent) r, (N,)."""
        return self.base_sec_per_batch * drift_slowdowns(self.slowdown, r, self.drift, self.seed, self.drift_prob)

    def deadline_batches(self, r: int, quantile: float) -> tuple[float, np.ndarray]:
        """local-deadline, round r: (deadline in virtual seconds of compute, (N,) batches each agent trains before it).

        The deadline is set before the round from what every agent observed in the last
        one (as ComDML's planner sees it): the `quantile` of the agents' full-round compute
        times.  Each agent then trains, at its true speed this round, the batches that end
        by the deadline: at least one, at most its whole round.
        """
        deadline = float(np.quantile(self.batches * self.sec_per_batch(max(r - 1, 0)), quantile))
        fit = np.floor(deadline / self.sec_per_batch(r) * (1 + 1e-12))
        return deadline, np.clip(fit, 1, self.batches).astype(np.int64)

    def step_seconds(self, k: int, r: int) -> float:
        """Virtual seconds of agent k's asynchronous local step in epochs-equivalent r."""
        b = self.batches[k] if self.step_batches is None else self.step_batches[k]
        return float(b * self.sec_per_batch(r)[k])

    def step_share(self, k: int) -> float:
        """The fraction of one round's work (of agent k's shard) that one asynchronous step is."""
        return 1.0 if self.step_batches is None else float(self.step_batches[k] / self.batches[k])

    def gossip_exchange_s(self) -> np.ndarray:
        return exchange_seconds("gossip", self.nbrs, self.agent_bw, self.agent_lat, self.model_bytes, self.collective_step_s)

    def groups_of(self, agents: list[int]) -> dict[int, list[int]]:
        owner = self.owner
        by: dict[int, list[int]] = {}
        for k in agents:
            by.setdefault(owner[k], []).append(k)
        return by

    @staticmethod
    def build(
        cfg: RunConfig, groups: list[list[int]], num_samples: np.ndarray, batches: np.ndarray, base_sec_per_batch: float, model_bytes: int
    ) -> Setting:
        n = cfg.agents
        profiles = make_profiles(cfg.heterogeneity, n, cfg.seed, cfg.slow_link_share)
        if cfg.link_efficiency != 1.0 or cfg.transfer_latency_s != 0.0:  # the link model measured on a real cluster (§3.3)
            profiles = [
                dataclasses.replace(
                    p, bandwidth_Bps=p.bandwidth_Bps * cfg.link_efficiency, latency_s=p.latency_s + cfg.transfer_latency_s / 2
                )
                for p in profiles
            ]
        bw = np.array([p.bandwidth_Bps for p in profiles])
        lat = np.array([p.latency_s for p in profiles])
        link_bw, link_lat = link_matrices(profiles)
        nbrs = neighbours(cfg.topology, n, cfg.degree, cfg.seed)
        return Setting(
            n=n,
            groups=tuple(tuple(g) for g in groups),
            num_samples=np.asarray(num_samples, dtype=np.int64),
            batches=np.asarray(batches, dtype=float),
            slowdown=np.array([p.slowdown for p in profiles]),
            base_sec_per_batch=float(base_sec_per_batch),
            model_bytes=int(model_bytes),
            agent_bw=bw,
            agent_lat=lat,
            link_bw=link_bw,
            link_lat=link_lat,
            nbrs=nbrs,
            exchange_s=exchange_seconds(cfg.aggregation, nbrs, bw, lat, model_bytes, cfg.collective_step_s),
            eval_ids=cfg.scored_agent_ids(),
            drift=cfg.drift,
            seed=cfg.seed,
            drift_prob=cfg.drift_prob,
            step_batches=np.array([cfg.async_step_batches(int(b)) for b in batches]),
            collective_step_s=cfg.collective_step_s,
        )
