"""The time model: who the agents are and what the virtual clock charges them (no torch, no Ray).

Owns
- `profiles`: each agent's compute slowdown and link (the heterogeneity presets);
- `topology`: communication graphs and their mixing weights;
- `clock`: the virtual clock of a synchronous round (what one agent did, what it cost);
- `setting`: the run's setting, built once from the above and read by every loop;
- `emulation`: making alike cores uneven for the wall clock (`--clock wall --emulate`).

May import: `comdml_ray.config`, numpy, networkx.  Nothing here imports torch, so the
clock and the plans can be checked in milliseconds (the rule: `comdml_ray.LAYERS`).
"""
