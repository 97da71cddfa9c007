"""One run on a multi-host bed against the same run on one host: wall per round, bytes on the links, identical results (as root).

    python benchmarks/multihost.py                                   # 4 nodes, 48 ComDML agents, 3 rounds, 100mbit links
    python benchmarks/multihost.py --nodes 3 --agents 12 --link 1gbit --json /tmp/multihost.json

Brings up a bed (`comdml_ray.testbed`: one head, N-1 workers, 1 logical CPU each,
every link shaped by tc tbf in both directions), submits `benchmarks/run.py` to it with
`ray job submit` from inside the head's namespace (`--out` a local path on the head,
a checkpoint every round), reads the link counters before and after (`tc -s` on both
ends of every node's link), runs the same command on this host alone (a local Ray
with as many logical CPUs as the bed has, so the same layout), compares the
deterministic columns of rounds.csv, and takes the bed down; prints one table and
the times `up` and `down` took.
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
    a = p.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"multihost: {reason}", file=sys.stderr)
        return 2
    args = ["--agents", str(a.agents), "--rounds", str(a.rounds), "--algorithm", a.algorithm, "--checkpoint-every", "1"]
    args += ["--train-samples", str(a.train_samples), "--no-progress"]
    bed = Bed(BedSpec(name="cdbedm", nodes=a.nodes, cpus=1, link=LinkSpec.parse(a.link)))
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


if __name__ == "__main__":
    sys.exit(main())
