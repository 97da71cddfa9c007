"""`python -m tests [pytest arguments]`: the test suite as `make test` runs it (default: `-q tests`).

pytest.main, then `comdml_ray.runtime.cluster.exit_process` with pytest's own exit status: the
suite starts Ray once per test module, and Ray 2.60 leaves a metric-exporter thread
behind for every session after a process's first one, which can crash the process in
its C++ static destructors after the last test has passed (SIGSEGV, exit 139; see
exit_process).  Plain `python -m pytest` runs the same tests and reports the same
results; only its exit can still meet that crash.
"""

import sys

import pytest

if __name__ == "__main__":
    code = pytest.main(sys.argv[1:] or ["-q", "tests"])
    from comdml_ray.runtime.cluster import exit_process

    exit_process(code)
