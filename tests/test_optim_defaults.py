"""Per-model optimizer defaults, the learning-rate schedule, the residual zero init and the evaluation's test subset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks.run import build_parser, config_from_args
from comdml_ray.config import MODEL_DEFAULTS, ConfigError, RunConfig
from comdml_ray.learning.models import Bottleneck, build_model
from comdml_ray.learning.training import LrSchedule
from comdml_ray.method.agent import test_subset as subset_of
from tests.conftest import local_backend


def test_model_defaults_apply_and_flags_override() -> None:
    cnn, r56 = config_from_args([]), config_from_args(["--model", "resnet56"])
    assert cnn.optimizer_setting("lr") == 0.2 and cnn.optimizer_setting("lr_schedule") == "constant"
    for name in ("lr", "warmup_rounds", "lr_schedule"):
        assert r56.optimizer_setting(name) == MODEL_DEFAULTS["resnet56"][name]
    mine = config_from_args(["--model", "resnet56", "--lr", "0.3", "--warmup-rounds", "0", "--lr-schedule", "constant"])
    assert (mine.optimizer_setting("lr"), mine.optimizer_setting("warmup_rounds"), mine.optimizer_setting("lr_schedule")) == (
        0.3,
        0.0,
        "constant",
    )
    line = config_from_args(["--model", "resnet56", "--lr", "0.3"]).optimizer_line()
    assert "lr 0.3 (flag)" in line and "(resnet56 default)" in line
    help_text = " ".join(build_parser().format_help().split())
    assert f"resnet56 {MODEL_DEFAULTS['resnet56']['lr']}" in help_text and "cnn 0.2" in help_text


@pytest.mark.parametrize("change", [{"lr": 0.0}, {"warmup_rounds": -1.0}, {"lr_schedule": "step"}, {"eval_samples": -5}])
def test_bad_optimizer_or_eval_flags_are_one_sentence(change: dict) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig(**change).validate()
    assert str(err.value).count(". ") == 0 and "--" in str(err.value)


def test_schedule_warms_up_then_decays_to_zero() -> None:
    s = LrSchedule(0.1, warmup_rounds=1.0, kind="cosine", rounds=4)
    first = s.for_batches(0, 10)
    assert first == sorted(first) and first[0] == pytest.approx(0.1 * 0.1 * 0.5 * (1 + math.cos(math.pi * 0.1 / 4)))
    assert s.at(1.0) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert s.at(4.0) == pytest.approx(0.0, abs=1e-12) and max(s.for_batches(3, 5)) < s.at(3.0)
    assert LrSchedule(0.2).for_batches(5, 3) == [0.2, 0.2, 0.2]


def test_agent_trains_at_the_scheduled_rate() -> None:
    cfg = RunConfig(agents=2, train_samples=128, model="cnn", lr=0.1, warmup_rounds=2.0, lr_schedule="constant", rounds=3).validate()
    be, _ = local_backend(cfg, [[0, 1]])
    a = be.groups[0].agents[0]
    a.train_alone()  # round 0: 2 batches of 32 -> rates 0.025, 0.05
    assert a.full_optim.param_groups[0]["lr"] == pytest.approx(0.05)
    a.train_alone()
    assert a.full_optim.param_groups[0]["lr"] == pytest.approx(0.1) and a.rounds_trained == 2


def test_residual_blocks_start_as_identity() -> None:
    torch.manual_seed(0)
    model = build_model("resnet56", 3, 32, 10)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 18 and all(float(b.bn3.weight.detach().abs().sum()) == 0.0 for b in blocks)
    block = model.blocks[2][1].eval()  # identity shortcut: out = relu(0 + x) = x for x >= 0
    x = torch.rand(2, 64, 8, 8)
    assert torch.equal(block(x), x)
    plain = build_model("resnet56", 3, 32, 10, zero_init_residual=False)
    assert all(float(b.bn3.weight.detach().min()) == 1.0 for b in plain.modules() if isinstance(b, Bottleneck))


def test_test_subset_is_fixed_seeded_and_capped() -> None:
    a, b = subset_of(10_000, 1000, seed=0), subset_of(10_000, 1000, seed=0)
    assert np.array_equal(a, b) and len(np.unique(a)) == 1000 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, subset_of(10_000, 1000, seed=1))
    assert np.array_equal(subset_of(50, 1000, 0), np.arange(50)) and np.array_equal(subset_of(50, None, 0), np.arange(50))
    cfg = RunConfig(eval_samples=300)
    assert cfg.eval_images(last=False) == 300 and cfg.eval_images(last=True) is None
    assert RunConfig(eval_samples=0).eval_images(last=False) is None


def test_evaluation_split_over_groups_gives_the_whole_sets_accuracy() -> None:
    """Run.evaluate under all-reduce: group g scores every G-th image; weighted by images, the mean is the one-pass accuracy."""
    cfg = RunConfig(agents=3, train_samples=96, rounds=1).validate()
    be, _ = local_backend(cfg, [[0, 1, 2]])
    grp = be.groups[0]
    grp.agents[0].train_alone()
    for images in (None, 1001):
        n = 10_000 if images is None else images
        whole = grp.evaluate([0], images)[0]
        parts = [grp.evaluate([0], images, (p, 3))[0] * len(range(p, n, 3)) for p in range(3)]
        assert sum(parts) / n == pytest.approx(whole, abs=1e-12)


def test_checkpoint_keeps_the_schedules_clock() -> None:
    """A restored agent goes on with the learning rate of its next round, not the warm-up's first step."""
    cfg = RunConfig(agents=2, train_samples=128, lr=0.1, warmup_rounds=2.0, lr_schedule="cosine", rounds=4).validate()
    be, _ = local_backend(cfg, [[0, 1]])
    be.groups[0].agents[0].train_alone()
    be.groups[0].agents[0].train_alone()
    fresh, _ = local_backend(cfg, [[0, 1]])
    fresh.groups[0].load_state_dict(be.groups[0].state_dict(shared=False))
    assert fresh.groups[0].agents[0].rounds_trained == 2 and fresh.groups[0].agents[1].rounds_trained == 0
