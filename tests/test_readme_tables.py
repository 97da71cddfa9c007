"""README.md and benchmarks/README.md show exactly the tables that benchmarks/results/*.csv hold.

Every block between `<!-- table: NAME -->` and `<!-- /table -->` must be what
`python benchmarks/tables.py --render NAME` (`comdml-ray results --render NAME`) prints from the committed CSV, and every
committed CSV must be shown somewhere.  Regenerate with `make results` (or one table's
command), then paste the rendered tables.
"""

import os

import pytest

from comdml_ray.cli.tables import RESULTS, TABLES, csv_path, main, readme_blocks, render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READMES = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "benchmarks", "README.md")]


def test_the_tables_are_read_and_written_in_this_checkout():
    """`comdml-ray results` lives in the package, its files in the checkout: benchmarks/results/ and the READMEs here."""
    import comdml_ray.cli.tables as tables

    assert (tables.RESULTS, list(tables.READMES)) == (os.path.join(ROOT, "benchmarks", "results"), READMES)


def blocks() -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for path in READMES:
        with open(path) as f:
            for name, block in readme_blocks(f.read()).items():
                out.setdefault(name, []).append((os.path.relpath(path, ROOT), block))
    return out


@pytest.mark.parametrize("name", sorted(TABLES))
def test_readme_table_matches_its_csv(name):
    shown = blocks().get(name, [])
    if not os.path.exists(csv_path(name)):
        assert not shown, f"{name} is shown in {shown[0][0]} but benchmarks/results/{name}.csv is not committed"
        return
    assert shown, f"benchmarks/results/{name}.csv is committed but no README shows it (<!-- table: {name} -->)"
    expected = render(name)
    for path, block in shown:
        assert block == expected, f"{path}: the {name} table differs from `python benchmarks/tables.py --render {name}`"


# The privacy tables: written by benchmarks/privacy.py (commands in benchmarks/README.md, section 6), not by tables.py yet.
OTHER_COMMANDS = {"privacy", "privacy-same-model", "privacy-int8"}


def test_every_results_csv_belongs_to_a_table():
    if os.path.isdir(RESULTS):
        stray = [f for f in os.listdir(RESULTS) if f.endswith(".csv") and f[:-4] not in TABLES and f[:-4] not in OTHER_COMMANDS]
        assert not stray, f"CSVs under benchmarks/results/ that no table command writes: {stray}"


def test_score_only_with_a_command_that_builds_nothing_is_refused_in_one_sentence(capsys):
    for argv in (
        ["--score-only", "--render", "headline-iid"],
        ["--collect", "headline-iid", "x", "--score-only"],
        ["--score-only", "--write-readmes"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "drop --score-only" in err and err.count("\n") == 1


def test_every_compare_tables_plots_are_committed():
    """One plot per setting of each compare table (<table>-<setting>.png, or <table>.png where the name ends in its setting)."""
    import pandas as pd

    from comdml_ray.cli.tables import plot_path

    for name, parts in TABLES.items():
        if parts[0][0] != "compare":
            continue
        for setting in dict.fromkeys(pd.read_csv(csv_path(name))["setting"]):
            assert os.path.exists(plot_path(name, setting)), plot_path(name, setting)
    assert plot_path("methods-links", "links").endswith(os.path.join("results", "methods-links.png"))
