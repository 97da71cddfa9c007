"""The `comdml-ray` console command: `run`, `compare` and `results`.

    comdml-ray run --agents 100                   # one experiment (the flags of benchmarks/run.py)
    comdml-ray compare --agents 20 --seeds 0 1 2  # every method on the same clock and yardstick
    comdml-ray results --render headline-iid      # the tables behind README.md
    python -m comdml_ray.cli run --agents 8 --rounds 2   # the same without the console script

Owns
- `main(argv)`: the command (`[project.scripts]` in pyproject.toml): the first word picks
  the sub-command, the rest are its flags, exactly those of benchmarks/run.py, compare.py
  and tables.py, which call the same functions under their own prog names;
- `run`: the run's flags (`build_parser`, `config_from_args`), `exit_code_of` (a user's
  mistake is one sentence on stderr and exit code 2) and `comdml-ray run`;
- `compare`: the comparison's flags and `comdml-ray compare` (`comdml_ray.comparison` does the work);
- `sensitivity`: the compute/communication sweep and `comdml-ray sensitivity`;
- `tables`: the results tables and `comdml-ray results`.

May import: everything in the package (the top floor; the rule: `comdml_ray.LAYERS`).
Importing it stays light: Ray and torch are imported when a command runs, so
`comdml-ray --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> (module under comdml_ray.cli with `main(argv, prog)`, one line for --help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("comdml_ray.cli.run", "train one experiment: N agents on Ray, with or without ComDML (flags of benchmarks/run.py)"),
    "compare": ("comdml_ray.cli.compare", "every method on the same seeds, clock and yardstick (flags of benchmarks/compare.py)"),
    "sensitivity": (
        "comdml_ray.cli.sensitivity",
        "ComDML's time-to-target reduction against the compute/communication ratio (flags of benchmarks/sensitivity.py)",
    ),
    "results": ("comdml_ray.cli.tables", "run, collect or render the tables behind the READMEs (as benchmarks/tables.py)"),
}


def _parser() -> argparse.ArgumentParser:
    """The top level alone (the sub-commands parse their own flags): --help, --version, and the choice of command."""
    from comdml_ray import __version__

    p = argparse.ArgumentParser(
        prog="comdml-ray",
        description="Decentralized multi-agent deep learning on Ray with ComDML workload balancing. "
        "`comdml-ray COMMAND --help` lists a command's flags.",
    )
    p.add_argument("--version", action="version", version=f"comdml-ray {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_line) in COMMANDS.items():
        sub.add_parser(name, help=help_line, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """`comdml-ray COMMAND [flags]`; returns the exit code (2: a user's mistake, with one sentence on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]][0])
        return module.main(argv[1:], prog=f"comdml-ray {argv[0]}")
    try:
        _parser().parse_args(argv)  # --help, --version: exit 0; no command or an unknown one: usage and exit 2
    except SystemExit as e:
        return int(e.code or 0)
    return 2  # not reached: argparse exits on everything a known command does not take
