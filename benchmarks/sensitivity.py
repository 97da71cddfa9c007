"""Where ComDML stops paying off: its time-to-target reduction against the compute/communication ratio.

    python benchmarks/sensitivity.py --agents 20 --train-samples 12000 --rounds 15 --rounds-factor 1
    python benchmarks/sensitivity.py --agents 20 --gflops 10,100,1000 --profiles flops

The same as `comdml-ray sensitivity`, under this script's name: the flags (every flag of
benchmarks/run.py, plus --gflops, --profiles, --rounds-factor, --target, --reuse-runs), the
sweep and its plot are in comdml_ray/cli/sensitivity.py.  Writes `runs.csv` (one row per
point) and `sensitivity.png` in --out.
"""

from __future__ import annotations

import sys

from comdml_ray.cli import sensitivity as cli_sensitivity

PROG = "benchmarks/sensitivity.py"


def main(argv: list[str] | None = None) -> int:
    return cli_sensitivity.main(argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
