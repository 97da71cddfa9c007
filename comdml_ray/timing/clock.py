"""The virtual clock of synchronous rounds (docs/method.md §3.6).

Owns `AgentWork` (what one agent actually did in a round: batches trained on each
side, bytes of activations sent, its partner) and `round_finish_times`, which turns
that work into each agent's virtual finish time from its profile, never from the
plan; plus `exchange_seconds`, the time of the model averaging step.  The run
reports these beside the real wall time and never mixes the two.

Time model per round (c_k = base seconds per batch * slowdown_k):
- an agent training alone:  own_batches * c_k
- an offloader i of split m with helper j:
      slow side   = prefix_batches * rho_s[m] * c_i
      transfer    = bytes_offloaded / nu_ij + l_ij
      helper side = (j's own batches + suffix batches of all its offloaders * rho_f) * c_j,
                    and with a shared inbound link at least sum(bytes in) / nu_in(j)
  the three overlap (the local loss removes the backward wait); i's model is whole
  when the helper is done and has sent the suffix back (suffix_bytes / nu_ij + l_ij):
      finish_i = max(slow side, transfer, helper side + return of the suffix)
- an offloader then adds its split group's aux-head averaging (`aux_exchange`);
- every agent then adds the model exchange of the averaging step.
Not timed: the suffix weights i sends j at the round's start (counted in bytes_sent).
They travel while j trains its own batches, which take seconds where the suffix
(< 0.1 MB for the default CNN, 2.4 MB for ResNet-56) takes milliseconds to a quarter
second, so with the presets they set no finish time. The solvers' time model
(docs/method.md §3.4) leaves out both suffix trips; the return trip is why the simulated
finish is 1.0002-1.0007x the predicted one (benchmarks/README.md).
Round time = max over agents (a barrier); training time = the sum of round times.
No torch, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class AgentWork:
    agent: int
    own_batches: int = 0  # full-model batches on its own data
    prefix_batches: int = 0  # batches of prefix+aux trained while offloading
    partner: int = -1  # the helper this agent offloaded to, -1 if none
    split_row: int = -1  # row of the split table used, -1 if none
    bytes_offloaded: int = 0  # activations + labels this agent put in the object store
    suffix_batches: dict[int, int] = field(default_factory=dict)  # as a helper: offloader -> batches trained


def exchange_seconds(
    aggregation: str, nbrs: list[list[int]], bw: np.ndarray, lat: np.ndarray, model_bytes: int, step_s: float = 0.0
) -> np.ndarray:
    """Seconds each agent spends in the averaging step, (N,).

    allreduce: 2(N-1) synchronous ring steps, each moving model_bytes/N over every
      ring link, so each step lasts as long as the slowest link takes (same for all).
    gossip: an agent sends its model to each neighbour, one after the other, each over
      that link (docs/method.md §3.5: |w| / nu to each neighbour): sum over neighbours j of
      model_bytes / min(bw_i, bw_j) + lat_i + lat_j.
    `bw` and `lat` are the per-agent link figures (bytes/s, seconds); a link runs at its
    slower end's bandwidth and pays both ends' latency (`profiles.link_matrices`).
    `step_s`: what every step (ring hop, or send to a neighbour) costs beyond its bytes and
    latencies on a real cluster (`--collective-step-ms`, measured by a probe; 0 by default).
    """
    n = len(nbrs)
    if n == 1:
        return np.zeros(1)
    if aggregation == "allreduce":
        nxt = (np.arange(n) + 1) % n
        step = np.max((model_bytes / n) / np.minimum(bw, bw[nxt]) + lat + lat[nxt]) + step_s
        return np.full(n, 2 * (n - 1) * step)
    return np.array([sum(model_bytes / min(bw[i], bw[j]) + lat[i] + lat[j] + step_s for j in nb) for i, nb in enumerate(nbrs)])


def aux_exchange(
    partner: np.ndarray, split_row: np.ndarray, aux_bytes: np.ndarray, bw: np.ndarray, lat: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ComDML's aux-head averaging: (seconds, bytes sent) per agent, (N,) each.

    The offloaders that used split row s this round average their aux heads among
    themselves: a ring all-reduce over that split group (members in id order), timed
    as `exchange_seconds` times it for the whole fleet, with aux_bytes[s] in place of
    the model.  It follows the offloader's training and precedes the model exchange.
    """
    n = len(partner)
    secs, sent = np.zeros(n), np.zeros(n)
    for s in np.unique(split_row[partner >= 0]):
        members = np.flatnonzero((partner >= 0) & (split_row == s))
        p = len(members)
        if p < 2:
            continue
        secs[members] = exchange_seconds("allreduce", [[]] * p, bw[members], lat[members], int(aux_bytes[s]))[0]
        sent[members] = 2 * (p - 1) * aux_bytes[s] / p
    return secs, sent


def round_finish_times(
    work: list[AgentWork],
    sec_per_batch: np.ndarray,
    rho_s: np.ndarray,
    rho_f: np.ndarray,
    suffix_bytes: np.ndarray,
    link_bw: np.ndarray,
    link_lat: np.ndarray,
    inbound_bw: np.ndarray,
    exchange_s: np.ndarray,
) -> np.ndarray:
    """Each agent's virtual finish time (seconds from the round's start), from what it did."""
    n = len(work)
    c = sec_per_batch
    compute = np.zeros(n)
    bytes_in = np.zeros(n)
    for w in work:
        compute[w.agent] += w.own_batches * c[w.agent]
        for i, b in w.suffix_batches.items():
            compute[w.agent] += b * rho_f[work[i].split_row] * c[w.agent]
            bytes_in[w.agent] += work[i].bytes_offloaded
    helper_done = np.maximum(compute, bytes_in / inbound_bw)
    finish = helper_done.copy()
    for w in work:
        if w.partner >= 0:
            i, j, m = w.agent, w.partner, w.split_row
            slow = w.prefix_batches * rho_s[m] * c[i]
            transfer = w.bytes_offloaded / link_bw[i, j] + link_lat[i, j]
            back = helper_done[j] + suffix_bytes[m] / link_bw[j, i] + link_lat[j, i]
            finish[i] = max(slow, transfer, back)
    return finish + exchange_s
