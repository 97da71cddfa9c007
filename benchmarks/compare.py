"""The headline experiment: every method on the same seeds, data, agents, heterogeneity, clock and yardstick.

    python benchmarks/compare.py --agents 20                                  # local vs comdml, paper stragglers
    python benchmarks/compare.py --agents 20 --partition dirichlet --alpha 0.5 --seeds 0 1 2
    python benchmarks/compare.py --agents 20 --setting links                  # DivShare's slow-link setting
    python benchmarks/compare.py --agents 20 --setting both --algorithms all  # + gossip variants and the baselines

The same as `comdml-ray compare`, under this script's name: the flags are in
comdml_ray/cli/compare.py (every flag of benchmarks/run.py, plus --algorithms, --setting,
--rounds-factor, --seeds, --targets, --reuse-runs, --score-only, explained there), the
comparison itself (same clock, one yardstick, reuse of finished runs) in
comdml_ray/comparison.py.  Writes to --out: `runs.csv` (seed x setting x method x target),
`summary.csv` (mean, std, seeds that reached the target) and `comparison-<setting>.png`.
"""

from __future__ import annotations

import sys

from comdml_ray.cli import compare as cli_compare

PROG = "benchmarks/compare.py"


def main(argv: list[str] | None = None) -> int:
    return cli_compare.main(argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
