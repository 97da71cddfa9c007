"""`comdml-ray results`: the tables behind README.md and benchmarks/README.md, one command per table.

    comdml-ray results headline-iid          # run what is missing (minutes to hours), write benchmarks/results/headline-iid.csv
    comdml-ray results --score-only headline-iid   # run nothing: the table from the finished runs
    comdml-ray results --status              # every table: its runs finished, and those still to run
    comdml-ray results --render headline-iid # print the markdown table README.md shows, from the CSV
    comdml-ray results --collect headline-iid DIR [DIR ...]   # the CSV from runs in other folders
    comdml-ray results --write-readmes       # put every rendered table into its <!-- table: NAME --> block

Owns `TABLES` (each table is one or more parts, each one invocation of `comdml-ray
compare`, or of `comdml-ray sensitivity`, with its flags), `run_table` (run what is
missing of one, every finished run reused; the parts' `runs.csv`, one row per seed,
setting, method and target, become `benchmarks/results/<table>.csv` with the plots),
`table_states` and `status` (what `run_table` would run, running nothing),
`collect`, `render` (a CSV as the markdown that the READMEs hold between
`<!-- table: NAME -->` and `<!-- /table -->`; `tests/test_readme_tables.py` checks that
they match), `write_readme` (the tables, and the results sentences of `cli/claims.py`)
and `main`.  The tables belong to a source checkout: the runs
(`benchmarks/results/runs/<table>/<part>/`, of which each run's rounds.csv and
summary.json are committed), CSVs, plots and READMEs are read and written in the checkout
this package lies in (`ROOT`, as with `pip install -e .`).
`benchmarks/tables.py` (and `make results`) is `main`.
"""

from __future__ import annotations

import math
import os
import sys

import pandas as pd

from comdml_ray.cli import claims
from comdml_ray.cli.claims import equal_time_sentence, marked_blocks, replace_block, target_label
from comdml_ray.results.yardstick import BUDGET_FRACTIONS, bootstrap_ci, plot_bands, reduction, sweep_time

PROG = "comdml-ray results"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout: comdml_ray/cli/ is two below it
BENCHMARKS = os.path.join(ROOT, "benchmarks")
RESULTS = os.path.join(BENCHMARKS, "results")
RUNS = os.path.join(RESULTS, "runs")
READMES = (os.path.join(ROOT, "README.md"), os.path.join(BENCHMARKS, "README.md"))

# 20 agents, paper heterogeneity, 600 training images per agent (the main job's share: 60,000 / 100).
# Every round is scored on the whole test set (--eval-samples 0): the tables' accuracies and times-to-target are exact.
BASE = ["--agents", "20", "--train-samples", "12000", "--eval-samples", "0", "--rounds", "30", "--rounds-factor", "1", "--no-progress"]
SEEDS = ["--seeds", "0", "1", "2"]
SEEDS5 = ["--seeds", "0", "1", "2", "3", "4"]
DIRICHLET = ["--partition", "dirichlet", "--alpha", "0.5"]
HEADLINE_METHODS = ["--algorithms", "local,comdml,local-deadline"]
SENSITIVITY = ["--agents", "20", "--train-samples", "12000", "--eval-samples", "0", "--no-progress"]


def with_value(args: list[str], flag: str, value: str) -> list[str]:
    """A copy of args with flag's value replaced (flag stays where it is)."""
    i = args.index(flag)
    return [*args[: i + 1], value, *args[i + 2 :]]


def equal_time(budget_s: float) -> list[str]:
    """Every method runs until it has spent budget_s virtual seconds (--rounds only caps it): the equal-time tables."""
    return [*with_value(BASE, "--rounds", "1000"), "--time-budget", f"{budget_s:g}"]


