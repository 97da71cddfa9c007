"""The results sentences of README.md, rendered from the committed CSVs as the tables are.

Owns `CLAIMS` (name -> a function of the CSVs under benchmarks/results/ that returns
markdown) and `render_claim`, and the README block marks both it and the tables use
(`marked_blocks`, `replace_block`).  A README holds each between `<!-- claims: NAME -->` and
`<!-- /claims -->`; `comdml-ray results --write-readmes` fills them and
`tests/test_readme_claims.py` checks both that every block is what its CSVs render to and
that the README's results section has no number outside a rendered block (set-up facts
such as "20 agents" aside).  So a sentence cannot outlive its table: when a CSV changes,
the sentence changes with it, words included (who is ahead is computed, not written).

Figures: mean ± std over seeds as the tables print them; ratios as the mean of per-seed
ratios with their 95% bootstrap interval (`yardstick.bootstrap_ci`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pandas as pd

from comdml_ray.results.yardstick import bootstrap_ci

BAR = 0.29  # the paper's "up to 71% less" time: ComDML's bar against local's time to a near-converged target
MARK = "<!-- claims: {} -->"
END = "<!-- /claims -->"


def _csv(results: str, name: str) -> pd.DataFrame:
    return pd.read_csv(os.path.join(results, f"{name}.csv"))


def _pm(v: pd.Series, scale: float = 100.0, digits: int = 1) -> str:
    v = v.dropna() * scale
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def _ratio(v: pd.Series) -> str:
    v = v.dropna()
    lo, hi = bootstrap_ci(v.tolist())
    return f"{v.mean():.2f} (95% CI {lo:.2f}-{hi:.2f})"


def _rows(runs: pd.DataFrame, method: str, target: str | None = None, setting: str = "compute") -> pd.DataFrame:
    target = target or runs["target"].iloc[0]
    return runs[(runs["method"] == method) & (runs["target"] == target) & (runs["setting"] == setting)].sort_values("seed")


def _best_target(runs: pd.DataFrame) -> str:
    return next(t for t in runs["target"].unique() if t.startswith("local-best"))


def _ahead(a_name: str, a: pd.Series, b_name: str, b: pd.Series) -> str:
    """ "A is ahead" or "B is ahead" from the means (the seeds' spread is stated beside it)."""
    return f"{a_name} is ahead" if a.mean() > b.mean() else f"{b_name} is ahead" if b.mean() > a.mean() else "they are level"


def readme_results(results: str) -> str:
    """The bullets under README.md's headline table."""
    long = _csv(results, "headline-iid-long")
    loc, com = _rows(long, "local"), _rows(long, "comdml")
    best = _best_target(long)
    r = _rows(long, "comdml", best)["ratio_vs_local"]
    missed = int((r > BAR).sum())
    verdict = (
        f'**misses the {BAR}x bar** (the paper\'s "up to 71% less") on the mean and on {missed} seed{"s" if missed != 1 else ""} of {len(r)}'
        if r.mean() > BAR
        else f'**meets the {BAR}x bar** (the paper\'s "up to 71% less") on the mean'
        + (f", missing it on {missed} seed{'s' if missed != 1 else ''} of {len(r)}" if missed else "")
    )
    iid, dir30, dirlong = _csv(results, "headline-iid"), _csv(results, "headline-dirichlet"), _csv(results, "headline-dirichlet-long")
    sched = _csv(results, "scheduler-dirichlet")
    s_loc, s_com = _rows(sched, "local"), _rows(sched, "comdml-greedy")
    d30 = _rows(dir30, "comdml", _best_target(dir30))["ratio_vs_local"]
    worst = d30.idxmax()
    methods = _csv(results, "methods")
    m_com, m_div = _rows(methods, "comdml", "75"), _rows(methods, "divshare", "75")
    seeds_ahead = int((m_div["accuracy_at_common_time"].to_numpy() > m_com["accuracy_at_common_time"].to_numpy()).sum())
    t = {(m, tg): _rows(methods, m, tg)["time_to_target_s"].mean() for m in ("comdml", "divshare") for tg in ("75", "80")}
    links = _rows(methods, "comdml", "75", "links")
    sens = _csv(results, "sensitivity")
    flops = sens[sens["profile"] == "flops"].sort_values("reference_gflops")
    red = {g: 100 * (1 - c / lt) for g, c, lt in zip(flops["reference_gflops"], flops["comdml_time_s"], flops["local_time_s"], strict=True)}
    g_lo, g_hi = min(red), max(red)
    mid = [g for g in red if g not in (g_lo, g_hi)]
    g_mid = max(mid) if mid else g_lo
    lines = [
        f"- **Equal virtual time:** at ComDML's end ({com['virtual_time_s'].mean():,.0f} s) ComDML is at "
        f"{_pm(com['accuracy_at_common_time'])}%, local at {_pm(loc['accuracy_at_common_time'])}%. **Equal rounds** "
        f"({int(loc['rounds'].iloc[0])} each): {_ahead('ComDML', com['final_accuracy'], 'local', loc['final_accuracy'])}, "
        f"{_pm(loc['final_accuracy'])}% (local) against {_pm(com['final_accuracy'])}% (ComDML), local having used "
        f"{loc['virtual_time_s'].mean():,.0f} s to ComDML's {com['virtual_time_s'].mean():,.0f} s.",
        f"- **Time to local's near-converged accuracy** (its best minus 0.5 points): {_ratio(r)} of local's time "
        f"({', '.join(f'{x:.2f}' for x in r)} per seed), so ComDML {verdict}. To near-final targets ({len(d30)} seeds each): "
        f"{_ratio(_rows(iid, 'comdml', _best_target(iid))['ratio_vs_local'])} over local's {int(_rows(iid, 'local')['rounds'].iloc[0])} IID rounds; "
        f"under Dirichlet 0.5 label skew {_ratio(d30)} over local's {int(_rows(dir30, 'local')['rounds'].iloc[0])} rounds "
        f"(seed {int(dir30.loc[worst, 'seed'])}: {d30.max():.2f}) and "
        f"{_ratio(_rows(dirlong, 'comdml', _best_target(dirlong))['ratio_vs_local'])} over its {int(_rows(dirlong, 'local')['rounds'].iloc[0])}. "
        f"At {int(s_loc['rounds'].iloc[0])} equal rounds under label skew "
        f"{_ahead('ComDML', s_com['final_accuracy'], 'local', s_loc['final_accuracy'])} "
        f"({_pm(s_loc['final_accuracy'])}% local against {_pm(s_com['final_accuracy'])}% ComDML).",
        f"- **Against every baseline** ({len(m_com)} seeds): with compute stragglers "
        f"{_ahead('ComDML', m_com['accuracy_at_common_time'], 'DivShare', m_div['accuracy_at_common_time'])} at equal virtual time "
        f"({_pm(m_div['accuracy_at_common_time'])}% DivShare against ComDML's {_pm(m_com['accuracy_at_common_time'])}% at "
        f"{m_com['common_time_s'].mean():.0f} s, DivShare ahead on {seeds_ahead} of {len(m_com)} seeds) and DivShare reaches 75% and 80% "
        f"{t[('comdml', '75')] / t[('divshare', '75')]:.1f}x and {t[('comdml', '80')] / t[('divshare', '80')]:.1f}x sooner "
        f"({t[('divshare', '75')]:.1f} s and {t[('divshare', '80')]:.1f} s against {t[('comdml', '75')]:.1f} s and {t[('comdml', '80')]:.1f} s); "
        f"at equal work ({int(m_com['rounds'].iloc[0])} epochs' worth each) "
        f"{_ahead('ComDML', m_com['final_accuracy'], 'DivShare', m_div['final_accuracy'])} at the end, {_pm(m_com['final_accuracy'])}% (ComDML) "
        f"against {_pm(m_div['final_accuracy'])}% (DivShare), ComDML using {m_com['virtual_time_s'].mean():.0f} s of virtual time "
        f"to DivShare's {m_div['virtual_time_s'].mean():.0f} s.",
        f"- **Where it does not pay off:** with equal compute and slow links ComDML forms no pairs and is local SGD "
        f"({len(links)} seeds); as compute gets fast next to the links its reduction of the time to {sens['target'].iloc[0]}% falls from "
        f"{red[g_lo]:.0f}% ({g_lo:g} GFLOPS) to {red[g_mid]:.0f}% ({g_mid:g}) and {red[g_hi]:.0f}% ({g_hi:g}; seed "
        f"{int(sens['seed'].iloc[0])} only).",
    ]
    return "\n".join(lines)


CLAIMS: dict[str, Callable[[str], str]] = {"readme-results": readme_results}


def render_claim(name: str, results: str) -> str:
    return CLAIMS[name](results)


def marked_blocks(text: str, names, mark: str, end: str) -> dict[str, str]:
    """The blocks a README holds between mark.format(NAME) and end, by name (the tables' and the claims' marks alike)."""
    out = {}
    for name in names:
        m = mark.format(name)
        if m in text:
            start = text.index(m) + len(m)
            out[name] = text[start : text.index(end, start)].strip()
    return out


def replace_block(text: str, mark: str, end: str, body: str) -> str:
    """text with the block after `mark` (up to `end`) replaced by body."""
    start = text.index(mark) + len(mark)
    return text[:start] + "\n" + body + "\n" + text[text.index(end, start) :]


def claim_blocks(text: str) -> dict[str, str]:
    """The claims a README holds between <!-- claims: NAME --> and <!-- /claims -->, by name."""
    return marked_blocks(text, CLAIMS, MARK, END)
