"""`python -m tests [pytest arguments]`: the test suite as `make test` runs it (default: `-q tests`).

pytest.main, then `comdml_ray.runtime.cluster.exit_process` with pytest's own exit status: the
suite starts Ray once per test module, and Ray 2.60 leaves a metric-exporter thread
behind for every session after a process's first one, which can crash the process in
its C++ static destructors after the last test has passed (SIGSEGV, exit 139; see
exit_process).  Plain `python -m pytest` runs the same tests and reports the same
results; only its exit can still meet that crash.

The whole folder (`-q tests`): the multi-host bed's module (tests/test_bed.py) runs beside
the others, in a second pytest process started first, and its report follows theirs.  Its
minutes are mostly waits (Ray's node-death detection, nodes joining, start-ups) inside
network and mount namespaces of its own, which share nothing with the other modules'
local Ray (own addresses, own disks, own Ray temp dirs), so the suite lasts about the
longer of the two rather than their sum.  The exit status is the first failing one's.
`COMDML_TESTS_SERIAL=1` runs everything in this one process.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile

import pytest

BED = "tests/test_bed.py"
PLAIN_OPTION = re.compile(r"^(-[qvxsl]+|--[\w-]+(=.*)?)$")  # options that take no separate value


def bed_beside(args: list[str]) -> bool:
    """Whether to run the bed's module in a second process: the whole tests folder, with plain options only."""
    paths = [a for a in args if not a.startswith("-")]
    return (
        not os.environ.get("COMDML_TESTS_SERIAL") and paths == ["tests"] and all(PLAIN_OPTION.match(a) for a in args if a.startswith("-"))
    )


def main(args: list[str]) -> int:
    if not bed_beside(args):
        return pytest.main(args)
    options = [a for a in args if a.startswith("-")]
    with tempfile.TemporaryFile(mode="w+") as log:
        env = {**os.environ, "COMDML_TESTS_SERIAL": "1"}
        bed = subprocess.Popen(
            [sys.executable, "-m", "tests", *options, "-p", "no:cacheprovider", BED], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        code = 2
        try:
            code = pytest.main([*options, "tests", "--ignore", BED])
        finally:
            if bed.poll() is None and code not in (0, 1):  # interrupted or broken: the bed's process tears its bed down on SIGINT
                bed.send_signal(signal.SIGINT)
            bed_code = bed.wait()
        log.seek(0)
        print(f"\n---- {BED}, run beside the others (exit status {bed_code}) ----\n" + log.read(), flush=True)
    return code or bed_code


if __name__ == "__main__":
    code = main(sys.argv[1:] or ["-q", "tests"])
    from comdml_ray.runtime.cluster import exit_process

    exit_process(code)
