"""The documents read as documents, not as a lab notebook.

README.md stays short (at most 160 lines).  README.md, benchmarks/README.md and
docs/*.md name no issue numbers, no clock times or timestamps, no session talk
("this session", "yesterday"); a date may appear only on a "Measured on" line, the one
place a table says which machine and when.  History belongs in CHANGELOG.md, which is
not checked here.

Fenced code blocks and inline code are left out: a command may well hold `--kill-actor
12:7` or a log line's time.  The detector checks itself on sentences it must catch and
on sentences it must leave alone (version numbers, `--seed 2`, 7.4 s, a paper's year).
"""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_LINES = 160
CHECKED = ["README.md", "benchmarks/README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]

_MONTH = r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"

# (kind, pattern): what a diary leaves in prose.
ISSUE_PATTERNS = [
    ("issue number", re.compile(r"\b(?:issues?|tickets?|PRs?|pull requests?)(?:[ \t]*(?:#|no\.?[ \t]*)?|[-_])\d+", re.IGNORECASE)),
    ("issue number", re.compile(r"(?<![\w/&#])#\d+\b")),
]
CLOCK_PATTERNS = [
    ("clock time", re.compile(r"(?<![\w.:])\d{1,2}:\d{2}(?::\d{2})?(?![\w:])")),
    ("timestamp", re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}")),
    ("time zone", re.compile(r"\b(?:UTC|GMT|CET|CEST|PST|PDT|EST|EDT)\b")),
]
DATE_PATTERNS = [
    ("date", re.compile(r"\b(?:19|20)\d{2}-\d{2}(?:-\d{2})?\b")),
    ("date", re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?[ \t]+{_MONTH}\b")),
    ("date", re.compile(rf"\b{_MONTH}\.?[ \t]+(?:\d{{1,2}}(?:st|nd|rd|th)?,?[ \t]+)?(?:19|20)\d{{2}}\b")),
]
SESSION_PATTERNS = [
    (
        "session talk",
        re.compile(
            r"\b(?:this|that|the next|the previous|the last|an earlier|the earlier|my|our|a later)[ \t]+sessions?\b"
            r"|\bsessions? of (?:19|20)\d{2}"
            r"|\b(?:yesterday|today|tonight|this morning|that morning|the same morning|this afternoon|that afternoon)\b"
            r"|\bmy own\b|\bthe machine used (?:from|until|then)\b",
            re.IGNORECASE,
        ),
    ),
]
MEASURED_ON = re.compile(r"^\s*(?:[*_>]+\s*)?measured on\b", re.IGNORECASE)


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, text) of every line outside fenced code blocks, inline code removed."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, re.sub(r"`[^`]*`", "``", line)))
    return out


def diary_findings(text: str) -> list[tuple[int, str, str]]:
    """(line, kind, matched text) for every issue number, clock time, date off a "Measured on" line, or session talk."""
    found = []
    for n, line in prose_lines(text):
        patterns = ISSUE_PATTERNS + CLOCK_PATTERNS + SESSION_PATTERNS
        if not MEASURED_ON.match(line):
            patterns = patterns + DATE_PATTERNS
        for kind, pattern in patterns:
            found += [(n, kind, m.group(0)) for m in pattern.finditer(line)]
    return found


def read(rel: str) -> str:
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def test_readme_is_short():
    lines = read("README.md").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines; at most {README_MAX_LINES} (details go to benchmarks/README.md or docs/)"
    )


@pytest.mark.parametrize("rel", CHECKED)
def test_no_diary(rel):
    found = diary_findings(read(rel))
    assert not found, f"{rel}: " + "; ".join(f"line {n}: {kind} {text!r}" for n, kind, text in found)


CAUGHT = [
    "On the machine used from 2026-12-02 10:20 local's run took 2 min 41 s.",
    "Measured 05:40-05:50 UTC on the quiet machine.",
    "The sweep in benchmarks/README.md (Issue 17) set the lr.",
    "The bar of issue 14 is not met.",
    "See #14 for the discussion.",
    "Details: [the table](benchmarks/README.md#smashed-data-issue-15).",
    "It was not run end to end in this session.",
    "Seeds 1 and 2 ran on the code of that morning.",
    "Measured 2026-12-02 on the 2-core machine.",
    "Measured on 2 December with my own tests beside it.",
    "Measured on: 2-core AMD EPYC; December 2026, 17:14.",
    "The run of Dec 2, 2026 gave 83.3%.",
]
LEFT_ALONE = [
    "Measured on: 2-core AMD EPYC, 24 GB, no GPU; December 2026.",
    "Measured on 2026-12-02 with torch 2.14.1 and Ray 2.60.",
    "Pass `--seed 2` and `--kill-actor 12:7` to try it.",
    "A round takes 7.4 s; ComDML needs 0.24x local's time (3 seeds), 1.5 points in §3.6.",
    "ComDML (ICDCS 2024, arXiv 2405.00839) and its layout 2 x 50 agents, split 16 x 14 x 14.",
    "See [the section](#s3-6) and the Ray session it starts.",
    "```\n00:48:53 INFO round 4: issue 14, this session, 2026-12-02 10:20 UTC\n```",
]


@pytest.mark.parametrize("sentence", CAUGHT)
def test_the_detector_catches_a_diary_sentence(sentence):
    assert diary_findings(sentence), sentence


@pytest.mark.parametrize("sentence", LEFT_ALONE)
def test_the_detector_leaves_documentation_alone(sentence):
    assert diary_findings(sentence) == [], sentence
