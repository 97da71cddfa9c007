"""`realtime.py --bed`: the virtual clock checked against real shaped links, per round and per link (as root).

    python benchmarks/realtime.py --bed --agents 10 --rounds 10 --comdml-rounds 14 --train-samples 2240 --reference-gflops 5

Brings up a bed (`comdml_ray.testbed`) of one head and one worker node per agent:
node w<g+1> hosts agent g's actor alone (`--placement slots`: its bundle asks for the
custom resource `comdml_slot_<g>`, which only that node offers) and its link, both
directions, is shaped by `tc tbf` to agent g's bandwidth in the heterogeneity preset
(`paper`: 100, 50, 50, 50, 10 MB/s, repeating).  The head hosts no agent (0 CPUs): its
link carries the driver's calls and nothing the clock charges.  This kernel has no
`netem`, so a link has its rate but no added delay.

Then:
1. idle: the link counters over a few seconds with Ray up and no job (Ray's own
   background traffic per node);
2. probe (`--no-probe` skips it): a Ray driver on the head moves objects of 0.25 to 16
   MB from one node's actor to another's, as a helper fetches a chunk (the ref in a
   call, `ray.get` on the receiver), over two links, 5 times each; the fit of the fastest fetch times
   t = latency + bytes / (efficiency x rate) gives `--link-efficiency` and
   `--transfer-latency-ms` for the clock, and the `tc` counters give the bytes on the
   wire per payload byte, sent (framing) and received (the receiver's ACKs and requests);
   then the ring probe (the averaging's 2(N-1) hops alone, on bare actors: a diagnostic)
   and the averaging probe (a 6-round `local` run of one batch per agent: what the
   averaging step costs beyond its bytes, `--collective-step-ms`, and a `local` round's
   calls per node);
3. with comdml among --algorithms, a calls probe: a 4-round `comdml` run with the runs'
   flags, whose counters beyond the clock's bytes and the idle background give Ray's
   per-round control traffic of a ComDML round per node (planning, the chunks' messages
   and fetch requests, the aux heads' sum over all actors); the averaging probe's `local`
   rounds give a `local` round's;
4. for each of --algorithms: `benchmarks/run.py` on the head (`--clock wall --emulate
   compute`, one agent per actor, the probe's link model), whose every round is
   bracketed by a handshake with this process, which reads every node's `tc -s`
   counters at both ends of the round (outside the round's measured time).

Per round it prints the clock's time for the work the wall run did (`round_virtual_s`,
with the probe's link model) plus the planning it charges (the previous round's planning
seconds as the driver measured them), the measured wall time, and per link (node) the
bytes `tc` counted against the bytes the clock charged (payload, and payload times the
probe's wire factors).  CSVs under --out; the bed is taken down on success, failure or
interrupt.  Figures: benchmarks/README.md, "Real time".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NAME = "cdbedl"
MARKS = "/tmp/marks"  # on the head's own disk: the driver's round marks, our acks
HERE = os.path.abspath(__file__)


# ----------------------------------------------------------------------------- the driver side (on the head)


def _mark(name: str, timeout_s: float = 120.0) -> None:
    """Write mark `name` and wait for this benchmark's ack (it reads the link counters meanwhile)."""
    path = Path(MARKS) / name
    path.write_text(str(time.time()))
    ack = path.with_suffix(".ack")
    deadline = time.monotonic() + timeout_s
    while not ack.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def driver(argv: list[str]) -> int:
    """benchmarks/run.py with every round bracketed by marks, and each wall round's planning seconds recorded."""
    from benchmarks.run import main
    from comdml_ray.runtime import run as run_mod

    os.makedirs(MARKS, exist_ok=True)
    run_round, reduce = run_mod.Run.run_round, run_mod.Run._reduce

    def marked(self, r, virtual_before=0.0):
        _mark(f"start-{r}")
        try:
            return run_round(self, r, virtual_before)
        finally:
            _mark(f"end-{r}")

    def reduced(self, r, start, plan, reports, wall=None):
        if wall is not None:
            with open(Path(MARKS) / "lead.jsonl", "a") as f:
                f.write(json.dumps({"round": r, "wall_s": wall[0], "lead_s": wall[1]}) + "\n")
        return reduce(self, r, start, plan, reports, wall)

    run_mod.Run.run_round, run_mod.Run._reduce = marked, reduced
    return main(argv)


