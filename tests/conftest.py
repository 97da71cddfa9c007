"""Shared fixtures: one local Ray per test module that asks for it, and in-process agent groups.

- `ray_local`: `ray.init(num_cpus=2)` for the module (no dashboard, quiet workers), shut
  down after it; runtime tests share it so actors start once per module.
- `local_backend(cfg, layout, slowdown=None)`: a `LocalBackend` (plain AgentGroups in this
  process, same seed -> same shards and initial models) and its `Setting`, optionally with
  other slowdowns.
- `quiet`: a log function that prints nothing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import ray
import torch

from comdml_ray.backend import LocalBackend
from comdml_ray.config import RunConfig
from comdml_ray.setting import Setting

torch.set_num_threads(1)


def quiet(*_a, **_k) -> None:
    pass


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