# Equal-time budgets: about twice ComDML's 30-round virtual time in each setting (compute, IID: 174 s; compute,
# Dirichlet: 197 s; links: 15 s, from the 30-round runs of the earlier same-work tables).
BUDGET_S = {"iid": 350.0, "dirichlet": 400.0, "links": 30.0}
# The long runs behind the near-converged target: the same-work rule (local runs --rounds, the others until they
# have spent local's virtual time), local 500 rounds (3x a plateau up to round 166).
LONG = with_value(BASE, "--rounds", "200")
# Each table is one or more parts (one `comdml-ray compare` or `comdml-ray sensitivity` each); a part's runs lie
# under benchmarks/results/runs/<table>/<part>/ and the table is built from all of its parts.
TABLES: dict[str, list[tuple[str, str, list[str]]]] = {
    "headline-iid": [("compare", "compute", equal_time(BUDGET_S["iid"]) + SEEDS5 + HEADLINE_METHODS + ["--partition", "iid"])],
    "headline-dirichlet": [("compare", "compute", equal_time(BUDGET_S["dirichlet"]) + SEEDS5 + HEADLINE_METHODS + DIRICHLET)],
    "headline-iid-long": [("compare", "compute", with_value(LONG, "--rounds", "500") + SEEDS + HEADLINE_METHODS + ["--partition", "iid"])],
    # ComDML and local-deadline get up to 400 rounds (ComDML does not reach the target in 200 on any seed).
    "headline-dirichlet-long": [("compare", "compute", with_value(LONG, "--rounds-factor", "2") + SEEDS + HEADLINE_METHODS + DIRICHLET)],
    # Every baseline, one table per setting (so that each fills in, and is shown rebuilt, on its own).
    "methods": [("compare", "compute", equal_time(BUDGET_S["iid"]) + SEEDS5 + ["--setting", "compute", "--algorithms", "all"])],
    "methods-links": [("compare", "links", equal_time(BUDGET_S["links"]) + SEEDS5 + ["--setting", "links", "--algorithms", "all"])],
    "scheduler-iid": [
        (
            "compare",
            "compute",
            equal_time(BUDGET_S["iid"]) + SEEDS + ["--partition", "iid", "--algorithms", "local,comdml-greedy,comdml-exact,local-deadline"],
        )
    ],
    "scheduler-dirichlet": [
        (
            "compare",
            "compute",
            equal_time(BUDGET_S["dirichlet"]) + SEEDS + DIRICHLET + ["--algorithms", "local,comdml-greedy,comdml-exact,local-deadline"],
        )
    ],
    # Trained local, ComDML and local-deadline at each speed (500 and 700 GFLOPS bracket the planner's predicted crossover).
    "sensitivity": [
        (
            "sensitivity",
            "compute",
            [*SENSITIVITY, "--rounds", "15", "--rounds-factor", "1", "--target", "75", "--gflops", "10,30,100,300,500,700,1000"],
        )
    ],
    # Fleet composition: the share of slow agents (the paper's slowest class among its fastest) and the spread of speeds.
    "fleet": [
        (
            "sensitivity",
            "compute",
            [
                "--agents",
                "100",
                "--rounds",
                "20",
                "--rounds-factor",
                "4",
                "--target",
                "80",
                "--no-progress",
                "--fleets",
                "two-class:0.1,two-class:0.25,two-class:0.5,two-class:0.75,paper,lognormal:0.5,lognormal:1.0",
            ],
        )
    ],
}
MARK = "<!-- table: {} -->"
END = "<!-- /table -->"


def csv_path(name: str) -> str:
    return os.path.join(RESULTS, f"{name}.csv")


def part_folder(name: str, part: str) -> str:
    """Where one part of a table keeps its runs: benchmarks/results/runs/<table>/<part> (committed: each run's rounds.csv and summary.json)."""
    return os.path.join(RUNS, name, part)


def plot_path(name: str, setting: str) -> str:
    """A compare table's plot of one setting: benchmarks/results/<table>-<setting>.png, or <table>.png where the table's name ends in its setting (methods-links)."""
    return os.path.join(RESULTS, f"{name}.png" if name.endswith(f"-{setting}") else f"{name}-{setting}.png")


