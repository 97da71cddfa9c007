"""comdml-ray: decentralized multi-agent deep learning on Ray with ComDML workload balancing.

Layers (imports point down only, see shared DESIGN.md):
- ``solvers/`` (top-level package): the offloading problem and its solvers; no torch, no Ray.
- ``comdml_ray`` core modules (config, data, models, training, clock, topology, profiles):
  pure Python/torch, no Ray imports.
- ``comdml_ray.runtime`` and ``comdml_ray.actors``: the only modules that import Ray.
"""

__version__ = "0.1.0"
