"""An elastic cluster on this machine: from zero workers to a finished job and back to zero.

A private `ray start --head` (0 CPUs, like clusters/*.yaml) with a real Ray
autoscaler whose node provider is Ray's fake multi-node provider: its "nodes" are
raylets started on this machine, so nothing leaves it.  The autoscaler is v2: v1
(the default of `ray up`, which `comdml_ray.runtime.cluster` reads as well) matches nodes to
its load reports by IP, and fake nodes all share this machine's, so under v1 they
never count as up and never go back.  `benchmarks/run.py --address`
on it must ask the autoscaler for its layout, print the waiting line, run on the
nodes that joined, and drop its request, after which the idle nodes go back
(idle_timeout_minutes is 0.1 here).  Stopped by ending the processes it started,
never `ray stop`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import ray._private.services
from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

from benchmarks.dashboard_screenshot import ROOT, LocalHead, free_port

WORKER_CPUS = 1
MAX_WORKERS = 2


def autoscaler_config(gcs_address: str) -> dict:
    """A cluster config for Ray's fake multi-node provider (loaded as an external provider: its defaults file is not shipped)."""
    return {
        "cluster_name": "comdml-elastic-test",
        "max_workers": MAX_WORKERS,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,
        "provider": {
            "type": "external",
            "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
            "gcs_address": gcs_address,
            # its nodes start Ray themselves: no SSH updaters, no launch-config hash check
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "launch_multiple": True,
            "head_node_id": FAKE_HEAD_NODE_ID,
        },
        "auth": {"ssh_user": "unused"},
        "available_node_types": {
            "ray.head.default": {"resources": {}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": WORKER_CPUS}, "node_config": {}, "min_workers": 0, "max_workers": MAX_WORKERS},
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@pytest.fixture(scope="module")
def head():
    h = LocalHead(num_cpus=0, num_gpus=0)
    h.ports = {"gcs": free_port()}
    path = os.path.join(h.temp_dir, "autoscaler.json")
    with open(path, "w") as f:
        json.dump(autoscaler_config(f"{ray._private.services.get_node_ip_address()}:{h.ports['gcs']}"), f)
    h.extra_args = [f"--autoscaling-config={path}"]
    h.extra_env = {
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_enable_autoscaler_v2": "1",
        "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
        "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
    }
    with h:
        yield h


def cluster_cpus(head: LocalHead) -> float:
    """Total CPUs of the cluster's live nodes, as `ray status` shows them (no CPU line: none)."""
    status = head.ray_cli("status", "--address", head.gcs_address)
    assert status.returncode == 0, status.stderr[-2000:]
    m = re.search(r"([\d.]+)/([\d.]+) CPU", status.stdout)
    return float(m.group(2)) if m else 0.0


def test_zero_workers_to_a_finished_job_and_back_to_zero(head, tmp_path):
    assert cluster_cpus(head) == 0
    run = subprocess.run(
        [
            sys.executable,
            "benchmarks/run.py",
            "--address",
            head.gcs_address,
            "--agents",
            "2",
            "--rounds",
            "1",
            "--train-samples",
            "600",
            "--no-progress",
            "--scale-timeout",
            "240",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        env=head.env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert re.search(r"waiting for the autoscaler: 0/2 CPUs", out), out[-4000:]
    assert re.search(r"cluster ready after [\d.]+ min: 2/2 CPUs", out)
    assert "layout: 2 actors, one agent per actor" in out
    assert "final test accuracy" in out
    deadline = time.monotonic() + 180  # the request is dropped; idle nodes go back after 6 s + the autoscaler's rounds
    while time.monotonic() < deadline and cluster_cpus(head) > 0:
        time.sleep(3)
    assert cluster_cpus(head) == 0, "the workers did not go back after the job"


def test_a_cluster_started_by_hand_is_fixed():
    """Ray's monitor reports on a cluster of `ray start` nodes too, through its read-only provider: every node
    a type of its own (`node_<id>`).  Such a report means no autoscaler, so a run does not wait for nodes
    (it used to wait 90 s, STALL_S, at every start).  A `ray up` report names the config's node types."""
    from comdml_ray.runtime.cluster import _read_only

    by_hand = {"node_type_mapping": {"e4cd": "node_e4cd", "ede3": "node_ede3"}, "pending_nodes": [], "pending_launches": {}}
    assert _read_only(by_hand)
    autoscaled = {"node_type_mapping": {"e4cd": "ray.head.default", "ede3": "cpu_worker"}, "pending_launches": {"cpu_worker": 1}}
    assert not _read_only(autoscaled)
    assert not _read_only({"node_type_mapping": {}})  # a head so new it maps nothing yet: left to the autoscaler's view