def run_table(name: str, score_only: bool = False) -> str:
    """Run what is missing of one table (each part's comparison, reusing every finished run), then build its CSV and plots.

    Every part runs with `--reuse-runs` into `part_folder`: a run whose summary.json there
    has its configuration is not run again, a stopped one goes on from its checkpoint, so
    the committed runs make a fresh clone's `make results` a scoring pass of minutes, and a
    long table fills in run by run.  score_only: run nothing, score the finished runs.
    """
    outs = []
    for kind, part, args in TABLES[name]:
        out = part_folder(name, part)
        if kind == "compare":
            from comdml_ray.cli.compare import main
        else:
            from comdml_ray.cli.sensitivity import main
        rc = main([*args, "--out", out, "--score-only" if score_only and kind == "compare" else "--reuse-runs"])
        if rc != 0:
            raise SystemExit(rc)
        outs.append(out)
    return collect(name, outs)


def collect(name: str, dirs: list[str]) -> str:
    """benchmarks/results/<name>.csv from the runs.csv of one or more output folders (and their plots)."""
    os.makedirs(RESULTS, exist_ok=True)
    frames = [pd.read_csv(os.path.join(d, "runs.csv")) for d in dirs]
    runs = pd.concat(frames, ignore_index=True)
    runs.to_csv(csv_path(name), index=False)
    if TABLES[name][0][0] == "sensitivity":
        from comdml_ray.cli.sensitivity import plot, plot_fleet

        (plot_fleet if "fleet" in runs else plot)(runs, os.path.join(RESULTS, f"{name}.png"))
    else:
        bands = _curves(dirs, set(runs["setting"]), set(runs["method"]))
        levels = runs.groupby(["setting", "target"])["target_accuracy"].mean()
        for setting, curves in bands.items():
            plot_bands(curves, plot_path(name, setting), levels[setting].to_dict())
    return csv_path(name)


def table_states(name: str) -> list[tuple[str, str, str]]:
    """Every run of one table and what `run_table` would do with it, running nothing: (where, method, state).

    where names the run's seed and setting ("seed 1 links") or sweep point ("gflops300")
    within its part; state is `comparison.run_states`'s: finished, stopped (goes on from
    round N), to run (after local).  The configurations are the ones `run_table` runs: both
    go through `comparison.method_config`.
    """
    from comdml_ray.comparison import comparison_states, run_states

    states: list[tuple[str, str, str]] = []
    for kind, part, args in TABLES[name]:
        argv = [*args, "--out", part_folder(name, part)]
        if kind == "compare":
            from comdml_ray.cli.compare import parse

            cfg, plan = parse(argv)
            states += [(f"seed {seed} {setting}", method, state) for seed, setting, method, state in comparison_states(cfg, plan)]
        else:
            from comdml_ray.cli import sensitivity

            cfg, gflops, profiles, factor, _, _, fleets = sensitivity.parse(argv)
            for c, where in sensitivity.sweep_points(cfg, gflops, profiles, fleets):
                states += [(os.path.basename(where), m, state) for m, state in run_states(c, sensitivity.POINT_METHODS, where, factor)]
    return states


def status(name: str) -> str:
    """How much of one table is made: its runs finished out of all, then the others, a line per seed and setting (or point) and state."""
    states = table_states(name)
    todo: dict[tuple[str, str], list[str]] = {}
    for where, method, state in states:
        if state != "finished":
            todo.setdefault((where, state), []).append(method)
    done = sum(state == "finished" for _, _, state in states)
    head = f"{name}: {done} of {len(states)} runs finished under {os.path.relpath(os.path.join(RUNS, name), ROOT)}"
    return "\n".join([head, *(f"  {where}, {state}: {', '.join(methods)}" for (where, state), methods in todo.items())])


def _curves(dirs: list[str], settings: set[str], methods: set[str]) -> dict[str, dict[str, list[pd.DataFrame]]]:
    """Every run's rounds.csv under the output folders (DIR/[seedS/]SETTING/METHOD/), by setting and method."""
    out: dict[str, dict[str, list[pd.DataFrame]]] = {}
    for d in dirs:
        for root, _, files in sorted(os.walk(d)):
            setting, method = os.path.basename(os.path.dirname(root)), os.path.basename(root)
            if "rounds.csv" in files and setting in settings and method in methods:
                out.setdefault(setting, {}).setdefault(method, []).append(pd.read_csv(os.path.join(root, "rounds.csv")))
    return out


