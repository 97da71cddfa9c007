"""The READMEs' results sentences are rendered from the committed CSVs, and README.md's results section states no other figure.

Every `<!-- claims: NAME -->` block, in README.md or benchmarks/README.md, must be what `comdml_ray/cli/claims.py` renders from
benchmarks/results/*.csv (`comdml-ray results --write-readmes` writes them).  Outside the
rendered tables and claims, the README's "Results" section may name set-up facts (agents,
images, rounds, seeds, GFLOPS) but no result: a number there would not follow its CSV.
"""

import os
import re

import pandas as pd

from comdml_ray.cli.claims import CLAIMS, claim_blocks, render_claim
from comdml_ray.cli.tables import END, MARK, RESULTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
SETUP = r"-?(agents?|images|rounds?|seeds?|GFLOPS|nodes?|cores?)\b"


BENCH_README = os.path.join(ROOT, "benchmarks", "README.md")


def readme(path: str = README) -> str:
    with open(path) as f:
        return f.read()


def test_every_claims_block_is_what_its_csvs_render_to():
    shown = {path: claim_blocks(readme(path)) for path in (README, BENCH_README)}
    assert "readme-results" in shown[README]
    assert set(shown[README]) | set(shown[BENCH_README]) == set(CLAIMS), "every results sentence set is shown in a README"
    for path, blocks in shown.items():
        for name, block in blocks.items():
            assert block == render_claim(name, RESULTS), (
                f"{os.path.relpath(path, ROOT)}'s {name} sentences differ from their CSVs: run `comdml-ray results --write-readmes`"
            )


def stray_figures(section: str) -> list[str]:
    """Numbers in a results section outside rendered blocks, code, links and images, that are not set-up facts."""
    text = re.sub(r"^Measured on:.*$", "", section, flags=re.M)  # the machine a table was measured on
    text = re.sub(r"§\d+(\.\d+)*", "", text)  # section references
    text = re.sub(r"<!-- table: [\w-]+ -->.*?" + re.escape(END), "", text, flags=re.S)
    text = re.sub(r"<!-- claims: [\w-]+ -->.*?<!-- /claims -->", "", text, flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"!?\[[^\]]*\]\([^)]*\)", "", text)  # links and images
    text = re.sub(r"`[^`]*`", "", text)
    return [m.group(0).strip() for m in re.finditer(r"\d[\d,.]*\s*(\S+)?", text) if not re.match(SETUP, m.group(1) or "")]


def test_the_results_section_has_no_figure_outside_the_rendered_blocks():
    text = readme()
    start = text.index("## Results")
    section = text[start : text.index("\n## ", start + 1)]
    assert MARK.format("headline-iid") in section
    assert stray_figures(section) == []


def readings(text: str) -> dict[str, str]:
    """The reading under each rendered table of benchmarks/README.md: from the table's end to the next heading or table."""
    out = {}
    for m in re.finditer(r"<!-- table: ([\w-]+) -->", text):
        end = text.index(END, m.end()) + len(END)
        stop = re.search(r"^#|<!-- table: ", text[end:], flags=re.M)
        out[m.group(1)] = text[end : end + stop.start() if stop else len(text)]
    return out


def test_the_readings_under_the_benchmark_tables_have_no_figure_outside_the_rendered_blocks():
    shown = readings(readme(BENCH_README))
    assert {"headline-iid", "headline-iid-long", "sensitivity", "methods", "methods-links"} <= set(shown)
    for name, text in shown.items():
        assert stray_figures(text) == [], f"benchmarks/README.md, under the {name} table: figures not rendered from its CSV"


def test_a_stray_figure_is_caught():
    assert stray_figures("ComDML reaches 80% in 52 s (20 agents, 3 seeds).") == ["80%", "52 s"]
    assert stray_figures("<!-- claims: x -->\n- 0.34x\n<!-- /claims -->\n20 agents, `make results`") == []


def test_equal_time_sentences_name_the_leader_from_the_interval(tmp_path):
    """The bullets an equal-time table gets once its CSV is rebuilt: the verdict follows the bootstrap interval of the per-seed difference."""
    from comdml_ray.cli import claims

    runs = pd.read_csv(os.path.join(RESULTS, "headline-iid.csv"))
    as_scheduler = runs.replace({"method": {"comdml": "comdml-greedy", "local-deadline": "comdml-exact"}})
    as_scheduler.to_csv(tmp_path / "scheduler-iid.csv", index=False)
    text = claims.bench_scheduler("scheduler-iid")(str(tmp_path))
    assert "Greedy against exact (5 seeds" in text.replace("**", "") and "on 0 of 5 seeds" in text
    ahead = runs.copy()
    rows = (ahead["method"] == "comdml").to_numpy()
    ahead.loc[rows, "accuracy_at_budget"] += 0.05  # ComDML 5 points up on every seed
    ahead.to_csv(tmp_path / "methods.csv", index=False)
    assert "at the budget" in claims.bench_methods("methods")(str(tmp_path)).lower()
    assert ": ComDML is ahead" in claims.equal_time_sentence(ahead, "compute", "local-best-0.5")
    assert "neither is ahead" in claims.equal_time_sentence(runs, "compute", "local-best-0.5")


def test_the_long_tables_bar_verdict_follows_the_ratios_and_the_long_run_rule():
    from comdml_ray.cli.claims import long_details, time_to_target_columns

    runs = pd.read_csv(os.path.join(RESULTS, "headline-iid-long.csv"))
    assert "For ComDML the 0.29x bar is **missed** on the mean and on 2 seeds of 3" in long_details(runs)
    fast = runs.copy()
    fast.loc[fast["method"] == "comdml", time_to_target_columns(runs)[1]] = 0.2  # the column the reading uses
    assert "For ComDML the 0.29x bar is **met** on the mean;" in long_details(fast)
    short = fast.assign(local_long_enough=False)
    assert "near-final" in long_details(short) and "not tested here" in long_details(short)


