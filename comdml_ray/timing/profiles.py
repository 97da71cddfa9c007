"""Heterogeneity: each agent's compute slowdown and network link (docs/method.md §3.1 and §7.1).

Owns `AgentProfile`, the presets (`paper`, `uniform`, `lognormal[:SIGMA]`, `two-class:SHARE`), loading a CSV,
and `drift_slowdowns`, the seeded model of agents speeding up and slowing down
between rounds (`--drift`).  No torch, no Ray.

Presets
- paper: agent k takes profile k mod 5 of the reference code: slowdown
  [16, 22, 54, 72, 256] / 4 and bandwidth [100, 50, 50, 50, 10] MB/s.
- uniform: every agent slowdown 1, 100 MB/s (no heterogeneity: ComDML forms no pairs).
- lognormal: slowdown = exp(N(0, 0.8)) rescaled so the fastest is 1; bandwidth
  10..100 MB/s log-uniform; seeded.  `lognormal:SIGMA`: the same with spread SIGMA.
- two-class:SHARE: that share of the agents (seeded pick) in the paper's slowest class
  (slowdown 64, 10 MB/s), the rest in its fastest (4, 100 MB/s): the fleet-composition
  table's share of slow agents.
Latency is 1 ms per link end for every preset (project choice: the paper gives none).
`slow_link_share` (DivShare's setting) divides the bandwidth of that share of agents by 5.

CSV format: columns `agent, slowdown, bandwidth_mbps` (MB/s = 1e6 bytes/s) and
optionally `latency_ms`; one row per agent 0..N-1 (fewer rows repeat cyclically).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np

from comdml_ray.config import ConfigError
from solvers import AgentLinks

PAPER_SLOWDOWN = (16 / 4, 22 / 4, 54 / 4, 72 / 4, 256 / 4)
PAPER_BANDWIDTH_MBPS = (100.0, 50.0, 50.0, 50.0, 10.0)
LOGNORMAL_SIGMA = 0.8  # `lognormal`'s spread of log-slowdowns; `lognormal:SIGMA` sets another
DEFAULT_LATENCY_S = 1e-3
MB = 1e6


@dataclass(frozen=True)
class AgentProfile:
    """One agent's speed and link: its seconds per batch are base_cost * slowdown."""

    agent: int
    slowdown: float  # >= 1 typically; multiplies the base per-batch cost
    bandwidth_Bps: float  # bytes per second of its link
    latency_s: float  # one-way latency of its link end

    def __repr__(self) -> str:
        return (
            f"AgentProfile(agent={self.agent}, slowdown={self.slowdown:.2f}x, "
            f"bandwidth={self.bandwidth_Bps / MB:.0f} MB/s, latency={self.latency_s * 1e3:.1f} ms)"
        )


def make_profiles(source: str, num_agents: int, seed: int = 0, slow_link_share: float = 0.0) -> list[AgentProfile]:
    """Profiles for agents 0..N-1 from a preset name or a CSV path."""
    if source == "paper":
        k = np.arange(num_agents) % 5
        slow = np.asarray(PAPER_SLOWDOWN)[k]
        bw = np.asarray(PAPER_BANDWIDTH_MBPS)[k] * MB
        lat = np.full(num_agents, DEFAULT_LATENCY_S)
    elif source == "uniform":
        slow = np.ones(num_agents)
        bw = np.full(num_agents, 100 * MB)
        lat = np.full(num_agents, DEFAULT_LATENCY_S)
    elif source.startswith("two-class:"):
        # A share of the agents in the paper's slowest class (slowdown 64, 10 MB/s), the rest in its fastest (4, 100 MB/s).
        share = float(source.split(":", 1)[1])
        slow_ids = np.random.default_rng(seed + 7_907).choice(num_agents, size=round(share * num_agents), replace=False)
        k = np.zeros(num_agents, dtype=int)
        k[slow_ids] = len(PAPER_SLOWDOWN) - 1
        slow = np.asarray(PAPER_SLOWDOWN)[k]
        bw = np.asarray(PAPER_BANDWIDTH_MBPS)[k] * MB
        lat = np.full(num_agents, DEFAULT_LATENCY_S)
    elif source == "lognormal" or source.startswith("lognormal:"):
        sigma = float(source.split(":", 1)[1]) if ":" in source else LOGNORMAL_SIGMA
        rng = np.random.default_rng(seed + 7_919)
        slow = np.exp(rng.normal(0.0, sigma, num_agents))
        slow = slow / slow.min()
        bw = np.exp(rng.uniform(np.log(10.0), np.log(100.0), num_agents)) * MB
        lat = np.full(num_agents, DEFAULT_LATENCY_S)
    else:
        slow, bw, lat = _read_csv(source, num_agents)
    if slow_link_share > 0:
        rng = np.random.default_rng(seed + 104_729)
        n_slow = round(slow_link_share * num_agents)
        slow_links = rng.choice(num_agents, size=n_slow, replace=False)
        bw = bw.copy()
        bw[slow_links] /= 5.0
    return [AgentProfile(k, float(slow[k]), float(bw[k]), float(lat[k])) for k in range(num_agents)]


