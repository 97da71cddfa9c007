"""The wall-clock round (`--clock wall`): one agent per actor, offloader and helper overlapped, peer to peer; mixed into AgentGroup.

Owns what an agent does in a round timed by the wall clock (docs/method.md §3.7):
- `wall_round(r)`, one call per actor per round, no driver barrier inside:
  * an offloader i ships its suffix weights to its helper j, trains prefix + aux head
    and hands every chunk of activations, as soon as it is made, to its sending thread,
    which puts it into the object store and sends the ref straight to j (`Transfer`,
    through the host's `send`, never the driver): training never waits on a send; it
    then waits for j's trained suffix and loads it;
  * a helper j trains, one batch at a time, its offloaders' suffix batches whenever a
    chunk has arrived and its own batches otherwise: it waits only when it has no
    batch of its own left and no chunk is usable yet.  When an offloader's last batch
    is done it ships the trained suffix back at once;
  * anyone else trains its own model.
  The call returns when this agent's model is whole (an offloader: suffix loaded; a
  helper: its own and its offloaders' work done); the averaging then runs.
- the receiving side, a fetching thread: every message is fetched (`store.get`, the
  transfer itself on real links) as soon as its ref arrives, while the training
  thread computes; the training thread only takes payloads already here (prefetch).
  A message is usable at the moment it reached this node plus the sender's emulated
  link delay (`--emulate`), or once fetched, whichever is later;
- clocks: every time is `emulation.now()`, this node's own clock; a message carries a
  delay (a duration), never a time stamp, and `PhaseReport.whole_s` is measured from
  this call's start on this node (the driver adds its own planning seconds);
- `warm_up()`: round 0's speed estimate, a few timed batches on a throwaway copy;
- online profiling: after each round the agent's device seconds per full-model batch
  (`Pacer.work_s`; prefix and suffix batches counted at rho_s, rho_f) and the observed throughput of
  its inbound links update its estimates by an EWMA (`OBSERVED_EMA`), which
  `publish_states` announces for the next plan;
- `averaging_pad_s()`: under --emulate, the seconds the averaging step lasts for this
  agent (its aux-head ring, then the model ring), as the virtual clock charges them.
Compute is paced (`--emulate` or `--emulate compute`) and transfers delayed (`--emulate`) by `emulation`.  The host
supplies `send(agent, Transfer)` and the queue `inbox_q` its inbox method fills.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from comdml_ray.learning.smashed import to_device
from comdml_ray.learning.training import (
    SuffixTrainer,
    TrainStats,
    flatten,
    make_sgd,
    minibatches,
    on_device,
    train_full,
    train_prefix,
    unflatten_into,
)
from comdml_ray.method.messages import PhaseReport, Transfer
from comdml_ray.timing.clock import AgentWork, aux_exchange
from comdml_ray.timing.emulation import LinkMeter, Links, Pacer, now, wait_until

OBSERVED_EMA = 0.7  # weight of the newest observation in an agent's estimates (speed, links) under the wall clock
WARMUP_BATCHES = 3  # timed batches of round 0's warm-up (after one untimed)
WAIT_LIMIT_S = 600.0  # a peer silent this long is gone: fail instead of hanging


@dataclass
class _Help:
    """A helper's state for one offloader in this round."""

    offloader: int
    split: int = -1
    row: int = -1
    total: int = -1  # batches the offloader will send (from its suffix message)
    holder: torch.nn.Module | None = None
    trainer: SuffixTrainer | None = None
    ready: deque = field(default_factory=deque)  # received, not yet trained (z, y) pairs, on the device
    trained: int = 0

    @property
    def finished(self) -> bool:
        return self.trainer is not None and self.trained == self.total