def _pm(values: pd.Series, scale: float = 100.0, digits: int = 1, unit: str = "") -> str:
    """mean ± std of the seeds that have a value, with (reached/seeds) when some have none."""
    v = values.dropna() * scale
    if v.empty:
        return f"not reached (0/{len(values)})"
    text = f"{v.mean():.{digits}f}{unit}" + (f" ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else "")
    return text + (f" ({len(v)}/{len(values)})" if len(v) < len(values) else "")


def _header(head: list[str]) -> list[str]:
    """A markdown table's header row and separator."""
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]


def _ci(values: pd.Series, digits: int = 2) -> str:
    """mean [95% bootstrap interval] of the seeds that have a value (the count when not all do)."""
    v = values.dropna()
    if v.empty:
        return f"not reached (0/{len(values)})"
    lo, hi = bootstrap_ci(v.tolist())
    text = f"{v.mean():.{digits}f}" + ("" if math.isnan(lo) else f" [{lo:.{digits}f}, {hi:.{digits}f}]")
    return text + (f" ({len(v)}/{len(values)})" if len(v) < len(values) else "")


def render_compare(runs: pd.DataFrame) -> str:
    """One row per (setting, method): time to each target, local-best ratio with its interval, accuracies; then the comparison sentences.

    Equal-time tables (their CSV has the budget columns) report time to target on the
    smoothed curve with the raw figure beside it, and accuracy at a quarter, half and all
    of the budget; the sentences under the table name who is ahead at equal virtual time.
    """
    targets = list(dict.fromkeys(runs["target"]))
    best = next((t for t in targets if t.startswith("local-best")), targets[-1])
    equal_time = claims.equal_time(runs)
    ttt, ratio, _ = claims.time_to_target_columns(runs)
    smooth = ttt == "time_to_target_smoothed_s"
    head = ["setting", "method"] + [f"time to {target_label(t, runs)} (s)" for t in targets] + [f"x local ({best}), 95% CI"]
    if equal_time:
        budget = runs.groupby("setting")["time_budget_s"].first()
        head += [f"acc at {int(100 * share)}% of budget %" for share in BUDGET_FRACTIONS.values()]
    else:
        head += ["final acc %", "run ends at (s)", "acc at common time %"]
    lines = _header(head)
    for (setting, method), g in runs.groupby(["setting", "method"], sort=False):
        by_t = {t: g[g["target"] == t] for t in targets}
        one = by_t[targets[0]]
        cells = [setting, method]
        for t in targets:
            cell = _pm(by_t[t][ttt], 1, 1 if by_t[t][ttt].max() < 100 else 0)
            if smooth and by_t[t]["time_to_target_s"].notna().any():
                cell += f" (raw {by_t[t]['time_to_target_s'].mean():.{1 if by_t[t]['time_to_target_s'].max() < 100 else 0}f})"
            cells.append(cell)
        cells.append(_ci(by_t[best][ratio]))
        if equal_time:  # "-": no evaluation yet by that time (a method's first round ends later)
            cells += [_pm(one[f"accuracy_at_{name}"]) if one[f"accuracy_at_{name}"].notna().any() else "-" for name in BUDGET_FRACTIONS]
        else:
            cells += [_pm(one["final_accuracy"]), _pm(one["virtual_time_s"], 1, 0), _pm(one["accuracy_at_common_time"])]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted(runs["seed"].unique())
    lines.append("")
    lines.append(
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}); mean ± std over the seeds that reached the target (count shown when not all did); "
        "x local: per-seed ratio to local's time, mean and 95% bootstrap interval over seeds."
    )
    if smooth and not equal_time:
        lines.append("Times to target are on the smoothed curve (the mean of the last 3 evaluations), the raw first crossing beside.")
    if equal_time:
        lines.append(
            "Equal time: every method ran until it had spent "
            + ", ".join(f"{b:g} s ({s})" for s, b in budget.items())
            + " of virtual time; times to target are on the smoothed curve (the mean of the last 3 evaluations), the raw first crossing beside."
        )
        lines += [
            equal_time_sentence(runs, setting, best)
            for setting in budget.index
            if "comdml" in set(runs[runs["setting"] == setting]["method"])
        ]
    local = runs[runs["method"] == "local"].drop_duplicates(["setting", "seed"])
    if len(local) and not equal_time:
        plateau = ", ".join(f"{int(r.local_plateau_round)}" for r in local.itertuples())
        long = "met" if local["local_long_enough"].all() else "not met"
        lines.append(
            f"Local came within 0.5 pp of its best at round {plateau} of {int(local['local_rounds'].iloc[0])} "
            f"(per seed); the long-run rule (at least 3x that) is {long}."
        )
    return "\n".join(lines)


