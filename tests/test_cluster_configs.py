"""Checks of the `ray up` configs in clusters/: schema, exposure, head placement, auth.

Every `clusters/*.yaml` is validated the way `ray up` does before it contacts a cloud:
against the cluster-config JSON schema shipped inside the Ray package
(`ray/autoscaler/ray-schema.json`) and through Ray's own `prepare_config` +
`validate_config`. The schema leaves `provider` and each `node_config` open (any
keys), so the properties this project relies on are checked directly: no Ray port
open to the internet, a head that hosts no agents, token authentication kept on;
and the elastic set-up: cloud workers start from zero, the image-based variants
(and clusters/Dockerfile) use Ray's image of the pinned Ray version; every cloud
config offers a CPU and a GPU worker type, the autoscaler's own choice (Ray's bin
packing and node-type scorer) serves a CPU-only job from the CPU type alone and a GPU
job from GPU types, and GPU workers install the `gpu` extra (cupy) of pyproject.toml.
No cluster is started; the module runs in about a second.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_bin_pack_residual, get_nodes_for
from ray.autoscaler._private.util import prepare_config, validate_config

from comdml_ray.config import RunConfig
from comdml_ray.runtime.cluster import demand_of

CLUSTERS = Path(__file__).resolve().parents[1] / "clusters"
CONFIGS = sorted(CLUSTERS.glob("*.yaml"))
SCHEMA_PATH = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
RAY_PORTS = (8265, 6379, 10001)  # dashboard, GCS, Ray Client
OPEN_CIDRS = ("0.0.0.0/0", "::/0")
Config = dict[str, Any]


def load(path: Path) -> Config:
    with open(path) as f:
        return yaml.safe_load(f)


def check_like_ray_up(config: Config) -> None:
    """Raise jsonschema.ValidationError (or Ray's ValueError) where `ray up` would refuse."""
    with open(SCHEMA_PATH) as f:
        jsonschema.validate(config, json.load(f))  # the file as written
    validate_config(prepare_config(copy.deepcopy(config)))  # after Ray merges its defaults


def strings(node: Any) -> Iterator[str]:
    """Every string (keys included) anywhere in a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def ray_starts(commands: list[str]) -> list[tuple[dict[str, str], list[str]]]:
    """(env assignments, arguments) of each `ray start` in a list of shell commands."""
    found = []
    for command in commands:
        for segment in command.replace("&&", ";").split(";"):
            words = shlex.split(segment)
            env = {}
            while words and "=" in words[0] and not words[0].startswith("-"):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            if words[:2] == ["ray", "start"]:
                found.append((env, words[2:]))
    return found


def flag(args: list[str], name: str) -> str | None:
    """Value of `--name=value` or `--name value` in args; "" for a bare flag."""
    for i, arg in enumerate(args):
        if arg == name:
            nxt = args[i + 1] if i + 1 < len(args) else ""
            return "" if nxt.startswith("--") else nxt
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def test_configs_exist() -> None:
    assert {p.name for p in CONFIGS} >= {"aws.yaml", "gcp.yaml", "local.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_passes_ray_up_validation(path: Path) -> None:
    try:
        check_like_ray_up(load(path))
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        pytest.fail(f"{path.name}: {where}: {e.message}")


BREAKAGES: dict[str, Callable[[Config], None]] = {
    "unknown top-level key": lambda c: c.update(max_worker=25),
    "wrong type": lambda c: c.update(max_workers="25"),
    "unknown node-type key": lambda c: c["available_node_types"]["gpu_a10g_x1"].update(min_worker=1),
    "fractional resource": lambda c: c["available_node_types"]["gpu_a10g_x1"]["resources"].update(GPU=0.5),
    "command not a string": lambda c: c["setup_commands"].append({"run": "ls"}),
}


@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_broken_config_fails_validation(breakage: Callable[[Config], None]) -> None:
    config = load(CLUSTERS / "aws.yaml")
    check_like_ray_up(copy.deepcopy(config))  # the intact file passes...
    breakage(config)
    with pytest.raises(jsonschema.ValidationError):  # ...the broken one does not
        check_like_ray_up(config)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_no_ray_port_open_to_the_internet(path: Path) -> None:
    config = load(path)
    # No firewall or security-group rule, and no command, mentions an open CIDR:
    # nothing in these configs needs one, so any is a mistake.
    for s in strings(config):
        assert not any(cidr in s for cidr in OPEN_CIDRS), f"{path.name}: open CIDR in {s!r}"
    if config["provider"]["type"] == "aws":
        # Without SecurityGroupIds Ray creates its default group, with SSH open to 0.0.0.0/0.
        for name, node_type in config["available_node_types"].items():
            assert node_type["node_config"].get("SecurityGroupIds"), f"{path.name}: {name} has no SecurityGroupIds"
        extra = config["provider"].get("security_group", {}).get("IpPermissions", [])
        for rule in extra:
            lo, hi = rule.get("FromPort", -1), rule.get("ToPort", -1)
            opens = [p for p in RAY_PORTS if lo == -1 or lo <= p <= hi]
            assert not opens, f"{path.name}: ingress rule {rule} covers Ray ports {opens}"
    # The dashboard keeps its default 127.0.0.1 binding: only the SSH tunnel reaches it.
    for _, args in ray_starts(config["head_start_ray_commands"]):
        host = flag(args, "--dashboard-host")
        assert host in (None, "127.0.0.1", "localhost"), f"{path.name}: dashboard bound to {host}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_head_starts_with_no_cpus(path: Path) -> None:
    config = load(path)
    heads = [args for _, args in ray_starts(config["head_start_ray_commands"]) if flag(args, "--head") is not None]
    assert len(heads) == 1, f"{path.name}: expected one `ray start --head`, found {len(heads)}"
    assert flag(heads[0], "--num-cpus") == "0", f"{path.name}: head must start with --num-cpus=0"
    for _, args in ray_starts(config["worker_start_ray_commands"]):
        assert flag(args, "--head") is None, f"{path.name}: a worker starts with --head"
    if "available_node_types" in config:  # cloud providers: the autoscaler's view agrees
        head = config["available_node_types"][config["head_node_type"]]
        assert head["resources"].get("CPU") == 0, f"{path.name}: head node type advertises CPUs"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_token_authentication_stays_on(path: Path) -> None:
    config = load(path)
    for s in strings(config):
        assert "RAY_AUTH_MODE=disabled" not in s, f"{path.name}: token authentication disabled in {s!r}"
    starts = ray_starts(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert len(starts) >= 2
    for env, args in starts:
        assert env.get("RAY_AUTH_MODE") == "token", f"{path.name}: `ray start {' '.join(args)}` without RAY_AUTH_MODE=token"
    # Every node gets the same token file as the user's CLI.
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token", f"{path.name}: token not shipped"


def ray_pin() -> str:
    """The Ray version requirements.txt pins (ray[default]==X)."""
    text = (CLUSTERS.parent / "requirements.txt").read_text()
    return re.search(r"^ray\[default\]==(\S+)", text, re.M).group(1)


@pytest.mark.parametrize("path", [p for p in CONFIGS if "available_node_types" in load(p)], ids=lambda p: p.name)
def test_cloud_workers_start_from_zero(path: Path) -> None:
    # Elastic: the job asks the autoscaler for its nodes (comdml_ray.runtime.cluster.request_capacity).
    config = load(path)
    for name, node_type in config["available_node_types"].items():
        if name != config["head_node_type"]:
            assert node_type.get("min_workers", 0) <= 1, f"{path.name}: {name} keeps {node_type['min_workers']} workers up"
    assert sum(t.get("max_workers", 0) for n, t in config["available_node_types"].items() if n != config["head_node_type"]) >= 25
    assert config.get("idle_timeout_minutes", 5) <= 10


@pytest.mark.parametrize("path", [p for p in CONFIGS if "docker" in load(p)] + [CLUSTERS / "Dockerfile"], ids=lambda p: p.name)
def test_images_are_rays_pinned_image(path: Path) -> None:
    image = load(path)["docker"]["image"] if path.suffix == ".yaml" else re.search(r"^FROM (\S+)", path.read_text(), re.M).group(1)
    assert image == f"rayproject/ray:{ray_pin()}-py311-gpu", f"{path.name}: {image} is not Ray's image of the pinned version"


def test_there_is_an_image_based_variant_of_each_cloud_config() -> None:
    names = {p.name for p in CONFIGS}
    assert {"aws-image.yaml", "gcp-image.yaml"} <= names


CLOUD_CONFIGS = [p for p in CONFIGS if "available_node_types" in load(p)]


def worker_types(config: Config, gpu: bool) -> dict[str, Config]:
    """The worker node types (not the head) that have GPUs (gpu=True) or none."""
    return {
        name: t
        for name, t in config["available_node_types"].items()
        if name != config["head_node_type"] and (t["resources"].get("GPU", 0) > 0) == gpu
    }


def autoscaler_launches(config: Config, bundles: list[dict]) -> tuple[dict[str, int], list[dict]]:
    """(nodes per type, bundles left over) the autoscaler would launch for these bundles on an empty cluster: Ray's own code."""
    scorer = partial(_default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary({}))
    return get_nodes_for(config["available_node_types"], {}, config["head_node_type"], config["max_workers"], bundles, scorer)


@pytest.mark.parametrize("path", CLOUD_CONFIGS, ids=lambda p: p.name)
def test_cpu_only_job_is_met_by_the_cpu_worker_type_alone(path: Path) -> None:
    """The 100-agent main job without --gpus-per-agent asks for CPU bundles; they fit the CPU type's nodes and start no GPU node."""
    config = load(path)
    cpu, gpu = worker_types(config, gpu=False), worker_types(config, gpu=True)
    assert cpu and gpu, f"{path.name}: needs a CPU worker type and a GPU worker type"
    job = demand_of(RunConfig(agents=100).validate())
    assert job.gpus == 0 and all("GPU" not in b for b in job.bundles)
    for name, t in cpu.items():  # each CPU type alone, at its max_workers, holds the whole job
        nodes = [dict(t["resources"]) for _ in range(t["max_workers"])]  # one dict per node: Ray deep-copies, so aliases would be one node
        left, _ = get_bin_pack_residual(nodes, job.bundles)
        assert not left, f"{path.name}: {t['max_workers']} x {name} leave {len(left)} of the job's bundles unplaced"
    launched, left = autoscaler_launches(config, job.bundles)
    assert not left and launched and set(launched) <= set(cpu), f"{path.name}: a CPU-only job would start {launched}"


@pytest.mark.parametrize("path", CLOUD_CONFIGS, ids=lambda p: p.name)
def test_gpu_job_starts_gpu_workers(path: Path) -> None:
    config = load(path)
    job = demand_of(RunConfig(agents=100, gpus_per_agent=0.25).validate())
    launched, left = autoscaler_launches(config, job.bundles)
    assert not left and set(launched) <= set(worker_types(config, gpu=True)), f"{path.name}: a GPU job would start {launched}"


def gpu_extra() -> list[str]:
    with open(CLUSTERS.parent / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]["gpu"]


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name != "Dockerfile"], ids=lambda p: p.name)
def test_workers_install_the_gpu_extra(path: Path) -> None:
    """Every worker runs clusters/gpu-extra.sh (GPU nodes install cupy, the rest skip it); no node type overrides that list."""
    config = load(path)
    assert any("clusters/gpu-extra.sh" in c for c in config["worker_setup_commands"]), f"{path.name}: workers do not install the gpu extra"
    for name, t in config.get("available_node_types", {}).items():
        assert "worker_setup_commands" not in t, (
            f"{path.name}: {name} replaces the shared set-up commands (Ray: a node type's list overrides them)"
        )
    assert any(req.startswith("cupy") for req in gpu_extra())


def test_gpu_extra_script_skips_a_node_without_gpus() -> None:
    """A node whose driver lists no GPU (the probe is `false`): it reads the extra from pyproject.toml, says so and installs nothing."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "NVIDIA_SMI": "false"}
    done = subprocess.run(["bash", str(CLUSTERS / "gpu-extra.sh"), sys.executable], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"gpu extra ({' '.join(gpu_extra())}): no GPU on this node, nothing to install"
