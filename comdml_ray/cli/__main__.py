"""`python -m comdml_ray.cli COMMAND [flags]`: the `comdml-ray` command without its console script.

    python -m comdml_ray.cli run --agents 8 --rounds 2 --out results/quick
    python -m comdml_ray.cli --help

For a checkout that is on PYTHONPATH but not installed (`pip install -e .` creates `comdml-ray`).
"""

import sys

from comdml_ray.cli import main

if __name__ == "__main__":
    sys.exit(main())