def render_sensitivity(runs: pd.DataFrame) -> str:
    head = [
        "profile",
        "reference GFLOPS",
        "compute / communication",
        "ComDML round advantage",
        "local time to target (s)",
        "ComDML time to target (s)",
        "ComDML time / local's",
        "ComDML's reduction",
    ]
    deadline = "deadline_time_s" in runs  # sweeps made before local-deadline joined them have no such columns
    head += ["local-deadline round advantage", "local-deadline time / local's", "local-deadline's reduction"] if deadline else []
    lines = _header(head)
    runs = runs.sort_values(["profile", "reference_gflops"])
    local, comdml = sweep_time(runs, "local"), sweep_time(runs, "comdml")
    dtimes = sweep_time(runs, "deadline") if deadline else local * math.nan

    def red(t: float, lt: float) -> str:
        return "-" if math.isnan(t) or not lt else reduction(t, lt)

    for r, lt, ct, dt in zip(runs.itertuples(), local, comdml, dtimes, strict=True):
        gf = "-" if r.profile == "measure" else f"{r.reference_gflops:g}"
        row = (
            f"| {r.profile} | {gf} | {r.compute_comm_ratio:.2f} | {r.round_advantage:.2f}x | {_s(lt, r.local_time_s)} | "
            f"{_s(ct, r.comdml_time_s)} | {_ratio(ct, lt)} | {red(ct, lt)} |"
        )
        lines.append(row + (f" {r.deadline_round_advantage:.2f}x | {_ratio(dt, lt)} | {red(dt, lt)} |" if deadline else ""))
    lines.append("")
    lines.append(
        f"Target: {runs['target'].iloc[0]} ({100 * runs['target_accuracy'].mean():.1f}% on average), seed {runs['seed'].iloc[0]}"
        + (
            "; times on the smoothed curve (the mean of the last 3 evaluations), the raw first crossing beside."
            if "local_time_smoothed_s" in runs
            else "."
        )
    )
    if len(runs[runs["profile"] == "flops"]) > 1:
        lines.append(claims.crossover(runs))
    return "\n".join(lines)


def render_fleet(runs: pd.DataFrame) -> str:
    """The fleet-composition table: per fleet, each method's round length and time to the target against local's."""
    head = [
        "fleet",
        "local time to target (s)",
        "ComDML round advantage",
        "ComDML time / local's",
        "local-deadline round advantage",
        "local-deadline time / local's",
    ]
    lines = _header(head)
    local, comdml, deadline = (sweep_time(runs, who) for who in ("local", "comdml", "deadline"))
    for r, lt, ct, dt in zip(runs.itertuples(), local, comdml, deadline, strict=True):
        lines.append(
            f"| {r.fleet} | {_s(lt, r.local_time_s)} | {r.round_advantage:.2f}x | {_ratio(ct, lt)} | "
            f"{r.deadline_round_advantage:.2f}x | {_ratio(dt, lt)} |"
        )
    lines.append("")
    lines.append(
        f"{int(runs['local_rounds'].iloc[0])} rounds of local, the others on the same clock; target {runs['target'].iloc[0]} "
        f"({100 * runs['target_accuracy'].mean():.1f}%), seed {runs['seed'].iloc[0]}, one run per fleet. two-class:S: a share S of the "
        "agents in the paper's slowest class, the rest in its fastest; lognormal:SIGMA: log-normal speeds of that spread."
        + (
            " Times on the smoothed curve (the mean of the last 3 evaluations), local's raw first crossing beside."
            if "local_time_smoothed_s" in runs
            else ""
        )
    )
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return "not reached" if math.isnan(a) or math.isnan(b) or not b else f"{a / b:.2f}"


