"""One run on a multi-host bed against the same run on one host: wall per round, bytes on the links, identical results (as root).

    python benchmarks/multihost.py                                   # 4 nodes, 48 ComDML agents, 3 rounds, 100mbit links
    python benchmarks/multihost.py --nodes 3 --agents 12 --link 1gbit --json /tmp/multihost.json
    python benchmarks/multihost.py --agents 24 --lose-node w2                   # lose w2 in round 2 against the uninterrupted run
    python benchmarks/multihost.py --agents 24 --lose-node w2 --no-room         # ... where no other node has room: a replacement joins

Brings up a bed (`comdml_ray.testbed`: one head, N-1 workers, 1 logical CPU each,
every link shaped by tc tbf in both directions), submits `benchmarks/run.py` to it with
`ray job submit` from inside the head's namespace (`--out` a local path on the head,
a checkpoint every round), reads the link counters before and after (`tc -s` on both
ends of every node's link), runs the same command on this host alone (a local Ray
with as many logical CPUs as the bed has, so the same layout), compares the
deterministic columns of rounds.csv, and takes the bed down; prints one table and
the times `up` and `down` took.

With `--lose-node NODE` it measures losing a whole worker node instead: on one bed, the
run uninterrupted, then the same run losing every process of NODE (`Bed.stop_node`, by
PID) as soon as round 2 starts (rows 0 and 1 written), Ray's own node-death detection
(about 15 s).  By default every node has 2 logical CPUs and the run's 4 actors (1 CPU
each, `--placement spread`) one node each, so the survivors have room and the lost
actor is re-placed there; `--no-room` gives every node 1 CPU, so the lost actor waits
(with a progress line) until NODE is started again, which happens once the run says it
waits.  Prints the round, agents, node and seconds lost, both final accuracies and
whether the deterministic columns of rounds.csv are identical.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from comdml_ray.results.report import DETERMINISTIC_COLUMNS
from comdml_ray.testbed import Bed, BedError, BedSpec, LinkSpec, leftovers, unavailable_reason
from comdml_ray.testbed.bed import PROJECT_ROOT, PYTHON, RAY

RUN_PY = str(PROJECT_ROOT / "benchmarks" / "run.py")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/multihost.py", description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--agents", type=int, default=48)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--algorithm", default="comdml")
    p.add_argument("--link", default="100mbit", help="every node's link, RATE[:DELAY]")
    p.add_argument("--train-samples", type=int, default=4800)
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--name", help="the bed's name (default cdbedm, with --lose-node cdbedn): one that is up already is never touched")
    p.add_argument("--lose-node", metavar="NODE", help="measure losing this worker node (e.g. w2) in round 2 instead")
    p.add_argument("--no-room", action="store_true", help="with --lose-node: the survivors have no room; the node is started again")
    a = p.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"multihost: {reason}", file=sys.stderr)
        return 2
    if a.lose_node:
        return lose_node(a)
    args = ["--agents", str(a.agents), "--rounds", str(a.rounds), "--algorithm", a.algorithm, "--checkpoint-every", "1"]
    args += ["--train-samples", str(a.train_samples), "--no-progress"]
    bed = Bed(BedSpec(name=a.name or "cdbedm", nodes=a.nodes, cpus=1, link=LinkSpec.parse(a.link)))
    try:
        bed.up()
        before = bed.link_counters()
        t0 = time.monotonic()
        job = bed.run("head", [RAY, "job", "submit", "--address", bed.dashboard_url, "--", PYTHON, RUN_PY, *args, "--address", "auto", "--out", "/tmp/mh"], timeout=3600)  # fmt: skip
        job_s = time.monotonic() - t0
        if job.returncode != 0:
            print(job.stdout[-3000:], job.stderr[-3000:], file=sys.stderr)
            return 1
        after = bed.link_counters()
        bed_rounds = pd.read_csv(bed.path("head", "/tmp/mh/rounds.csv"))
        bed_summary = json.loads(bed.path("head", "/tmp/mh/summary.json").read_text())
    except BedError as e:
        print(f"multihost: {e}", file=sys.stderr)
        return 2
    finally:
        t_down = time.monotonic()
        bed.down()
        down_s = time.monotonic() - t_down
    left = leftovers("cdbedm")
    with tempfile.TemporaryDirectory(prefix="comdml-one-") as tmp:
        t0 = time.monotonic()
        one = subprocess.run([PYTHON, RUN_PY, *args, "--num-cpus", str(a.nodes), "--out", tmp], capture_output=True, text=True, check=False)
        one_s = time.monotonic() - t0
        if one.returncode != 0:
            print(one.stderr[-3000:], file=sys.stderr)
            return 1
        one_rounds = pd.read_csv(Path(tmp) / "rounds.csv")
        one_summary = json.loads((Path(tmp) / "summary.json").read_text())
    identical = bed_rounds[DETERMINISTIC_COLUMNS].equals(one_rounds[DETERMINISTIC_COLUMNS])
    links = {n: {k: after[n].get(k, 0) - before[n].get(k, 0) for k in after[n]} for n in after}
    figures = {
        "nodes": a.nodes,
        "link": a.link,
        "agents": a.agents,
        "rounds": a.rounds,
        "actors": bed_summary["actors"],
        "bed_wall_per_round_s": float(bed_rounds["round_wall_s"].mean()),
        "one_host_wall_per_round_s": float(one_rounds["round_wall_s"].mean()),
        "bed_startup_s": bed_summary["startup_s"],
        "one_host_startup_s": one_summary["startup_s"],
        "bed_job_s": job_s,
        "one_host_s": one_s,
        "bed_checkpoint_s_per_round": bed_summary["checkpoint_s_per_round"],
        "tc_sent_bytes_by_node": {n: v.get("tc_sent_bytes", 0) for n, v in links.items()},
        "tc_received_bytes_by_node": {n: v.get("tc_received_bytes", 0) for n, v in links.items()},
        "link_bytes_total": sum(v.get("tc_sent_bytes", 0) for v in links.values()),
        "identical_deterministic_columns": bool(identical),
        "final_accuracy": bed_summary["final_accuracy"],
        "up_s": bed.up_s,
        "down_s": down_s,
        "leftovers": left,
    }
    print(json.dumps(figures, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1))
    return 0 if identical and not left else 1


def lose_node(a: argparse.Namespace) -> int:
    """--lose-node: the same run on one bed, uninterrupted and then losing a node in round 2; prints and returns 0 when identical."""
    if a.rounds < 3 or a.nodes < 2 or a.lose_node == "head":
        print("multihost: --lose-node needs --rounds 3 or more, --nodes 2 or more, and a worker node (w1, w2, ...).", file=sys.stderr)
        return 2
    per_actor = -(-a.agents // a.nodes)  # one actor per node
    args = ["--agents", str(a.agents), "--rounds", str(a.rounds), "--algorithm", a.algorithm, "--checkpoint-every", "1"]
    args += ["--train-samples", str(a.train_samples), "--eval-samples", "0", "--no-progress"]
    args += ["--agents-per-actor", str(per_actor), "--placement", "spread"]
    name = a.name or "cdbedn"
    bed = Bed(BedSpec(name=name, nodes=a.nodes, cpus=1 if a.no_room else 2, link=LinkSpec.parse(a.link)))
    try:
        bed.up()
        bed.node(a.lose_node)
        whole = bed.run("head", [PYTHON, RUN_PY, *args, "--address", bed.gcs_address, "--out", "/tmp/whole"], timeout=3600)
        if whole.returncode != 0:
            print(whole.stderr[-3000:], file=sys.stderr)
            return 1
        log = Path(tempfile.mkdtemp(prefix="comdml-lose-")) / "driver.log"
        with open(log, "w") as f:
            drv = bed.popen(
                "head", [PYTHON, RUN_PY, *args, "--address", bed.gcs_address, "--out", "/tmp/lost"], stdout=f, stderr=subprocess.STDOUT
            )
        rows = bed.path("head", "/tmp/lost/rounds.csv")
        while not (rows.exists() and len(rows.read_text().splitlines()) >= 3):  # rows 0 and 1 written: round 2 runs
            if drv.poll() is not None:
                print(log.read_text()[-3000:], file=sys.stderr)
                return 1
            time.sleep(0.05)
        pids = bed.stop_node(a.lose_node)
        killed_at = time.monotonic()
        replaced_after = None
        if a.no_room:
            while "waiting for a node to join" not in log.read_text() and drv.poll() is None:
                time.sleep(0.2)
            bed.start_ray(bed.node(a.lose_node))
            replaced_after = time.monotonic() - killed_at
        if drv.wait(timeout=3600) != 0:
            print(log.read_text()[-3000:], file=sys.stderr)
            return 1
        out = {k: (pd.read_csv(bed.path("head", f"/tmp/{k}/rounds.csv"), keep_default_na=False), json.loads(bed.path("head", f"/tmp/{k}/summary.json").read_text())) for k in ("whole", "lost")}  # fmt: skip
        progress = [ln for ln in log.read_text().splitlines() if "node" in ln and ("gone" in ln or "lost" in ln or "joined" in ln)]
    except BedError as e:
        print(f"multihost: {e}", file=sys.stderr)
        return 2
    finally:
        bed.down()
    (whole_rounds, whole_summary), (lost_rounds, lost_summary) = out["whole"], out["lost"]
    identical = lost_rounds[DETERMINISTIC_COLUMNS].equals(whole_rounds[DETERMINISTIC_COLUMNS])
    failures = lost_summary["failures"]
    figures = {
        "nodes": a.nodes,
        "cpus_per_node": 1 if a.no_room else 2,
        "link": a.link,
        "agents": a.agents,
        "rounds": a.rounds,
        "actors": lost_summary["actors"],
        "lost_node": a.lose_node,
        "processes_ended": len(pids),
        "failures": failures,
        "lost_nodes": lost_summary["lost_nodes"],
        "rounds_csv_lost": lost_rounds[["round", "failures", "failed_agents", "lost_nodes", "lost_wall_s"]].to_dict("records"),
        "seconds_lost": lost_summary["time_lost_s"],
        "replacement_started_after_s": replaced_after,
        "uninterrupted_wall_per_round_s": float(whole_rounds["round_wall_s"].mean()),
        "uninterrupted_total_wall_s": whole_summary["total_wall_s"],
        "node_loss_total_wall_s": lost_summary["total_wall_s"],
        "uninterrupted_final_accuracy": whole_summary["final_accuracy"],
        "node_loss_final_accuracy": lost_summary["final_accuracy"],
        "identical_deterministic_columns": bool(identical),
        "driver_lines": progress,
        "up_s": bed.up_s,
        "leftovers": leftovers(name),
    }
    print(json.dumps(figures, indent=1, default=str))
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1, default=str))
    return 0 if identical and not figures["leftovers"] else 1


if __name__ == "__main__":
    sys.exit(main())
