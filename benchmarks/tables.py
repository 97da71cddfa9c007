"""The tables behind README.md and benchmarks/README.md: one command per table, CSVs committed under benchmarks/results/.

    python benchmarks/tables.py headline-iid          # run it (minutes to hours), write benchmarks/results/headline-iid.csv
    python benchmarks/tables.py --render headline-iid # print the markdown table README.md shows, from the CSV
    python benchmarks/tables.py --collect headline-iid DIR [DIR ...]   # the CSV from runs made piecewise (e.g. one seed at a time)
    python benchmarks/tables.py --write-readmes       # put every rendered table into its <!-- table: NAME --> block
    make results                                       # every table, one after the other
    make results ARGS=--reuse-runs                     # the same, going on where a stopped `make results` left off

The same as `comdml-ray results`, under this script's name: the tables (`TABLES`, each one
invocation of `comdml-ray compare` or `comdml-ray sensitivity` with its flags), how a
table's runs.csv becomes benchmarks/results/<table>.csv, and how a CSV renders into the
READMEs' `<!-- table: NAME -->` blocks are in comdml_ray/cli/tables.py.
"""

from __future__ import annotations

import sys

from comdml_ray.cli import tables as cli_tables

PROG = "benchmarks/tables.py"


def main(argv: list[str] | None = None) -> int:
    return cli_tables.main(argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