def _read_csv(path: str, num_agents: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ConfigError(f"cannot read heterogeneity CSV {path} ({e.strerror}); check the path.") from None
    need = {"slowdown", "bandwidth_mbps"}
    if not rows or not need <= set(rows[0]):
        raise ConfigError(
            f"heterogeneity CSV {path} needs a header with columns agent, slowdown, bandwidth_mbps (latency_ms optional) and one row per agent."
        )
    slow, bw, lat = [], [], []
    for i, row in enumerate(rows):
        try:
            s = float(row["slowdown"])
            b = float(row["bandwidth_mbps"])
            l_ms = float(row.get("latency_ms") or DEFAULT_LATENCY_S * 1e3)
        except (TypeError, ValueError):
            raise ConfigError(
                f"heterogeneity CSV {path} row {i + 2} has a missing or non-numeric value; fill in slowdown and bandwidth_mbps."
            ) from None
        if not (s > 0 and b > 0 and l_ms >= 0 and np.isfinite([s, b, l_ms]).all()):
            raise ConfigError(
                f"heterogeneity CSV {path} row {i + 2} needs a positive slowdown and bandwidth_mbps (and latency_ms >= 0); fix that row."
            )
        slow.append(s)
        bw.append(b * MB)
        lat.append(l_ms / 1e3)
    idx = np.arange(num_agents) % len(rows)
    return np.asarray(slow)[idx], np.asarray(bw)[idx], np.asarray(lat)[idx]


def drift_slowdowns(base: np.ndarray, round_idx: int, sigma: float, seed: int, prob: float = 1.0) -> np.ndarray:
    """Slowdowns in round `round_idx` under `--drift sigma --drift-prob p` (dynamic heterogeneity).

    Model (project choice): in every round after the first, each agent's speed changes
    with probability p (a job starts or ends on its machine) by a log-normal factor,
    log step ~ N(0, sigma^2), and keeps the new speed until its next change:
    log s_k(r) = log s_k(0) + sum_{t<=r} [change_k(t)] N(0, sigma^2), clipped to [1/4, 4]
    times the starting slowdown so an agent drifts but never becomes a different device
    class.  p = 1 is a geometric random walk (a fresh step every round).  Round 0 is the
    preset itself.  Deterministic in (seed, round); the steps of p = 1 are the same draws.
    """
    if sigma <= 0 or round_idx == 0:
        return base.copy()
    rng = np.random.default_rng(seed + 15_485_863)
    steps = rng.normal(0.0, sigma, size=(round_idx, base.size))
    if prob < 1:
        change = np.random.default_rng(seed + 32_452_843).random((round_idx, base.size)) < prob
        steps = np.where(change, steps, 0.0)
    factor = np.clip(np.exp(steps.sum(axis=0)), 0.25, 4.0)
    return base * factor


def link_matrices(profiles: list[AgentProfile]) -> tuple[AgentLinks, AgentLinks]:
    """(bandwidth, latency) of every link i->j: the slower end's bandwidth, both ends' latency.

    Computed where read (`solvers.AgentLinks`: [i, j], rows, np.asarray for the dense
    matrix), never stored: two N x N float64 matrices were 1.6 GB at 10,000 agents, in
    the driver, the object store and every actor's plan.
    """
    bw = np.array([p.bandwidth_Bps for p in profiles])
    lat = np.array([p.latency_s for p in profiles])
    return AgentLinks(bw, "min"), AgentLinks(lat, "add")