PROBE = r"""
import json, sys, time
import numpy as np, ray
address, pairs, sizes, reps = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
ray.init(address=address, logging_level="ERROR")

class Sender:
    def make(self, nbytes, salt):
        return [ray.put(np.full(nbytes, salt % 251, dtype=np.uint8))]

class Receiver:
    def fetch(self, refs):
        t = time.monotonic()
        v = ray.get(refs[0])
        return time.monotonic() - t, int(v.nbytes)

rows = []
for a, b in pairs:
    s = ray.remote(num_cpus=0, resources={f"comdml_slot_{a}": 0.01})(Sender).remote()
    r = ray.remote(num_cpus=0, resources={f"comdml_slot_{b}": 0.01})(Receiver).remote()
    ray.get(r.fetch.remote(ray.get(s.make.remote(1024, 0))))  # both workers up, the path warm
    for rep in range(reps):
        for n in sizes:
            refs = ray.get(s.make.remote(n, rep))
            secs, got = ray.get(r.fetch.remote(refs))
            rows.append({"src": a, "dst": b, "bytes": got, "fetch_s": secs})
            del refs
    ray.kill(s); ray.kill(r)
print("PROBE" + json.dumps(rows))
"""


# ----------------------------------------------------------------------------- this (root) side

PROBE_RING = r"""
import json, sys, time
import numpy as np, ray, torch
address, n, block, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ray.init(address=address, logging_level="ERROR")

class Ring:
    def __init__(self, rank, world):
        from ray.util import collective
        from comdml_ray.runtime.actors import pin_collective_to
        torch.set_num_threads(1)
        self.rank, self.world = rank, world
        pin_collective_to(ray.util.get_node_ip_address())
        collective.init_collective_group(world, rank, backend="gloo", group_name="probe")

    def ring(self, hops, *after):
        # as AgentHost._ring_hop: even ranks send first, odd ranks receive first
        from ray.util import collective
        g, w = self.rank, self.world
        cur = np.ones(block // 4, dtype=np.float32)
        for _ in range(hops):
            out, into = torch.from_numpy(cur), torch.empty(block // 4, dtype=torch.float32)
            if g % 2 == 0:
                collective.send(out, (g + 1) % w, "probe"); collective.recv(into, (g - 1) % w, "probe")
            else:
                collective.recv(into, (g - 1) % w, "probe"); collective.send(out, (g + 1) % w, "probe")
            cur = into.numpy()
        return g

    def ready(self):
        return self.rank

actors = [ray.remote(num_cpus=0, resources={f"comdml_slot_{k}": 0.01})(Ring).remote(k, n) for k in range(n)]
ray.get([a.ready.remote() for a in actors])
ray.get([a.ring.remote(2 * (n - 1)) for a in actors])  # warm
rows = []
for rep in range(reps):
    for hops in (0, 2 * (n - 1)):
        after = [a.ready.remote() for a in actors]  # as the run's averaging: after the round's reports
        t = time.monotonic()
        ray.get([a.ring.remote(hops, *after) for a in actors])
        rows.append({"hops": hops, "seconds": time.monotonic() - t})
print("PROBE" + json.dumps(rows))
"""


def model_bytes_of(cfg) -> int:
    """Bytes of the run's model (float32 state): the averaging ring moves a block of it per hop."""
    from comdml_ray.learning.data import load_dataset
    from comdml_ray.learning.models import build_model

    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download)
    model = build_model(cfg.model, data.channels, data.image_size, data.num_classes)
    return int(sum(t.numel() for t in model.state_dict().values() if t.is_floating_point()) * 4)


