"""A Ray cluster on one machine whose nodes differ as a real cluster's do: the multi-host test bed.

    python -m comdml_ray.testbed up --nodes 4 --link 100mbit      # a head and 3 workers
    python -m comdml_ray.testbed status
    python -m comdml_ray.testbed exec head -- ray status
    python -m comdml_ray.testbed down

Owns
- `bed`: `Bed` (bring a bed up from a `BedSpec`, run commands on a node, stop a node,
  read link counters, tear it all down, find what is left of it) and `LinkSpec`.  Each
  node lives in its own network namespace (address from 198.18.0.0/15, veth pair to a
  bridge in a namespace of its own; the root namespace has no address or route
  there), its own PID, UTS and mount namespaces (a private tmpfs over /tmp, /dev/shm
  and the paths a run writes; its own host name, which its /etc/hosts maps to
  127.0.1.1, as stock Debian does), and optional tbf rate limits on both directions of
  its link (and netem delays where the kernel has sch_netem);
- `__main__`: the command line (`up`, `status`, `exec`, `kill-node`, `start-node`, `down`).

May import: the standard library and psutil; it runs Ray only through the `ray` CLI
inside the nodes, so it imports no Ray, no torch and nothing else of this package
(the rule: `comdml_ray.LAYERS`).  It needs root and iproute2; without them
`BedUnavailable` says so in one sentence.
"""

from __future__ import annotations

from comdml_ray.testbed.bed import Bed, BedError, BedSpec, BedUnavailable, LinkSpec, leftovers, unavailable_reason

__all__ = ["Bed", "BedError", "BedSpec", "BedUnavailable", "LinkSpec", "leftovers", "unavailable_reason"]