def test_a_method_that_reaches_the_target_sooner_than_comdml_is_named_and_misses_are_counted():
    """DivShare-like: a method other than the rival at the budget reaches the target first; a method that never does is "not reached"."""
    from comdml_ray.cli import claims

    runs = pd.read_csv(os.path.join(RESULTS, "headline-iid.csv"))
    fast = runs[runs["method"] == "local"].assign(method="divshare", accuracy_at_budget=0.5)
    fast["time_to_target_smoothed_s"] = runs.loc[runs["method"] == "comdml", "time_to_target_smoothed_s"].to_numpy() / 2
    text = claims.equal_time_sentence(pd.concat([runs, fast]), "compute", "local-best-0.5")
    assert "; divshare reaches it first, in 0.50x ComDML's time (5 seeds" in text
    assert "reaches it first" not in claims.equal_time_sentence(runs, "compute", "local-best-0.5")
    assert claims._ratio(pd.Series([float("nan")] * 3)) == "not reached (0/3 seeds)"
    assert claims._ratio(pd.Series([0.5, float("nan"), 0.5])).endswith("(2/3 seeds)")


def test_a_method_whose_runs_are_comdmls_own_is_named_so_and_the_rival_is_the_best_of_the_others():
    """Slow links, equal compute: ComDML forms no pairs and the deadline cuts nothing, so local's runs are ComDML's; the verdict is read against the next method."""
    from comdml_ray.cli import claims

    runs = pd.read_csv(os.path.join(RESULTS, "headline-iid.csv"))
    comdml = runs[runs["method"] == "comdml"]
    twin = pd.concat([runs[runs["method"] != "local-deadline"], comdml.assign(method="local-deadline")])
    text = claims.equal_time_sentence(twin, "compute", "local-best-0.5")
    assert "local-deadline made ComDML's run on every seed" in text
    assert "the best of the other methods is local," in text and ": ComDML is ahead" in text
    assert claims.same_runs(runs) == []  # one seed's difference is enough to tell them apart
    off = twin.copy()
    rows = ((off["method"] == "local-deadline") & (off["seed"] == 4)).to_numpy()
    off.loc[rows, "rounds"] += 1
    assert claims.same_runs(off[off["target"] == "local-best-0.5"]) == []


def test_comdml_and_local_deadline_rounds_are_as_the_headline_readings_say():
    """benchmarks/README.md: with IID data their rounds are the same length on every round and seed; under label skew ComDML's are the longer."""
    runs = os.path.join(RESULTS, "runs")

    def round_lengths(table: str, seed: int, method: str) -> pd.Series:
        return pd.read_csv(os.path.join(runs, table, "compute", f"seed{seed}", "compute", method, "rounds.csv"))["round_virtual_s"]

    for seed in range(5):
        a, b = round_lengths("headline-iid", seed, "comdml"), round_lengths("headline-iid", seed, "local-deadline")
        assert len(a) == len(b) and (a - b).abs().max() < 1e-9, f"headline-iid seed {seed}: round lengths differ"
        a, b = round_lengths("headline-dirichlet", seed, "comdml"), round_lengths("headline-dirichlet", seed, "local-deadline")
        assert a.mean() > b.mean(), f"headline-dirichlet seed {seed}: ComDML's rounds are not the longer"
    for seed in range(3):  # the long tables' readings say the same
        a, b = round_lengths("headline-iid-long", seed, "comdml"), round_lengths("headline-iid-long", seed, "local-deadline")
        assert len(a) == len(b) and (a - b).abs().max() < 1e-9, f"headline-iid-long seed {seed}: round lengths differ"
        a, b = round_lengths("headline-dirichlet-long", seed, "comdml"), round_lengths("headline-dirichlet-long", seed, "local-deadline")
        assert a.mean() > b.mean(), f"headline-dirichlet-long seed {seed}: ComDML's rounds are not the longer"


def test_a_per_seed_ratio_that_rounds_to_the_bar_shows_which_side_it_is_on():
    """0.2918 misses the 0.29x bar; printed as "0.29" the verdict "missed" would read as wrong."""
    from comdml_ray.cli.claims import _bar_verdict, _seeds_of

    r = pd.Series([0.2918, 0.38, 0.24])
    assert _seeds_of(r) == "0.292, 0.38, 0.24"
    assert "missed** on the mean and on 2 seeds of 3" in _bar_verdict(r, near_converged=True)
    assert _seeds_of(pd.Series([0.29, float("nan")])) == "0.29, not reached"


def test_the_scheduler_sentence_names_local_deadline_beside_greedy_and_exact(tmp_path):
    from comdml_ray.cli import claims

    runs = pd.read_csv(os.path.join(RESULTS, "headline-iid.csv"))
    com = runs[runs["method"] == "comdml"]
    table = pd.concat([runs.replace({"method": {"comdml": "comdml-greedy"}}), com.assign(method="comdml-exact")])
    table.to_csv(tmp_path / "scheduler-iid.csv", index=False)
    text = claims.bench_scheduler("scheduler-iid")(str(tmp_path))
    assert "on 5 of 5 seeds" in text  # exact is greedy's own run here
    assert "`local-deadline` beside them: 85.7 ± 0.4% at the budget (greedy minus `local-deadline` -0.4 pp" in text
