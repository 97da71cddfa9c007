"""comdml-ray: decentralized multi-agent deep learning on Ray with ComDML workload balancing.

Layers (imports point down only; the method is stated in docs/method.md):
- ``solvers/`` (top-level package): the offloading problem and its solvers; no torch, no Ray.
- ``comdml_ray`` core modules (config, data, models, training, clock, topology, profiles,
  setting, layout, rows, store): pure Python/torch, no Ray imports.
- the agent logic, Ray-free: ``agent`` (Agent, AgentGroup) with its mixins
  ``comdml_steps``, ``averaging``, ``async_steps``; ``backend`` (the one typed way in to
  the agents, and its in-process implementation);
- Ray: ``actors`` (AgentHost, RayBackend, metrics), ``runtime`` (Run: one synchronous
  round), ``experiment`` (the loop over rounds), ``baselines`` (the event-driven loops,
  which reach the agents only through a Backend).
"""

__version__ = "0.1.0"