def ring_probe(bed, n: int, model_bytes: int, bw: np.ndarray, lat: np.ndarray, efficiency: float, log, reps: int = 7) -> dict:
    """The averaging ring's cost per step beyond what the clock charges for its bytes: N actors, one per node, 2(N-1) hops."""
    from comdml_ray.testbed.bed import PYTHON
    from comdml_ray.timing.clock import exchange_seconds

    block = -(-model_bytes // n // 4) * 4
    r = bed.run("head", [PYTHON, "-c", PROBE_RING, bed.gcs_address, str(n), str(block), str(reps)], timeout=600)
    if r.returncode != 0 or "PROBE" not in r.stdout:
        raise RuntimeError(f"the ring probe failed (exit {r.returncode}): {(r.stdout + r.stderr)[-2000:]}")
    rows = pd.DataFrame(json.loads(r.stdout.split("PROBE", 1)[1].strip().splitlines()[0]))
    ring = float(rows[rows.hops > 0]["seconds"].median())
    call = float(rows[rows.hops == 0]["seconds"].median())
    charged = float(exchange_seconds("allreduce", [[]] * n, bw * efficiency, lat, model_bytes)[0])
    step = max(ring - charged, 0.0) / (2 * (n - 1))
    log(
        f"ring probe: {2 * (n - 1)} hops of {block / 1e3:.1f} kB on {n} nodes: {ring:.3f} s (median of {reps}; the calls alone "
        f"{call:.3f} s), the clock charges {charged:.3f} s for its bytes and latencies: {1e3 * step:.1f} ms more per step"
    )
    return {
        "ring_s": ring,
        "call_s": call,
        "charged_s": charged,
        "step_s": step,
        "block_bytes": block,
        "rows": rows.to_dict("records"),
    }


def rate_of(bps: float) -> str:
    """A profile bandwidth (bytes/s) as a tc rate."""
    return f"{bps * 8 / 1e6:g}mbit"


def counters(bed) -> dict[str, dict[str, int]]:
    return bed.link_counters()


def delta(after: dict, before: dict) -> dict[str, dict[str, int]]:
    return {n: {k: after[n].get(k, 0) - before[n].get(k, 0) for k in after[n]} for n in after}


def probe(bed, bw: np.ndarray, log) -> dict:
    """The link model from fetches over two links: efficiency, latency, and wire bytes per payload byte both ways."""
    from comdml_ray.testbed.bed import PYTHON

    order = np.argsort(-bw)
    fast, mid, slow = int(order[0]), int(order[len(order) // 2]), int(order[-1])
    pairs = [[mid, fast], [fast, slow]]  # links at min(bw): the middle rate and the slowest
    sizes = [256 << 10, 1 << 20, 4 << 20, 16 << 20]
    reps = 5
    before = counters(bed)
    r = bed.run("head", [PYTHON, "-c", PROBE, bed.gcs_address, json.dumps(pairs), json.dumps(sizes), str(reps)], timeout=600)
    after = counters(bed)
    if r.returncode != 0 or "PROBE" not in r.stdout:
        raise RuntimeError(f"the link probe failed: {(r.stdout + r.stderr)[-2000:]}")
    rows = pd.DataFrame(json.loads(r.stdout.split("PROBE", 1)[1].strip().splitlines()[0]))
    rows["rate_Bps"] = [min(bw[a], bw[b]) for a, b in zip(rows["src"], rows["dst"], strict=True)]
    # t = latency + bytes / (efficiency * rate): least squares in (latency, 1/efficiency) over each pair and size's fastest
    # fetch (the link and Ray's calls, not a moment's load on the machine, which the runs' own rounds meet as it comes)
    best = rows.groupby(["src", "dst", "bytes"], as_index=False).agg(fetch_s=("fetch_s", "min"), rate_Bps=("rate_Bps", "first"))
    A = np.stack([np.ones(len(best)), best["bytes"] / best["rate_Bps"]], axis=1)
    (lat, inv_eff), *_ = np.linalg.lstsq(A, best["fetch_s"].to_numpy(), rcond=None)
    d = delta(after, before)
    sent_by = {int(k): 0.0 for k in np.unique(rows["src"])}
    recv_by = {int(k): 0.0 for k in np.unique(rows["dst"])}
    for (a, b), g in rows.groupby(["src", "dst"]):
        sent_by[int(a)] += g["bytes"].sum() + 1024
        recv_by[int(b)] += g["bytes"].sum() + 1024
    node = lambda k: f"w{k + 1}"  # noqa: E731
    # wire bytes per payload byte: the sender's egress over what it sent; the receiver's egress (ACKs, requests) over what it got
    # (fast both sends and receives: its egress is split by the other two nodes' pure roles)
    f_data = d[node(mid)]["tc_sent_bytes"] / sent_by[mid]
    f_ack = d[node(slow)]["tc_sent_bytes"] / recv_by[slow]
    out = {
        "pairs": pairs,
        "sizes": sizes,
        "reps": reps,
        "efficiency": float(1 / inv_eff),
        "latency_s": float(max(lat, 0.0)),
        "wire_per_sent_byte": float(f_data),
        "wire_per_received_byte": float(f_ack),
        "fetches": rows.to_dict("records"),
        "counted": {n: d[n] for n in (node(mid), node(fast), node(slow))},
    }
    log(
        f"probe: efficiency {out['efficiency']:.3f}, per-transfer latency {1e3 * out['latency_s']:.1f} ms, "
        f"wire bytes per payload byte sent {f_data:.4f}, per byte received {f_ack:.4f}"
    )
    for (a, b), g in rows.groupby(["src", "dst"]):
        for n, gg in g.groupby("bytes"):
            log(
                f"  w{a + 1} -> w{b + 1} ({min(bw[a], bw[b]) / 1e6:.0f} MB/s): {n / 2**20:.2f} MiB in {gg['fetch_s'].median():.3f} s "
                f"(median of {len(gg)}, fastest {gg['fetch_s'].min():.3f} s; {n / gg['fetch_s'].median() / min(bw[a], bw[b]):.2f} of the rate)"
            )
    return out


def idle(bed, seconds: float) -> dict:
    before = counters(bed)
    time.sleep(seconds)
    return {n: {k: v / seconds for k, v in d.items()} for n, d in delta(counters(bed), before).items()}


def averaging_probe(bed, argv: list[str], folder: Path, n: int, bw: np.ndarray, lat: np.ndarray, efficiency: float, log) -> dict:
    """What the run's averaging step costs beyond the clock's charge for its bytes, per ring step: a short `local` wall run.

    Rounds of one batch each (the averaging as the runs do it: the call after the round's
    reports, the 2(N-1) hops, loading the averaged model, the acks); the averaging as it
    lasted is the round's wall time minus the last model whole.  Rounds 1 on (round 0 opens
    the collective's connections).
    """
    from comdml_ray.timing.clock import exchange_seconds

    label = "probe-averaging"
    rounds, per_round = run_on_bed(bed, label, [*argv, "--train-samples", str(32 * n), "--rounds", "6", "--eval-every", "100"], folder, log)
    agents = pd.read_csv(folder / label / "agents.csv")
    model_bytes = int(pd.read_csv(folder / label / "profile.csv")["model_bytes"].iloc[0])
    avg = (rounds.set_index("round")["round_wall_s"] - agents.groupby("round")["whole_s"].max()).iloc[1:]
    charged = float(exchange_seconds("allreduce", [[]] * n, bw * efficiency, lat, model_bytes)[0])
    step = max(float(avg.median()) - charged, 0.0) / (2 * (n - 1))
    log(
        f"averaging probe: the averaging lasted {avg.min():.3f}-{avg.max():.3f} s (median {avg.median():.3f} s over {len(avg)} rounds); "
        f"the clock charges {charged:.3f} s for its bytes: {1e3 * step:.1f} ms more per ring step"
    )
    return {"averaging_s": avg.tolist(), "averaging_charged_s": charged, "collective_step_s": step, "per_round": per_round}


def control_bytes(probe_run: dict, model: dict, idle_Bps: dict, n: int, model_bytes: int) -> dict[str, dict[str, float]]:
    """Ray's calls per round and node (bytes sent, received) beyond the ring and the idle background: from the averaging probe.

    The probe's rounds move only the ring (the clock's 2(N-1)/N W each way); what else the
    counters saw, less the idle rate times the round's seconds, is the round's calls and
    their replies (median over rounds 1 on).
    """
    ring = 2 * (n - 1) * model_bytes / n
    wire = ring * (model["wire_per_sent_byte"] + model["wire_per_received_byte"])
    out = {}
    for g in range(n):
        node = f"w{g + 1}"
        sent, recv = [], []
        for rec in probe_run["per_round"][1:]:
            c, secs = rec["nodes"][node], rec["seconds"]
            sent.append(c.get("tc_sent_bytes", 0) - wire - idle_Bps[node].get("tc_sent_bytes", 0.0) * secs)
            recv.append(c.get("tc_received_bytes", 0) - wire - idle_Bps[node].get("tc_received_bytes", 0.0) * secs)
        out[node] = {"sent": float(np.median(sent)), "received": float(np.median(recv))}
    return out


def calls_probe(bed, argv: list[str], folder: Path, model: dict, n: int, idle_Bps: dict, log) -> dict[str, dict[str, float]]:
    """Ray's calls per round and node in a ComDML round: a 4-round `comdml` run with the runs' flags, counted as the runs are.

    Per node, what the counters saw beyond the clock's bytes (times the wire factors) and the
    idle background: planning (states out, the gathered states in, the plans back), the
    messages that carry the chunks' refs, the fetches' requests, the aux heads' sum over all
    actors (median over rounds 1 to 3).
    """
    label = "probe-calls-comdml"
    rounds, per_round = run_on_bed(bed, label, [*argv, "--rounds", "4"], folder, log)
    _, lk = tables(label, folder, rounds, per_round, model, n, idle_Bps)
    lk = lk[lk["round"] >= 1]
    lk = lk.assign(
        sent=lk["tc_sent"] - lk["wire_sent"] - lk["background_sent"],
        received=lk["tc_received"] - lk["wire_received"] - lk["background_received"],
    )
    med = lk.groupby("node")[["sent", "received"]].median()
    log(
        f"calls probe (comdml): per node and round {med['sent'].min() / 1e3:.0f}-{med['sent'].max() / 1e3:.0f} kB out and "
        f"{med['received'].min() / 1e3:.0f}-{med['received'].max() / 1e3:.0f} kB in beyond the clock's bytes and the idle background"
    )
    return {node: {"sent": float(r["sent"]), "received": float(r["received"])} for node, r in med.iterrows()}


def run_on_bed(bed, algo: str, argv: list[str], folder: Path, log) -> tuple[pd.DataFrame, list[dict]]:
    """One run on the bed, each round bracketed by our counter reads; (rounds.csv, per-round counter deltas)."""
    from comdml_ray.testbed.bed import PYTHON

    marks = bed.path("head", MARKS)
    out = f"/tmp/{algo}"
    logf = folder / f"{algo}-driver.log"
    with open(logf, "w") as f:
        p = bed.popen("head", [PYTHON, HERE, "--driver", *argv, "--out", out], stdout=f, stderr=subprocess.STDOUT)
    seen, at, per_round = set(), {}, []
    while True:
        names = sorted(x.name for x in marks.iterdir()) if marks.exists() else []
        for name in names:
            if name.endswith((".ack", ".jsonl")) or name in seen:
                continue
            seen.add(name)
            kind, r = name.split("-")
            at[(kind, int(r))] = counters(bed) | {"_time": {"s": time.time()}}
            (marks / f"{name}.ack").write_text("")
            if kind == "end":
                d = delta(at[("end", int(r))], at[("start", int(r))])
                per_round.append({"round": int(r), "seconds": d.pop("_time")["s"], "nodes": d})
                log(f"  {algo} round {r} done")
        if p.poll() is not None:
            break
        time.sleep(0.02)
    (folder / f"{algo}-counters.json").write_text(json.dumps(per_round, indent=1))
    if p.returncode != 0:
        raise RuntimeError(f"the {algo} run failed (exit {p.returncode}): {logf.read_text()[-3000:]}")
    src = bed.path("head", out)
    for name in ("rounds.csv", "agents.csv", "plan.csv", "summary.json", "profile.csv"):
        if (src / name).exists():
            (folder / algo).mkdir(parents=True, exist_ok=True)
            (folder / algo / name).write_bytes((src / name).read_bytes())
    lead = marks / "lead.jsonl"
    if lead.exists():
        (folder / algo / "lead.jsonl").write_bytes(lead.read_bytes())
        lead.unlink()
    for m in marks.iterdir():
        m.unlink()
    return pd.read_csv(src / "rounds.csv"), per_round


def charged_received(agents: pd.DataFrame, avg_bytes: float, suffix_bytes: dict[int, int]) -> pd.Series:
    """Bytes the clock has each agent receive in a round: the ring's share, its aux ring, what its helper or offloaders sent it.

    From agents.csv: an offloader's bytes_sent is the ring's share + its suffix + its activations + its aux ring.
    """
    a = agents.set_index("agent")
    recv = pd.Series(avg_bytes, index=a.index, dtype=float)
    for k, row in a.iterrows():
        j = int(row["partner"])
        if j < 0:
            continue
        suffix = suffix_bytes[int(row["split"])]
        recv[k] += max(row["bytes_sent"] - avg_bytes - suffix - row["bytes_offloaded"], 0.0)  # its aux ring: as much in as out
        recv[k] += suffix  # the trained suffix back
        recv[j] += suffix + row["bytes_offloaded"]
    return recv


def tables(
    algo: str, folder: Path, rounds: pd.DataFrame, per_round: list[dict], model: dict, n: int, idle_Bps: dict, control: dict | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per round: predicted against measured; per round and link: bytes charged against counted).

    A link's expected count is the clock's bytes times the probe's wire factors plus Ray's own
    background traffic on that node at idle (bytes/s measured before the runs) times the
    seconds between the two counter reads, plus (`control`, from the averaging probe) the
    bytes of a round's calls at that node in a `local` round.
    """
    agents = pd.read_csv(folder / algo / "agents.csv")
    lead = pd.read_json(folder / algo / "lead.jsonl", lines=True).set_index("round")["lead_s"]
    profile = pd.read_csv(folder / algo / "profile.csv")
    model_bytes = int(profile["model_bytes"].iloc[0])
    suffix_bytes = dict(zip(profile["split"].astype(int), profile["suffix_bytes"].astype(int), strict=True))
    rows, links = [], []
    planning_prev = 0.0
    for _, r in rounds.iterrows():
        k = int(r["round"])
        charged_plan = planning_prev if algo == "comdml" else 0.0
        rows.append(
            {
                "algorithm": algo,
                "round": k,
                "clock_s": float(r["round_virtual_s"]),
                "planning_charged_s": charged_plan,
                "predicted_s": float(r["round_virtual_s"]) + charged_plan,
                "measured_s": float(r["round_wall_s"]),
                "planning_measured_s": float(lead.get(k, np.nan)),
                "pairs": int(r["pairs"]),
                "bytes_offloaded": int(r["bytes_offloaded"]),
            }
        )
        planning_prev = float(lead.get(k, 0.0))
        a = agents[agents["round"] == k].sort_values("agent")
        avg = 2 * (n - 1) * model_bytes / n if n > 1 else 0.0
        own = a.set_index("agent")["bytes_sent"]
        recv = charged_received(a, avg, suffix_bytes)
        rec = next(p for p in per_round if p["round"] == k)
        counted, secs = rec["nodes"], rec["seconds"]
        for g in range(n):
            c = counted[f"w{g + 1}"]
            sent_c, recv_c = float(own[g]), float(recv[g])
            links.append(
                {
                    "algorithm": algo,
                    "round": k,
                    "node": f"w{g + 1}",
                    "agent": g,
                    "charged_sent": sent_c,
                    "charged_received": recv_c,
                    "wire_sent": sent_c * model["wire_per_sent_byte"] + recv_c * model["wire_per_received_byte"],
                    "wire_received": recv_c * model["wire_per_sent_byte"] + sent_c * model["wire_per_received_byte"],
                    "background_sent": idle_Bps[f"w{g + 1}"].get("tc_sent_bytes", 0.0) * secs,
                    "background_received": idle_Bps[f"w{g + 1}"].get("tc_received_bytes", 0.0) * secs,
                    "calls_sent": (control or {}).get(f"w{g + 1}", {}).get("sent", 0.0),
                    "calls_received": (control or {}).get(f"w{g + 1}", {}).get("received", 0.0),
                    "tc_sent": c.get("tc_sent_bytes", 0),
                    "tc_received": c.get("tc_received_bytes", 0),
                }
            )
    t = pd.DataFrame(rows)
    t["gap"] = t["measured_s"] / t["predicted_s"] - 1
    lk = pd.DataFrame(links)
    lk["sent_gap"] = lk["tc_sent"] / (lk["wire_sent"] + lk["background_sent"] + lk["calls_sent"]) - 1
    lk["received_gap"] = lk["tc_received"] / (lk["wire_received"] + lk["background_received"] + lk["calls_received"]) - 1
    return t, lk


def bed_main(argv: list[str]) -> int:
    from benchmarks.run import config_from_args
    from comdml_ray.testbed import Bed, BedSpec, LinkSpec, leftovers, unavailable_reason
    from comdml_ray.testbed.bed import interrupt_on_term
    from comdml_ray.timing.profiles import make_profiles

    p = argparse.ArgumentParser(prog="benchmarks/realtime.py --bed", description=__doc__.splitlines()[0])
    p.add_argument("--algorithms", default="local,comdml")
    p.add_argument("--comdml-rounds", type=int, default=None)
    p.add_argument("--out", default="benchmarks/results/realtime-bed")
    p.add_argument("--name", default=NAME, help="the bed's name (cdbed + at most 6 letters or digits)")
    p.add_argument("--object-store-mb", type=int, default=200)
    p.add_argument("--no-probe", action="store_true", help="skip the probe: the clock keeps the profile's links as they are")
    p.add_argument("--idle-s", type=float, default=5.0)
    args, rest = p.parse_known_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"realtime --bed: {reason}", file=sys.stderr)
        return 2
    cfg = config_from_args(rest)
    n = cfg.agents
    prof = make_profiles(cfg.heterogeneity, n, cfg.seed, cfg.slow_link_share)
    bw = np.array([q.bandwidth_Bps for q in prof])
    workers = {f"w{g + 1}": g for g in range(n)}
    spec = BedSpec(
        name=args.name,
        nodes=n + 1,
        cpus=1,
        node_cpus={"head": 0},
        node_links={w: LinkSpec.parse(rate_of(bw[g])) for w, g in workers.items()},
        node_resources={w: {f"comdml_slot_{g}": 1.0} for w, g in workers.items()},
        object_store_mb=args.object_store_mb,
    )
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_lines.append(msg)

    interrupt_on_term()
    bed = Bed(spec)
    figures: dict = {"spec": spec.to_dict(), "load_average_start": os.getloadavg()}
    all_rounds, all_links = [], []
    try:
        bed.up(log=log)
        figures["idle_Bps"] = idle(bed, args.idle_s)
        model = {"efficiency": 1.0, "latency_s": 0.0, "wire_per_sent_byte": 1.0, "wire_per_received_byte": 0.0}
        model["collective_step_s"] = 0.0
        wall = ["--clock", "wall", "--emulate", "compute", "--agents-per-actor", "1", "--cpus-per-agent", "1", "--placement", "slots"]
        wall += ["--checkpoint-every", "0", "--no-progress", "--address", bed.gcs_address]
        if not args.no_probe:
            model |= probe(bed, bw, log)
            lat = np.array([q.latency_s for q in prof]) + model["latency_s"] / 2
            eff = min(model["efficiency"], 1.0)
            try:  # the hops alone: a diagnostic, not used by the clock
                model["ring"] = ring_probe(bed, n, model_bytes_of(cfg), bw, lat, eff, log)
            except RuntimeError as e:
                log(str(e))
            links = ["--link-efficiency", f"{eff:.4f}", "--transfer-latency-ms", f"{1e3 * model['latency_s']:.3f}"]
            avg_probe = averaging_probe(bed, [*rest, "--algorithm", "local", *wall, *links], folder, n, bw, lat, eff, log)
            mb = int(pd.read_csv(folder / "probe-averaging" / "profile.csv")["model_bytes"].iloc[0])
            figures["control_bytes"] = control_bytes(avg_probe, model, figures["idle_Bps"], n, mb)
            model |= {k: v for k, v in avg_probe.items() if k != "per_round"}
        figures["link_model"] = model
        wall += ["--link-efficiency", f"{min(model['efficiency'], 1.0):.4f}", "--transfer-latency-ms", f"{1e3 * model['latency_s']:.3f}"]
        wall += ["--collective-step-ms", f"{1e3 * model['collective_step_s']:.3f}"]
        algorithms = [a for a in args.algorithms.split(",") if a]
        if not args.no_probe and "comdml" in algorithms:
            figures["control_bytes_comdml"] = calls_probe(
                bed, [*rest, "--algorithm", "comdml", *wall], folder, model, n, figures["idle_Bps"], log
            )
        for algo in algorithms:
            more = ["--rounds", str(args.comdml_rounds)] if algo == "comdml" and args.comdml_rounds else []
            log(f"--- {algo} on the bed (load average {os.getloadavg()[0]:.1f})")
            t0 = time.monotonic()
            rounds, per_round = run_on_bed(bed, algo, [*rest, "--algorithm", algo, *wall, *more], folder, log)
            figures[f"{algo}_run_s"] = time.monotonic() - t0
            figures[f"{algo}_load_average_end"] = os.getloadavg()
            calls = figures.get("control_bytes_comdml") if algo == "comdml" else figures.get("control_bytes")
            t, lk = tables(algo, folder, rounds, per_round, model, n, figures["idle_Bps"], calls)
            all_rounds.append(t)
            all_links.append(lk)
    finally:
        bed.down()
        figures["leftovers"] = leftovers(args.name)
        figures["load_average_end"] = os.getloadavg()
        (folder / "figures.json").write_text(json.dumps(figures, indent=1, default=str))
    if not all_rounds:
        return 0 if "link_model" in figures else 1
    t, lk = pd.concat(all_rounds), pd.concat(all_links)
    t.to_csv(folder / "rounds.csv", index=False)
    lk.to_csv(folder / "links.csv", index=False)
    pd.set_option("display.width", 200)
    print("\nper round: the clock's time for the work done (+ planning charged) against the wall round; gap = measured / predicted - 1")
    print(t.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for algo, d in t.groupby("algorithm"):
        print(f"{algo}: max |gap| per round {d['gap'].abs().max():.1%}, total {d['measured_s'].sum() / d['predicted_s'].sum() - 1:+.1%}")
    print(
        "\nper link: bytes charged (payload; x the probe's wire factors; Ray's idle background) against tc; gap = tc / (wire + background) - 1"
    )
    cols = ["charged_sent", "wire_sent", "background_sent", "calls_sent", "tc_sent"]
    cols += ["charged_received", "wire_received", "background_received", "calls_received", "tc_received"]
    s = lk.groupby(["algorithm", "node"])[cols].sum()
    s["sent_gap_data"] = s["tc_sent"] / (s["wire_sent"] + s["background_sent"]) - 1
    s["sent_gap"] = s["tc_sent"] / (s["wire_sent"] + s["background_sent"] + s["calls_sent"]) - 1
    s["received_gap_data"] = s["tc_received"] / (s["wire_received"] + s["background_received"]) - 1
    s["received_gap"] = s["tc_received"] / (s["wire_received"] + s["background_received"] + s["calls_received"]) - 1
    print(s.to_string(float_format=lambda v: f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"))
    print(f"leftovers: {figures['leftovers'] or 'none'}")
    print("(calls: a local round's for local, from the averaging probe; a comdml round's for comdml, from the calls probe)")
    from benchmarks.realtime import time_to_accuracy

    runs = {(a, "wall"): (None, pd.read_csv(folder / a / "rounds.csv")) for a in args.algorithms.split(",") if a}
    for line in time_to_accuracy(runs):
        print(line)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--driver":
        from comdml_ray.runtime.cluster import exit_process

        exit_process(driver(sys.argv[2:]))
    sys.exit(bed_main(sys.argv[1:]))