def _s(x: float, raw: float | None = None) -> str:
    """A time to target in seconds; with raw (the first crossing) beside when it differs from x, the smoothed time."""
    text = "not reached" if x is None or math.isnan(x) else f"{x:.1f}"
    if raw is not None and not math.isnan(raw) and not (x is not None and not math.isnan(x) and abs(x - raw) < 0.05):
        text += f" (raw {raw:.1f})"
    return text


def render(name: str) -> str:
    runs = pd.read_csv(csv_path(name))
    if "fleet" in runs:
        return render_fleet(runs)
    return render_sensitivity(runs) if TABLES[name][0][0] == "sensitivity" else render_compare(runs)


def readme_blocks(text: str) -> dict[str, str]:
    """The tables a README holds between <!-- table: NAME --> and <!-- /table -->, by name."""
    return marked_blocks(text, TABLES, MARK, END)


def write_readme(path: str) -> list[str]:
    """Replace every table and claims block of a README with what its CSVs render to; returns the names updated."""
    with open(path) as f:
        text = f.read()
    names = list(readme_blocks(text))
    for name in names:
        text = replace_block(text, MARK.format(name), END, render(name))
    for name in claims.claim_blocks(text):
        text = replace_block(text, claims.MARK.format(name), claims.END, claims.render_claim(name, RESULTS))
        names.append(name)
    with open(path, "w") as f:
        f.write(text)
    return names


USAGE = """usage: {prog} [--score-only] NAME
       {prog} --status [NAME ...]
       {prog} --render NAME
       {prog} --collect NAME DIR [DIR ...]
       {prog} --write-readmes

Run what is missing of one table behind README.md and benchmarks/README.md (every finished
run under benchmarks/results/runs/NAME is reused, a stopped one continued) and write
benchmarks/results/NAME.csv and its plots (--score-only: run nothing, build them from the
finished runs); say which of its runs are finished and which are still to run or stopped
part way (--status; every table without NAME); print its markdown (--render); build its
CSV from other output folders (--collect); or put every rendered table into the READMEs'
<!-- table: NAME --> blocks (--write-readmes).

tables: {tables}"""


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE.format(prog=prog, tables=", ".join(TABLES)))
        return 0
    if not os.path.isdir(BENCHMARKS) or not os.path.isfile(READMES[0]):
        print(
            f"error: the results tables live in a source checkout (benchmarks/results/, README.md), and {ROOT} is none: "
            "run this in a clone of the repository installed with `pip install -e .`.",
            file=sys.stderr,
        )
        return 2
    score_only = "--score-only" in argv
    argv = [a for a in argv if a != "--score-only"]
    if score_only and argv and argv[0] in ("--write-readmes", "--render", "--collect", "--status"):
        print(f"error: --score-only applies to building a table, and {argv[0]} builds none: drop --score-only.", file=sys.stderr)
        return 2
    if argv and argv[0] == "--status":
        names = argv[1:] or list(TABLES)
        unknown = [n for n in names if n not in TABLES]
        if unknown:
            print(f"error: no table named {unknown[0]}: --status takes none (every table) or one of {', '.join(TABLES)}.", file=sys.stderr)
            return 2
        print("\n".join(status(n) for n in names))
        return 0
    if argv and argv[0] == "--write-readmes":
        for path in READMES:
            print(path, write_readme(path))
        return 0
    if not argv or (argv[-1] not in TABLES and argv[0] not in ("--collect",)):
        print(
            f"error: name a table: {', '.join(TABLES)} (optionally after --score-only or --render, or --collect NAME DIR...).",
            file=sys.stderr,
        )
        return 2
    if argv[0] == "--render":
        print(render(argv[1]))
    elif argv[0] == "--collect":
        if len(argv) < 3 or argv[1] not in TABLES:
            print(f"error: --collect NAME DIR [DIR ...], NAME one of {', '.join(TABLES)}.", file=sys.stderr)
            return 2
        print(collect(argv[1], argv[2:]))
    else:
        print(run_table(argv[0], score_only=score_only))
    return 0
