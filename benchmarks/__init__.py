"""Entry points and benchmarks (run.py, compare.py, overhead.py, solver_bench.py); a package so they can import each other."""
