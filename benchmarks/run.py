"""The main job: decentralized training of N agents on Ray, with or without ComDML offloading.

    python benchmarks/run.py --agents 100                       # defaults: local SGD, Fashion-MNIST, small CNN
    python benchmarks/run.py --agents 20 --algorithm comdml     # slow agents offload to fast ones
    python benchmarks/run.py --agents 8 --rounds 2 --out results/quick
    ray job submit --working-dir . -- python benchmarks/run.py --agents 100 --address auto --gpus-per-agent 0.25

The same as `comdml-ray run` (comdml_ray/cli/run.py, where the flags are), under this
script's name.  Flags map one to one onto `comdml_ray.config.RunConfig`; `run_experiment`
does the rest (see comdml_ray/experiment.py, then runtime/run.py for one round, then
agent.py for the actor methods).  A bad flag, a missing dataset or a cluster too small
for the run ends with one sentence on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from comdml_ray.cli import run as cli_run
from comdml_ray.cli.run import exit_code_of
from comdml_ray.config import RunConfig

PROG = "benchmarks/run.py"
__all__ = ["build_parser", "config_from_args", "exit_code_of", "main"]  # what the other scripts in benchmarks/ and the tests use


def build_parser() -> argparse.ArgumentParser:
    return cli_run.build_parser(PROG)


def config_from_args(argv: list[str] | None = None) -> RunConfig:
    return cli_run.config_from_args(argv, PROG)


def main(argv: list[str] | None = None) -> int:
    return cli_run.main(argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
