"""The bed's command line: a Ray cluster of N nodes on this machine, each with its own address, disk and link (as root).

    python -m comdml_ray.testbed up --nodes 4 --link 100mbit              # head + 3 workers, 1 CPU each
    python -m comdml_ray.testbed up --nodes 3 --node-link w2=10mbit       # one slow node
    python -m comdml_ray.testbed up --nodes 3 --node-resources w1=comdml_slot_0:1 --node-resources w2=comdml_slot_1:1
    python -m comdml_ray.testbed status
    python -m comdml_ray.testbed exec head -- ray status
    python -m comdml_ray.testbed exec head -- ray job submit --address http://127.0.0.1:8265 -- \\
        python benchmarks/run.py --agents 12 --rounds 3 --algorithm comdml --address auto --out /tmp/out
    python -m comdml_ray.testbed counters                                 # bytes on each node's link
    python -m comdml_ray.testbed kill-node w2                             # lose a node (every process, by PID)
    python -m comdml_ray.testbed start-node w2                            # a replacement joins in its place
    python -m comdml_ray.testbed down                                     # (--all: every bed)

`up` returns once every node has joined and leaves the bed running; Ctrl-C, SIGTERM or
a failure during `up` removes everything it had made.  A bad flag, or a machine that
cannot host a bed (no root, no iproute2), ends with one sentence and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from comdml_ray.testbed.bed import PREFIX, STATE_ROOT, Bed, BedError, BedSpec, LinkSpec, down, interrupt_on_term, leftovers


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        node, sep, value = item.partition("=")
        if not sep or not node or not value:
            raise BedError(f"{flag} {item}: write it as NODE=VALUE, e.g. {flag} w2=10mbit.")
        out[node] = value
    return out


def _resources(text: str) -> dict[str, float]:
    """NAME:AMOUNT[,NAME:AMOUNT] as Ray's custom resources of one node."""
    out = {}
    for item in text.split(","):
        name, sep, amount = item.partition(":")
        try:
            out[name] = float(amount)
        except ValueError:
            sep = ""
        if not sep or not name or out.get(name, -1) < 0:
            raise BedError(f"--node-resources {text}: write each resource as NAME:AMOUNT (a number >= 0), e.g. comdml_slot_0:1.")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m comdml_ray.testbed", description="A multi-host Ray cluster on this machine (needs root).")
    p.add_argument("--name", default=PREFIX, help=f"the bed's name ({PREFIX} + up to 6 letters/digits): several beds can coexist")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build the bed and start Ray on every node")
    up.add_argument("--nodes", type=int, default=3, help="nodes: one head and N-1 workers")
    up.add_argument("--cpus", type=int, default=1, help="logical CPUs of each node")
    up.add_argument("--gpus", type=int, default=0, help="logical GPUs of each node (for layout tests)")
    up.add_argument("--link", default="", help="every node's link, RATE[:DELAY] in tc units, both directions (e.g. 100mbit:2ms)")
    up.add_argument("--node-link", action="append", default=[], help="one node's own link, NODE=RATE[:DELAY] (repeatable)")
    up.add_argument("--node-cpus", action="append", default=[], help="one node's own logical CPUs, NODE=N (repeatable)")
    up.add_argument(
        "--node-resources",
        action="append",
        default=[],
        help="one node's custom Ray resources, NODE=NAME:AMOUNT[,NAME:AMOUNT] (repeatable; e.g. w1=comdml_slot_0:1 for --placement slots)",
    )
    up.add_argument("--private", action="append", default=[], help="one more path with a private tmpfs on every node (repeatable)")
    up.add_argument("--object-store-mb", type=int, default=200, help="each node's Ray object store")
    sub.add_parser("status", help="the nodes, their addresses, links and processes")
    sub.add_parser("counters", help="bytes sent and received on each node's link (JSON)")
    ex = sub.add_parser("exec", help="run a command inside a node's namespaces, e.g. `exec head -- ray status`")
    ex.add_argument("node")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    kn = sub.add_parser("kill-node", help="lose a node: end every process on it (raylet, workers), by PID")
    kn.add_argument("node")
    sn = sub.add_parser("start-node", help="start Ray on a node again (a replacement joins the cluster)")
    sn.add_argument("node")
    dn = sub.add_parser("down", help="remove the bed: processes, namespaces, veths, qdiscs, mounts")
    dn.add_argument("--all", action="store_true", help=f"every bed recorded under {STATE_ROOT} or named {PREFIX}*")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _command(args)
    except BedError as e:
        print(f"testbed: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("testbed: interrupted; everything the command had made is removed.", file=sys.stderr)
        return 130


def _command(args: argparse.Namespace) -> int:
    if args.command == "up":
        spec = BedSpec(
            name=args.name,
            nodes=args.nodes,
            cpus=args.cpus,
            gpus=args.gpus,
            link=LinkSpec.parse(args.link),
            node_links={k: LinkSpec.parse(v) for k, v in _pairs(args.node_link, "--node-link").items()},
            node_cpus={k: int(v) for k, v in _pairs(args.node_cpus, "--node-cpus").items()},
            node_resources={k: _resources(v) for k, v in _pairs(args.node_resources, "--node-resources").items()},
            private=tuple(args.private),
            object_store_mb=args.object_store_mb,
        )
        interrupt_on_term()
        bed = Bed(spec).up()
        print("\n".join(bed.status()))
        print(f"next: python -m comdml_ray.testbed --name {args.name} exec head -- ray status")
        return 0
    if args.command == "down":
        names = _all_names() if args.all else [args.name]
        for name in names:
            removed = down(name)
            left = leftovers(name)
            print(f"bed {name}: removed {len(removed)} things" + (f"; still there: {', '.join(left)}" if left else ""))
        return 0
    bed = Bed.attach(args.name)
    if args.command == "status":
        print("\n".join(bed.status()))
    elif args.command == "counters":
        print(json.dumps(bed.link_counters(), indent=1))
    elif args.command == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            raise BedError("exec needs a command after the node, e.g. `exec head -- ray status`.")
        import subprocess

        return subprocess.run(bed.argv(args.node, argv), env=bed.env(), check=False).returncode
    elif args.command == "kill-node":
        pids = bed.stop_node(args.node)
        print(f"node {args.node}: ended {len(pids)} processes ({', '.join(map(str, pids))})")
    elif args.command == "start-node":
        bed.start_ray(bed.node(args.node))
        print(f"node {args.node}: Ray started again")
    return 0


def _all_names() -> list[str]:
    names = {p.name for p in STATE_ROOT.glob(f"{PREFIX}*") if p.is_dir()} if STATE_ROOT.exists() else set()
    names |= {ns.split("-", 1)[0] for ns in _all_netns() if ns.startswith(PREFIX) and "-" in ns}
    return sorted(names)


def _all_netns() -> list[str]:
    import subprocess

    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


if __name__ == "__main__":
    sys.exit(main())
