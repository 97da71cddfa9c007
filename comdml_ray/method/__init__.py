"""The method: what an agent does in a round, as plain classes (no Ray).

Owns
- `agent`: `Agent` (one shard, model and optimizer) and `AgentGroup` (the agents one
  actor hosts), with the steps below mixed in;
- `comdml_steps`: one ComDML round (publish state, plan, offload, help);
- `averaging`: the group's part of the all-reduce and of gossip;
- `async_steps`: the steps of the event-driven baselines (AD-PSGD, Swift, DivShare);
- `wall_steps`: the wall-clock round, offloader and helper overlapped;
- `checkpoint`: what a group saves and restores;
- `messages` and `store`: what groups send each other, and how payloads move.

May import: `learning`, `timing`, `comdml_ray.config`, `comdml_ray.storage`, `solvers`
(the rule: `comdml_ray.LAYERS`).  A Ray actor hosts an `AgentGroup`
(`comdml_ray.runtime.actors`); unit tests run the same group in process.
"""
