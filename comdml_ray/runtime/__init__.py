"""The Ray side: actors that host the method, one synchronous round, the cluster, and surviving failures.

Owns
- `backend`: the one typed way in to the agents (`Backend`) and its in-process form;
- `actors`: `AgentHost`, the Ray actor that hosts an `AgentGroup`, and `RayBackend`;
- `rounds`: the steps of one synchronous round over any `Backend`;
- `run`: `Run`, the experiment on Ray (place the actors, drive the rounds);
- `reducer`: the round's reducer, which turns the groups' reports into rows;
- `faults` and `recovery`: losing an actor, checkpoints, `--resume`;
- `cluster` and `layout`: start or join Ray, and which agents each actor hosts;
- `devices`: the collective backend the actors' devices allow (pure: NCCL only on
  distinct GPUs with cupy, else gloo on host copies);
- `telemetry`: log lines, warnings and dashboard metrics.

May import: `results`, `method`, `learning`, `timing`, `comdml_ray.config`,
`comdml_ray.storage`, `solvers`, ray (the rule: `comdml_ray.LAYERS`).  Besides
`comdml_ray.experiment`, this is the only package that imports Ray.
"""
