"""Shared fixtures: one local Ray per test module that asks for it, and in-process agent groups.

- `ray_local`: `ray.init(num_cpus=2)` for the module (no dashboard, quiet workers), shut
  down after it; runtime tests share it so actors start once per module.
- `local_backend(cfg, layout, slowdown=None)`: a `LocalBackend` (plain AgentGroups in this
  process, same seed -> same shards and initial models) and its `Setting`, optionally with
  other slowdowns.
- `quiet`: a log function that prints nothing.

Every run a test starts gets a Ray without the dashboard (`COMDML_DASHBOARD=0`, read by
`comdml_ray.runtime.cluster.start_ray`; subprocesses inherit it): the dashboard's processes cost
about 7 s of CPU per start on a 2-core machine and no test of a run reads them.  The tests
of the dashboard itself start their own Ray head (tests/test_job_logs.py) or their own
metrics endpoint (tests/test_metrics_export.py).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import ray
import torch

from comdml_ray.config import RunConfig
from comdml_ray.runtime.backend import LocalBackend
from comdml_ray.timing.setting import Setting

torch.set_num_threads(1)
os.environ["COMDML_DASHBOARD"] = "0"


def quiet(*_a, **_k) -> None:
    pass


class StopAt:
    """A log function that stops the driver (Ctrl-C) at the first line starting with `prefix`."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def __call__(self, msg: str) -> None:
        if str(msg).startswith(self.prefix):
            raise KeyboardInterrupt


def local_backend(cfg: RunConfig, layout: list[list[int]], slowdown=None) -> tuple[LocalBackend, Setting]:
    be = LocalBackend(cfg, layout)
    if slowdown is not None:
        be.use_setting(dataclasses.replace(be.setting, slowdown=np.asarray(slowdown, dtype=float)))
    return be, be.setting


@pytest.fixture(scope="module")
def ray_local():
    # address="local": always a Ray of our own, never a `ray start` cluster another process left on this machine.
    ray.init(address="local", num_cpus=2, num_gpus=0, log_to_driver=False, include_dashboard=False)
    yield
    ray.shutdown()
