"""The dashboard's data end to end: a short local run exports the project's metrics on Ray's Prometheus endpoint.

One local Ray for the module, with metrics export on a free port and
a 1 s report interval (Ray's default is 10 s). A 4-agent ComDML run of 3 rounds
(pairs form under the paper profile) must leave on that endpoint every series of
`actors.METRIC_NAMES` and `telemetry.EXTRA_METRIC_NAMES`, tagged by agent, with the
values the run wrote to its own files: the round counter equals the rounds run, the
last finish times, bytes and pairs are those of agents.csv / rounds.csv.  Then a real
Prometheus (the Debian `prometheus` binary, which .ci/run installs) that scraped the
endpoint during the run answers every query of clusters/comdml_grafana_dashboard.json
with data, so the dashboard's panels are not empty.  Last, a dead actor's message
names its node's IP and a log file that holds the actor's own lines.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.dashboard_screenshot import stop_process
from comdml_ray.config import RunConfig
from comdml_ray.experiment import run_experiment
from comdml_ray.runtime.actors import METRIC_NAMES
from comdml_ray.runtime.run import AgentFailure, Run
from comdml_ray.runtime.telemetry import EXTRA_METRIC_NAMES

DASHBOARD = Path(__file__).resolve().parents[1] / "clusters" / "comdml_grafana_dashboard.json"
ROUNDS = 3
AGENTS = 4
# Every agent has these series; a counter appears once it is first incremented, so
# comdml_bytes_offloaded_total exists only for agents that offloaded.
AGENT_TAGGED = [n for n in (*METRIC_NAMES, *EXTRA_METRIC_NAMES) if n not in ("comdml_test_accuracy", "comdml_bytes_offloaded_total")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def ports():
    return {"metrics": free_port(), "prometheus": free_port()}


@pytest.fixture(scope="module")
def prometheus(ports, tmp_path_factory):
    """A Prometheus scraping the module's Ray every second; None when the binary is missing."""
    binary = shutil.which("prometheus")
    if binary is None:
        yield None
        return
    d = tmp_path_factory.mktemp("prometheus")
    (d / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: ray, static_configs: [{{targets: ['127.0.0.1:{ports['metrics']}']}}]}}]\n"
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={d / 'prometheus.yml'}",
            f"--storage.tsdb.path={d / 'data'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{ports['prometheus']}"
    finally:
        stop_process(proc, timeout_s=20)


@pytest.fixture(scope="module")
def run(ports, prometheus, tmp_path_factory):
    """The module's Ray and one finished run: (summary, rounds.csv, agents.csv)."""
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=ports["metrics"],
        _system_config={"metrics_report_interval_ms": 1000},
    )
    out = tmp_path_factory.mktemp("run")
    cfg = RunConfig(agents=AGENTS, rounds=ROUNDS, train_samples=1200, lr=0.05, algorithm="comdml", progress=False, num_gpus=0, out=str(out))
    summary = run_experiment(cfg, log=quiet, keep_ray=True)
    yield summary, pd.read_csv(out / "rounds.csv"), pd.read_csv(out / "agents.csv")
    ray.shutdown()


def scrape(port: int) -> dict[str, list]:
    """Prometheus text of Ray's endpoint, as {sample name: [samples]} for the project's series."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("ray_comdml_"):
                found.setdefault(s.name, []).append(s)
    return found


def wait_for_final_values(port: int, timeout_s: float = 90.0) -> dict[str, list]:
    """Ray exports once per report interval: poll until every agent's round counter shows the whole run."""
    deadline = time.monotonic() + timeout_s
    found: dict[str, list] = {}
    while time.monotonic() < deadline:
        found = scrape(port)
        counts = {s.labels["agent"]: s.value for s in found.get("ray_comdml_rounds_total", [])}
        if len(counts) == AGENTS and all(v == ROUNDS for v in counts.values()) and "ray_comdml_test_accuracy" in found:
            return found
        time.sleep(1.0)
    pytest.fail(f"after {timeout_s:.0f} s the endpoint still lacks the run's final values; it has {sorted(found)}")


def by_agent(found: dict[str, list], name: str) -> dict[int, float]:
    samples = found[f"ray_{name}"]
    out = {int(s.labels["agent"]): s.value for s in samples}
    assert len(out) == len(samples), f"{name}: more than one series per agent: {samples}"
    return out


