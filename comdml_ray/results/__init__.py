"""Results as data: the rows of a run, its output folder's files, and the one yardstick.

Owns
- `rows`: the row types of rounds.csv and agents.csv, built in one place for every loop;
- `report`: the output folder's files and the summary a user reads;
- `yardstick`: targets, time-to-target and accuracy at equal virtual time, for every method.

May import: `method` (the messages its rows are built from), `timing`,
`comdml_ray.config`, `comdml_ray.storage`, numpy, pandas, matplotlib
(the rule: `comdml_ray.LAYERS`).  No torch, no Ray.
"""
