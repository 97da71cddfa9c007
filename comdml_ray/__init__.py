"""comdml-ray: decentralized multi-agent deep learning on Ray with ComDML workload balancing.

    from comdml_ray import RunConfig, run
    result = run(RunConfig(agents=8, rounds=2))      # a RunResult: rounds DataFrame, summary, folder

The package, floor by floor (an import may only point to a lower floor; `LAYERS` below is
the rule, and tests/test_layers.py holds the code to it):
- `solvers` (top-level package) and `config`: the offloading problem and its solvers; the
  run's one validated configuration;
- `storage` (where a run's files go), `timing/` (profiles, topology, the virtual clock:
  no torch) and `learning/` (models, data, training steps, split costs: pure torch);
- `method/`: what an agent does in a round, as plain classes (no Ray);
- `results/`: rows, the output folder's files, the yardstick;
- `runtime/`: the Ray side (actors hosting the method, one round, cluster, recovery);
- `baselines/`: the event-driven baselines, over the same backend;
- `experiment`: one experiment from start to results; `comparison`: every method on the
  same clock and yardstick;
- `api` (`run`, `compare` and their typed results) and `cli` (the `comdml-ray` command) on top;
- `testbed/`: a Ray cluster of several nodes on one machine (namespaces, links,
  private disks) that runs the above through the `ray` CLI; nothing imports it.
The method itself is stated in docs/method.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"

# Floors, lowest first.  A unit may import units of lower floors only (never one of its
# own floor); `THIRD_PARTY_ONLY_IN` says which units alone may import Ray and torch.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("solvers", "comdml_ray.config"),
    ("comdml_ray.storage", "comdml_ray.timing", "comdml_ray.learning"),
    ("comdml_ray.method",),
    ("comdml_ray.results",),
    ("comdml_ray.runtime",),
    ("comdml_ray.baselines",),
    ("comdml_ray.experiment",),
    ("comdml_ray.comparison",),
    ("comdml_ray.api",),
    ("comdml_ray.cli",),
    ("comdml_ray.testbed",),
)
THIRD_PARTY_ONLY_IN: dict[str, tuple[str, ...]] = {
    "ray": ("comdml_ray.runtime", "comdml_ray.experiment"),
    "torch": ("comdml_ray.learning", "comdml_ray.method", "comdml_ray.runtime", "comdml_ray.experiment"),
    "torchvision": ("comdml_ray.learning",),
}

# The Python API, imported on first use: `import comdml_ray.<anything>` (as every Ray
# actor does) must stay as light as the module it asks for.
_API = {
    "RunConfig": "comdml_ray.config",
    "ConfigError": "comdml_ray.config",
    "run": "comdml_ray.api",
    "compare": "comdml_ray.api",
    "RunResult": "comdml_ray.api",
    "CompareResult": "comdml_ray.api",
}
__all__ = ["LAYERS", "THIRD_PARTY_ONLY_IN", "CompareResult", "ConfigError", "RunConfig", "RunResult", "compare", "run"]

if TYPE_CHECKING:
    from comdml_ray.api import CompareResult, RunResult, compare, run
    from comdml_ray.config import ConfigError, RunConfig


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'comdml_ray' has no attribute {name!r}")
