"""`comdml-ray compare`: every method on the same seeds, data, agents, heterogeneity, clock and yardstick.

    comdml-ray compare --agents 20                                  # local vs comdml, paper stragglers
    comdml-ray compare --agents 20 --partition dirichlet --alpha 0.5 --seeds 0 1 2
    comdml-ray compare --agents 20 --setting links                  # DivShare's slow-link setting
    comdml-ray compare --agents 20 --setting both --algorithms all  # + gossip variants and the baselines

Every flag of `comdml-ray run` applies to all runs (same seed -> same shards,
same initial model, same profiles, same scored agents).  Settings:
- compute: `--heterogeneity paper` (compute stragglers, the ComDML paper's preset);
- links:   `--heterogeneity uniform --slow-link-share 0.5` (DivShare's setting:
           equal compute, half the agents on 5x slower links).
Methods (`--algorithms`): the algorithms, plus `local-gossip` and `comdml-gossip`
(gossip on the baselines' `--topology` instead of the exact all-reduce) and
`comdml-greedy` / `comdml-exact` (the scheduler); `all` = the six algorithms and
the two gossip variants.
Same clock: `local` runs --rounds rounds; every other method then runs until it
has spent the same virtual time, for at most --rounds-factor x --rounds rounds.
One yardstick (`comdml_ray/results/yardstick.py`): every method is scored on the mean test
accuracy of the same seeded sample of --eval-agents agents' own models; time to
each of --targets is read on that.  With several --seeds it reports mean and std.
`--reuse-runs` skips a run whose summary.json in --out has its configuration (wherever the
folder was made; a field the run predates counts as its default, `finished_run`), and
continues one that was stopped (Ctrl-C, a killed driver) from its last checkpoint when
that checkpoint has the run's configuration (`stopped_run`): an interrupted comparison
or `make results` goes on where it stopped;
`--score-only` runs nothing and scores the finished runs in --out (a seed and setting
with a method still missing is left out), e.g. while a long table is still running.
Writes to --out: `runs.csv` (seed x setting x method x target), `summary.csv`
(mean, std, seeds that reached the target) and `comparison-<setting>.png`
(accuracy against virtual time, mean and a +-1 std band per method).

Owns the comparison's flags (`parse`: the run's flags of `cli.run.build_parser` plus its
own, into a `RunConfig` and a `comparison.ComparePlan`) and `main`; what a comparison
does is `comdml_ray.comparison`'s.  `benchmarks/compare.py` is `main` under its own prog name.
"""

from __future__ import annotations

from comdml_ray.cli.run import build_parser, exit_code_of
from comdml_ray.comparison import (
    DEFAULT_METHODS,
    DEFAULT_OUT,
    DEFAULT_TARGETS,
    ComparePlan,
    check_comparison,
    plan_comparison,
    run_comparison,
)
from comdml_ray.config import RunConfig
from comdml_ray.results.yardstick import METHODS

PROG = "comdml-ray compare"
OWN_FLAGS = ("no_progress", "algorithms", "setting", "rounds_factor", "seeds", "targets", "reuse_runs", "score_only")


def parse(argv: list[str] | None, prog: str = PROG) -> tuple[RunConfig, ComparePlan]:
    """The shared RunConfig and the plan of a comparison from its flags (ConfigError, one sentence, on a bad choice)."""
    p = build_parser(prog)
    p.description = "Run several methods on the same agents, data, clock and yardstick; print and save a comparison."
    p.add_argument(
        "--algorithms",
        default=DEFAULT_METHODS,
        help=f"comma-separated, from {', '.join(METHODS)}; 'all' for the algorithms and the gossip variants",
    )
    p.add_argument("--setting", default="compute", help="compute (paper stragglers), links (slow links) or both")
    p.add_argument(
        "--rounds-factor",
        type=float,
        default=4.0,
        help="same clock: every other method runs until it has spent local's virtual time, for at most this many times --rounds rounds",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="run every method once per seed (default: --seed alone)")
    p.add_argument(
        "--targets",
        default=DEFAULT_TARGETS,
        help="accuracies to time: percent (75), fraction (0.8) or local-best-D (local's best over its run minus D points, per seed)",
    )
    p.add_argument(
        "--reuse-runs",
        action="store_true",
        help="reuse a run already in --out whose summary.json has exactly this run's configuration, and continue a stopped one from its last checkpoint (an interrupted or extended comparison)",
    )
    p.add_argument(
        "--score-only",
        action="store_true",
        help="run nothing: score the runs already in --out (e.g. of a comparison still running or stopped); a seed and setting with a method missing is left out",
    )
    a = p.parse_args(argv)
    fields = {k: v for k, v in vars(a).items() if k not in OWN_FLAGS}
    fields["out"] = a.out or DEFAULT_OUT
    cfg = RunConfig(**fields, progress=not a.no_progress)
    plan = plan_comparison(cfg, a.algorithms, a.setting, a.rounds_factor, a.seeds, a.targets, a.reuse_runs, a.score_only)
    return cfg, plan


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    def job() -> None:
        cfg, plan = parse(argv, prog)
        check_comparison(cfg, plan)
        run_comparison(cfg, plan)

    return exit_code_of(job)
