"""The collective backend as a pure function of what the ranks hold (`runtime.devices`): no GPU, one GPU per rank, four ranks on one GPU, mixed nodes.

Ranks are described as plain data (`RankDevice`), the way `AgentHost.placement()` reports them.
"""

from __future__ import annotations

import pytest

from comdml_ray.runtime.devices import RankDevice, choose_backend, shared_devices


def gpu(node: str, gid: str, nccl: bool = True) -> RankDevice:
    return RankDevice(node, (gid,), cuda=True, nccl=nccl)


def test_no_gpu_is_gloo() -> None:
    ranks = [RankDevice("a"), RankDevice("a"), RankDevice("b")]
    choice = choose_backend(ranks)
    assert choice.backend == "gloo" and not choice.on_device and "no rank trains on a GPU" in choice.reason


def test_logical_gpus_without_cuda_are_cpu_ranks() -> None:
    """Ray's logical GPUs on a CPU machine (CI's --num-gpus): GPU ids, but the actors train on the CPU."""
    ranks = [RankDevice("a", ("0",), cuda=False, nccl=False)] * 4
    assert choose_backend(ranks).backend == "gloo"


def test_one_gpu_per_rank_with_cupy_is_nccl() -> None:
    ranks = [gpu("a", str(i)) for i in range(4)]
    choice = choose_backend(ranks)
    assert choice.backend == "nccl" and choice.on_device


def test_one_gpu_per_rank_without_cupy_is_gloo_and_says_how_to_get_nccl() -> None:
    ranks = [gpu("a", "0"), gpu("a", "1", nccl=False), gpu("a", "2")]
    choice = choose_backend(ranks)
    assert choice.backend == "gloo" and "pip install -e .[gpu]" in choice.reason and "1 of 3" in choice.reason


def test_four_ranks_on_one_gpu_is_gloo() -> None:
    """--gpus-per-agent 0.25: four actors on each GPU; NCCL would refuse the communicator."""
    ranks = [gpu("a", "0") for _ in range(4)] + [gpu("a", "1") for _ in range(4)]
    assert shared_devices(ranks) == {("a", "0"): [0, 1, 2, 3], ("a", "1"): [4, 5, 6, 7]}
    choice = choose_backend(ranks)
    assert choice.backend == "gloo" and "shared" in choice.reason and "up to 4 ranks" in choice.reason


def test_mixed_nodes() -> None:
    # The same GPU id on two nodes is two devices: NCCL is fine.
    assert choose_backend([gpu("a", "0"), gpu("b", "0"), gpu("b", "1")]).backend == "nccl"
    # One node whose GPU is shared by two ranks, another whose ranks each own one: gloo for everyone.
    mixed = [gpu("a", "0"), gpu("a", "0"), gpu("b", "0"), gpu("b", "1")]
    assert shared_devices(mixed) == {("a", "0"): [0, 1]} and choose_backend(mixed).backend == "gloo"
    # A node without CUDA among GPU nodes: gloo (NCCL needs a GPU on every rank).
    choice = choose_backend([gpu("a", "0"), gpu("b", "0"), RankDevice("c")])
    assert choice.backend == "gloo" and "1 of 3 ranks train on the CPU" in choice.reason


def test_one_rank_has_no_group() -> None:
    assert choose_backend([gpu("a", "0")]).backend == "none"
    assert choose_backend([]).backend == "none"


@pytest.mark.parametrize(
    "placement, expected",
    [
        ({"node_id": "n1", "device": "cpu", "gpu_ids": [], "nccl": False}, RankDevice("n1")),
        ({"node_id": "n1", "device": "cpu", "gpu_ids": ["0"]}, RankDevice("n1", ("0",))),  # logical GPU, an older actor without "nccl"
        ({"node_id": "n2", "device": "cuda:0", "gpu_ids": ["3"], "nccl": True}, RankDevice("n2", ("3",), cuda=True, nccl=True)),
    ],
)
def test_rank_device_from_an_actors_placement(placement: dict, expected: RankDevice) -> None:
    assert RankDevice.of(placement) == expected