def test_metrics_reach_rays_prometheus_endpoint_with_agent_tags_and_the_runs_values(run, ports):
    summary, rounds, agents = run
    found = wait_for_final_values(ports["metrics"])
    for name in (*METRIC_NAMES, *EXTRA_METRIC_NAMES):
        assert f"ray_{name}" in found, f"ray_{name} missing from the endpoint"
    for name in AGENT_TAGGED:
        assert set(by_agent(found, name)) == set(range(AGENTS)), name
    last = agents[agents["round"] == ROUNDS - 1].set_index("agent")
    assert by_agent(found, "comdml_rounds_total") == dict.fromkeys(range(AGENTS), ROUNDS)
    assert by_agent(found, "comdml_round") == dict.fromkeys(range(AGENTS), ROUNDS - 1)  # index of the last round
    finish = by_agent(found, "comdml_round_virtual_time_s")
    assert all(math.isclose(finish[k], last.loc[k, "virtual_finish_s"], rel_tol=1e-6) for k in range(AGENTS))
    assert math.isclose(max(finish.values()), rounds["round_virtual_s"].iloc[-1], rel_tol=1e-6)
    idle = by_agent(found, "comdml_idle_share")
    assert all(0 <= v <= 1 for v in idle.values()) and min(idle.values()) == 0 and max(idle.values()) > 0
    for k in range(AGENTS):
        assert math.isclose(idle[k], 1 - finish[k] / max(finish.values()), rel_tol=1e-6, abs_tol=1e-9)
    pairs = sum(1 for v in by_agent(found, "comdml_partner").values() if v >= 0)
    assert pairs == rounds["pairs"].iloc[-1] > 0
    offloaded = by_agent(found, "comdml_bytes_offloaded_total")
    assert set(offloaded) == set(agents[agents["bytes_offloaded"] > 0]["agent"])
    assert math.isclose(sum(offloaded.values()), summary["bytes_offloaded"], rel_tol=1e-9)
    assert math.isclose(sum(by_agent(found, "comdml_bytes_sent_total").values()), summary["bytes_sent"], rel_tol=1e-9)
    assert all(0 < v < 10 for v in by_agent(found, "comdml_train_loss").values())
    assert all(0 < v < 60 for v in by_agent(found, "comdml_round_wall_time_s").values())
    (acc,) = found["ray_comdml_test_accuracy"]
    assert "agent" not in acc.labels and math.isclose(acc.value, summary["final_accuracy"], rel_tol=1e-9)
    assert {s.labels["NodeAddress"] for s in found["ray_comdml_rounds_total"]} == {n["NodeManagerAddress"] for n in ray.nodes()}


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_uses_only_the_projects_metric_names():
    dash = json.loads(DASHBOARD.read_text())
    known = {f"ray_{n}" for n in (*METRIC_NAMES, *EXTRA_METRIC_NAMES)}
    used = {m for _, expr in dashboard_queries() for m in re.findall(r"ray_comdml_\w+", expr)}
    assert used <= known, f"unknown metrics in the dashboard: {used - known}"
    assert {
        "ray_comdml_rounds_total",
        "ray_comdml_test_accuracy",
        "ray_comdml_round_virtual_time_s",
        "ray_comdml_round_wall_time_s",
        "ray_comdml_partner",
        "ray_comdml_bytes_offloaded_total",
        "ray_comdml_idle_share",
    } <= used
    ids = [p["id"] for p in dash["panels"]]
    assert (
        len(ids) == len(set(ids))
        and dash["uid"]
        and {v["name"] for v in dash["templating"]["list"]} == {"datasource", "SessionName", "agent"}
    )


def test_every_dashboard_panel_has_data_in_prometheus(run, ports, prometheus):
    if prometheus is None:
        pytest.skip("the `prometheus` binary is not installed (apt-get install prometheus; .ci/run does)")
    wait_for_final_values(ports["metrics"])

    def query(expr: str) -> list:
        url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = json.loads(urllib.request.urlopen(url, timeout=10).read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until Prometheus has scraped the final values
        got = query("max(ray_comdml_rounds_total)")
        if got and float(got[0]["value"][1]) == ROUNDS:
            break
        time.sleep(1)
    else:
        pytest.fail("Prometheus never scraped the run's final round counter")
    # rate() needs two scrapes of a series: a short run's counters may have had one when the round counter arrived
    deadline = time.monotonic() + 30
    while True:
        empty = []
        for title, expr in dashboard_queries():
            promql = expr.replace("$SessionName", ".+").replace("$agent", ".+").replace("$__rate_interval", "1m")
            if not query(promql):
                empty.append(f"{title}: {promql}")
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not empty, "panels without data:\n" + "\n".join(empty)
    assert float(query(dashboard_queries()[0][1].replace("$SessionName", ".+"))[0]["value"][1]) == ROUNDS


def test_dead_actor_message_names_node_ip_and_a_log_with_its_lines(run):
    cfg = RunConfig(agents=4, rounds=1, train_samples=1200, agents_per_actor=2, progress=False, num_gpus=0).validate()
    r = Run(cfg, log=quiet)
    try:
        ray.kill(r.hosts[1])
        with pytest.raises(AgentFailure) as info:
            r.run_round(0)
    finally:
        r.shutdown()
    msg = str(info.value)
    (node_ip,) = {n["NodeManagerAddress"] for n in ray.nodes()}
    assert "agents 2-3" in msg and "agents-002-003" in msg and f"on node {node_ip}" in msg and "\n" not in msg
    log_file = re.search(r"its log is (\S+\.err)", msg).group(1)
    assert "agents-002-003 ready on cpu" in Path(log_file).read_text()
