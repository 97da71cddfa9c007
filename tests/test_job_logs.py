"""Watching a job on a `ray start --head` cluster of this machine: `ray job logs`, the dashboard in a browser, a dead actor's log.

One private head for the module (`benchmarks/dashboard_screenshot.LocalHead`: free
ports, a fresh temp dir, token authentication with a fresh token; stopped by ending
the processes it started, never `ray stop`).  A `ray job submit` of benchmarks/run.py
(4 agents on a logical GPU, so each actor warns that torch finds no CUDA device) must
show in `ray job logs` the actors' per-round lines and that warning; while it runs,
headless Chromium opens the dashboard's Actors page with the cluster's token and
screenshots it showing the `agent-NNN` actors (skipped only when Debian's `chromium`
is missing; .ci/run installs it).  Last, a driver whose actor is killed prints a
message naming the actor's node IP and a `ray logs actor` command, and that command
prints the actor's own log lines.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import textwrap

import pytest

from benchmarks.dashboard_screenshot import AGENTS, ROOT, LocalHead, chromium_binary, picture_of_a_job

ROUNDS = 60  # long enough that the job still runs when the page is ready (a round lasts under a second)


@pytest.fixture(scope="module")
def head():
    with LocalHead(num_cpus=2, num_gpus=1) as h:
        yield h


@pytest.fixture(scope="module")
def picture(head, tmp_path_factory):
    out = tmp_path_factory.mktemp("shot") / "actors.png" if chromium_binary() else None
    return picture_of_a_job(head, out, rounds=ROUNDS)


def test_job_logs_show_per_round_lines_and_an_actor_warning(picture):
    logs = picture.logs
    assert picture.final_status == "SUCCEEDED", logs[-3000:]
    for r in range(1, ROUNDS + 1):  # every round has its line (Ray may fold other actors' into "[repeated Nx ...]")
        assert re.search(rf"INFO round {r} agent-\d{{3}}: loss \d", logs), f"no actor line for round {r}"
    assert re.search(r"WARNING agent-\d{3}: Ray assigned it GPU \d+ but torch finds no CUDA device", logs)
    assert re.search(r"INFO agent-\d{3} ready on cpu", logs)
    assert "final test accuracy" in logs  # the driver's own summary is there too
    actor_lines = [ln for ln in logs.splitlines() if re.search(r"INFO (round|row) \d+ agent", ln)]
    assert len(actor_lines) <= ROUNDS * AGENTS, "more than one line per round per actor"


def test_dashboard_actors_page_in_headless_chromium(picture):
    if picture.shot is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run does)")
    data = picture.shot.path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1600, 900) and len(data) > 20_000
    for k in range(AGENTS):
        assert f"agent-{k:03d}" in picture.shot.page_text
    assert "AgentHost" in picture.shot.page_text and "ALIVE" in picture.shot.page_text
    assert "Authentication" not in picture.shot.page_text  # the token cookie let the page in
    assert picture.status_at_shot == "RUNNING"


KILL_ONE = textwrap.dedent("""
    import ray, sys
    from comdml_ray.config import RunConfig
    from comdml_ray.runtime.run import AgentFailure, Run
    ray.init(address=sys.argv[1], runtime_env={"env_vars": {"PYTHONPATH": sys.argv[2]}}, log_to_driver=False)
    r = Run(RunConfig(agents=2, rounds=1, train_samples=600, cpus_per_agent=0.5, progress=False).validate(), log=lambda *a: None)
    try:
        ray.kill(r.hosts[1])
        r.run_round(0)
    except AgentFailure as e:
        print(e)
    finally:
        r.shutdown()
""")


def test_dead_actor_message_gives_a_command_that_shows_its_log(head, picture):
    drv = subprocess.run(
        [sys.executable, "-c", KILL_ONE, head.gcs_address, str(ROOT)],
        cwd=ROOT,
        env=head.env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    msg = drv.stdout.strip().splitlines()[-1] if drv.stdout.strip() else ""
    assert msg.startswith("the actor hosting agent 1 (agent-001, pid "), drv.stdout[-2000:] + drv.stderr[-2000:]
    node_ip = re.search(r"died on node (\d+\.\d+\.\d+\.\d+) ", msg).group(1)
    command = re.search(r"`(ray logs actor --id \w+ --address (\S+) --err)`", msg)
    assert command.group(2).split(":")[0] == node_ip  # one node: the GCS runs where the actor ran
    shown = head.ray_cli(*command.group(1).split()[1:])
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "INFO agent-001 ready on cpu" in shown.stdout
