"""Offloading problem and its solvers (pure numpy + PuLP; no torch, no Ray)."""