class WallSteps:
    """Methods AgentGroup gains for wall-clock rounds (see the module docstring)."""

    def _only_agent(self) -> int:
        if len(self.ids) != 1:
            raise RuntimeError("the wall-clock round runs one agent per actor (--agents-per-actor 1)")
        return self.ids[0]

    def warm_up(self) -> float:
        """Round 0's estimate: seconds per batch of a few full-model batches on a throwaway copy (paced under --emulate)."""
        k = self._only_agent()
        a = self.agents[k]
        model = a.blank_model()
        model.load_state_dict(a.model.state_dict())
        opt = make_sgd(model.parameters(), a.opt)
        idx = minibatches(a.num_samples, self.cfg.batch_size, 1, torch.Generator().manual_seed(self.cfg.seed + 31 * k + 7))
        train_full(model, a.x, a.y, idx[:1], opt)  # first batch: allocator and kernel warm-up, not timed
        pacer, c = Pacer(self.cfg.emulate_compute), float(self.setting.sec_per_batch(0)[k])
        timed = on_device(idx[1 : 1 + WARMUP_BATCHES], a.x.device)
        self._settle()
        pacer.resume()
        for b in timed:
            train_full(model, a.x, a.y, [b], opt)
            self._settle()
            pacer.done(c)
        a.sec_estimate = pacer.work_s / max(len(timed), 1)
        return a.sec_estimate

    def wall_round(self, r: int) -> PhaseReport:
        """This agent's whole round on the wall clock; returns when its model is whole (`whole_s`: from this call's start)."""
        start = now()
        k = self._only_agent()
        a = self.agents[k]
        self._start_threads()
        rep, pacer = PhaseReport(), Pacer(self.cfg.emulate_compute)
        self._pending: list = []  # heap of (usable at, n, Transfer, payload, delivery began) fetched, not yet usable
        self._meter = LinkMeter()
        c = float(self.setting.sec_per_batch(r)[k])
        plan = self.plan if self.cfg.algorithm == "comdml" else None
        pacer.resume()
        if plan is not None and plan.partner[k] >= 0:
            equiv = self._stream_offload(r, k, pacer, c, rep)
        else:
            helped = [] if plan is None else [int(i) for i in np.flatnonzero(plan.partner == k)]
            equiv = self._own_and_help(r, k, helped, pacer, c, rep)
        self._send_q.join()  # every message of this round handed to Ray before the model counts as whole
        self._raise_send_error()
        rep.whole_s[k] = now() - start
        observed = pacer.work_s / max(equiv, 1e-9)
        rep.observed_spb[k] = observed
        a.sec_estimate = observed if a.sec_estimate is None else OBSERVED_EMA * observed + (1 - OBSERVED_EMA) * a.sec_estimate
        links = a.link_estimate
        for src, bps in self._meter.throughput().items():
            links[src] = bps if src not in links else OBSERVED_EMA * bps + (1 - OBSERVED_EMA) * links[src]
        return rep

    def _settle(self) -> None:
        """Wait for the device's queued work, so the pacer times the compute itself (a no-op on the CPU).

        The wall clock measures every batch (its speed estimate, and under --emulate its
        pacing): on a GPU that needs the batch done, not just launched.  Only this round
        pays the synchronisation; the virtual-clock rounds never wait.
        """
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ offloader
    def _stream_offload(self, r: int, k: int, pacer: Pacer, c: float, rep: PhaseReport) -> float:
        """Offloader: suffix out, prefix trained chunk by chunk with every chunk sent as made, suffix back in."""
        a, plan, prof = self.agents[k], self.plan, self.split_profile
        j, row = int(plan.partner[k]), int(plan.split[k])
        m, rho = int(prof.split_ids[row]), float(prof.rho_s[row])
        links = self._links(k)
        batches = a.round_batches()
        suffix = flatten(a.model, a.model.suffix_keys(m))
        self._ship(Transfer("suffix", r, k, k, m, [], suffix.nbytes, batches=len(batches)), j, suffix, links)
        stats, act, done = TrainStats(), 0, 0
        for chunk in train_prefix(
            a.model.prefix(m), a.aux_head(m), a.x, a.y, batches, a.prefix_optimizer(m), self.cfg.chunk_batches, stats, a.encoder
        ):
            self._settle()
            pacer.done((stats.batches - done) * rho * c)
            done = stats.batches
            nbytes = sum(b.nbytes for b in chunk)
            act += nbytes
            self._ship(Transfer("chunk", r, k, k, m, [], nbytes, batches=len(chunk), last=done == len(batches)), j, chunk, links)
        self.aux_used[k] = m
        _, back = self._next_usable(lambda t: t.kind == "back", f"agent {j}'s trained suffix")
        unflatten_into(a.model, back, a.model.suffix_keys(m))
        rep.work[k] = AgentWork(k, prefix_batches=stats.batches, partner=j, split_row=row, bytes_offloaded=act)
        rep.add(k, stats.loss_sum, stats.batches, suffix.nbytes + act)
        return stats.batches * rho

    # ------------------------------------------------------------------ helper (or solo)
    def _own_and_help(self, r: int, k: int, helped: list[int], pacer: Pacer, c: float, rep: PhaseReport) -> float:
        """Own batches and offloaders' suffix batches interleaved: a usable suffix batch first, else an own one, else wait."""
        a = self.agents[k]
        own, pos, equiv = on_device(a.round_batches(), a.x.device), 0, 0.0
        jobs = {i: _Help(i) for i in helped}
        work = rep.work.setdefault(k, AgentWork(k))
        links = self._links(k) if helped else None
        own_stats = TrainStats()
        while pos < len(own) or not all(h.finished for h in jobs.values()):
            self._collect(0.0)
            self._activate_usable(k, jobs)
            h = next((h for h in jobs.values() if h.trainer is not None and h.ready), None)
            if h is not None:
                h.trainer.step_on_device(*h.ready.popleft())
                h.trained += 1
                rho = float(self.split_profile.rho_f[h.row])
                self._settle()
                pacer.done(rho * c)
                equiv += rho
                if h.finished:
                    self._return_suffix(r, k, h, links, rep, work)
            elif pos < len(own):
                own_stats.merge(train_full(a.model, a.x, a.y, [own[pos]], a.full_optim))
                pos += 1
                self._settle()
                pacer.done(c)
                equiv += 1.0
            else:
                self._wait_for_pending(f"chunks from agents {sorted(i for i, h in jobs.items() if not h.finished)}")
                pacer.resume()
        work.own_batches = own_stats.batches
        rep.add(k, own_stats.loss_sum, own_stats.batches, 0)
        return equiv

    def _activate_usable(self, k: int, jobs: dict[int, _Help]) -> None:
        """Open every fetched message whose arrival (emulated or real) has passed."""
        while self._pending and self._pending[0][0] <= now():
            usable, _, t, value, began = heapq.heappop(self._pending)
            h = jobs[t.offloader]
            self._meter.delivered(t.src, t.nbytes, began, usable)
            if t.kind == "suffix":
                a = self.agents[k]
                h.split, h.total = t.split, t.batches
                h.row = list(self.split_profile.split_ids).index(t.split)
                h.holder = a.blank_model()
                unflatten_into(h.holder, value, h.holder.suffix_keys(t.split))
                h.trainer = SuffixTrainer(h.holder.suffix(t.split), a.opt, self.device)
            else:
                h.ready.extend(to_device(value, self.device))  # (z, y) on the device, the chunk copied once

    def _return_suffix(self, r: int, k: int, h: _Help, links: Links, rep: PhaseReport, work: AgentWork) -> None:
        flat = flatten(h.holder, h.holder.suffix_keys(h.split))
        self._ship(Transfer("back", r, k, h.offloader, h.split, [], flat.nbytes), h.offloader, flat, links)
        work.suffix_batches[h.offloader] = h.trainer.stats.batches
        rep.add(k, h.trainer.stats.loss_sum, h.trainer.stats.batches, flat.nbytes)

    # ------------------------------------------------------------------ messages
    def _links(self, k: int) -> Links:
        st = self.setting
        return Links(
            self.cfg.emulate_links, {j: float(st.link_bw[k, j]) for j in range(st.n)}, {j: float(st.link_lat[k, j]) for j in range(st.n)}
        )

    def _start_threads(self) -> None:
        """This process's sending and fetching threads (once): transfers run beside training, never on its thread."""
        if getattr(self, "_send_q", None) is not None:
            return
        self._send_q: queue.Queue = queue.Queue()
        self._ready_q: queue.Queue = queue.Queue()
        self._send_errors: list[BaseException] = []
        threading.Thread(target=self._send_loop, name="wall-send", daemon=True).start()
        threading.Thread(target=self._fetch_loop, name="wall-fetch", daemon=True).start()

    def _ship(self, t: Transfer, dst: int, payload, links: Links) -> None:
        """Hand payload to the sending thread: it goes into the store and its ref to agent dst, with dst's emulated link delay."""
        self._raise_send_error()
        self._send_q.put((t, dst, payload, links))

    def _send_loop(self) -> None:
        while True:
            t, dst, payload, links = self._send_q.get()
            try:
                t.box = [self.store.put(payload)]
                t.delay_s = links.send(dst, t.nbytes)  # counted from now, on this node's clock
                self.send(dst, t)
            except Exception as e:  # raised on the training thread at its next send or at the round's end
                self._send_errors.append(e)
            finally:
                self._send_q.task_done()

    def _raise_send_error(self) -> None:
        if self._send_errors:
            raise self._send_errors.pop(0)

    def _fetch_loop(self) -> None:
        """Fetch every message's payload as soon as its ref arrives (`inbox_q`, stamped on arrival with this node's clock).

        Usable at the arrival plus the sender's emulated link delay, or once fetched if
        later; the link's delivery began at the arrival (emulated) or when the fetch
        started (real: the fetch is the transfer).  A failed fetch is raised on the
        training thread.
        """
        while True:
            t = self.inbox_q.get()
            began = now()
            try:
                value, err = self.store.get(t.box[0]), None
            except Exception as e:  # a lost sender's object: the training thread raises it
                value, err = None, e
            got = now()
            began = t.arrived if self.cfg.emulate_links else began
            self._ready_q.put((max(t.arrived + t.delay_s, got), t, value, began, err))

    def _collect(self, timeout: float) -> None:
        """Move fetched messages into the pending heap (waiting at most timeout seconds for the first)."""
        counter = getattr(self, "_counter", None) or itertools.count()
        self._counter = counter
        try:
            item = self._ready_q.get(timeout=timeout) if timeout > 0 else self._ready_q.get_nowait()
            while True:
                usable, t, value, began, err = item
                if err is not None:
                    raise err
                heapq.heappush(self._pending, (usable, next(counter), t, value, began))
                item = self._ready_q.get_nowait()
        except queue.Empty:
            pass

    def _wait_for_pending(self, what: str) -> None:
        """Block until the earliest pending message is usable (a new message may come first and be earlier)."""
        deadline = now() + WAIT_LIMIT_S
        while True:
            t = now()
            if self._pending and self._pending[0][0] <= t:
                return
            if not self._pending and t > deadline:
                raise TimeoutError(f"agent {self.ids[0]} waited {WAIT_LIMIT_S:.0f} s for {what}; a peer stopped.")
            self._collect(max(self._pending[0][0] - t, 1e-3) if self._pending else 5.0)

    def _next_usable(self, match, what: str) -> tuple[Transfer, object]:
        """Wait for the message `match` accepts and for its arrival; return it and its payload."""
        while True:
            for i, (usable, _, t, value, _began) in enumerate(self._pending):
                if match(t):
                    self._pending.pop(i)
                    heapq.heapify(self._pending)
                    wait_until(usable)
                    return t, value
            self._collect(0.0)
            if not any(match(p[2]) for p in self._pending):
                self._wait_for_pending(what)

    def averaging_pad_s(self) -> float:
        """Seconds the averaging step lasts for this agent under --emulate: its aux-head ring, then the model ring."""
        k, st = self.ids[0], self.setting
        aux = 0.0
        if self.cfg.algorithm == "comdml" and self.plan is not None:
            secs, _ = aux_exchange(
                np.asarray(self.plan.partner),
                np.asarray(self.plan.split),
                4 * np.array(self.aux_sizes(), dtype=float),
                st.agent_bw,
                st.agent_lat,
            )
            aux = float(secs[k])
        return aux + float(st.exchange_s[k])
