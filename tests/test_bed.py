"""The multi-host bed (`comdml_ray.testbed`) and the cluster runs that only it can check.

One 3-node bed for the module (head + w1 + w2, 1 logical CPU each; links shaped by tc
tbf in both directions, w2 slower): the nodes are apart (own address, own disk, the
root namespace has nothing on the bed's subnet, host names resolve to 127.0.1.1 as
on stock Debian images); a shaped link holds its rate and `tc -s` counts the bytes.
Then the use case end to end: `ray job submit` from inside the head's namespace, 12
ComDML agents in 3 actors on the 3 nodes, a local `--out` on the head, a checkpoint
every round.  It is the regression test of both failures (the gloo group bound to
loopback and never connected across nodes; the actors wrote their checkpoint files
into a path that exists only on the driver's node): rows, summary and checkpoints
are on the head's disk and on no other; its deterministic columns equal the run on
one host; `--resume` from that folder (a driver with `--address HEAD:6379`) too.
Then a whole node lost in round 2 (w2's every process, by PID; the head declares it
dead after DETECT_S): without room on the others its actor waits, with a progress
line, for a replacement w2 and goes on; past `--node-timeout` the run stops in one
sentence with exit 2 and `--resume` finishes it; with room (half a CPU per actor) its
actor is re-placed on a survivor.  Each equals the job's deterministic columns, and
rounds.csv and summary.json name the lost node, the round, the agents and the seconds
lost.  A head gone while a run (driven from w1) starts: one sentence, exit 2.  The
test holds the driver (SIGSTOP to its process group, then SIGCONT) while it stops a
node, so that the loss lands where the test says (round 2, start-up) however fast or
loaded the machine: a 3-round run of small data could otherwise finish first.  Then
ComDML on the wall clock over the shaped links (`--emulate compute`, one agent per
node): its activations cross the tc links.  Last, `down` (and an interrupted or failed
`up`) leaves nothing: no namespace, veth, qdisc, mount or process.
Needs root and iproute2 (CI runs as root); elsewhere the module skips saying why.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from comdml_ray.testbed import Bed, BedSpec, LinkSpec, leftovers, unavailable_reason
from comdml_ray.testbed.bed import PROJECT_ROOT, PYTHON, RAY, STATE_ROOT, Proc

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

# The tests' own beds, named by this process: apart from one a person may have up (cdbed) and
# from the beds of another test run on the same machine, which `down` must never touch.
NAME = f"cdbedt{os.getpid() % 10000:04d}"  # cdbed + at most 6 letters or digits, "x"/"q" added below
RUN_PY = str(PROJECT_ROOT / "benchmarks" / "run.py")
SMALL = ["--train-samples", "1200", "--no-progress", "--eval-samples", "0"]
W2_RATE = "300mbit"
DETECT_S = 3.0  # the head declares a lost node dead after 3 s (Ray's default, about 15 s, would add 3 x 12 s here)


@pytest.fixture(scope="module")
def bed():
    spec = BedSpec(name=NAME, nodes=3, cpus=1, link=LinkSpec.parse("1gbit"), node_links={"w2": LinkSpec.parse(W2_RATE)}, detect_s=DETECT_S)
    b = Bed(spec).up(log=lambda *_: None)  # a failed up removes what it made (and nothing of a bed of the same name)
    try:
        yield b
    finally:
        b.down()


def sh(bed: Bed, node: str, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return bed.run(node, ["sh", "-c", script], timeout=timeout)


def py(bed: Bed, node: str, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return bed.run(node, [PYTHON, "-c", code], timeout=timeout)


# ----------------------------------------------------------------------------- the bed


def test_nodes_have_their_own_address_disk_and_host_name(bed):
    ips = {n.name: n.ip for n in bed.state.nodes}
    assert len(set(ips.values())) == 3 and all(ip.startswith("198.18.") for ip in ips.values())
    for n in bed.state.nodes:
        r = sh(bed, n.name, "ip -o -4 addr show dev eth0; hostname; getent hosts $(hostname)")
        assert f"inet {n.ip}/24" in r.stdout, r.stdout + r.stderr
        assert f"127.0.1.1       {n.hostname}" in r.stdout  # what stock Debian images do: failure 1's trigger
    assert sh(bed, "w1", "echo w1 > /tmp/only-on-w1 && cat /tmp/only-on-w1").stdout.strip() == "w1"
    assert sh(bed, "head", "test -e /tmp/only-on-w1; echo $?").stdout.strip() == "1"
    assert not os.path.exists("/tmp/only-on-w1")
    assert bed.path("w1", "/tmp/only-on-w1").read_text() == "w1\n"
    assert py(bed, "w2", "import comdml_ray.testbed, torch; print('ok')").stdout.strip() == "ok"  # python, venv and project visible
    # The root namespace has no interface, address or route on the bed's subnet.
    routes = subprocess.run(["ip", "route", "show", "root", "198.18.0.0/15"], capture_output=True, text=True, check=True).stdout
    addrs = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    assert routes.strip() == "" and "198.18." not in addrs and "198.19." not in addrs


def test_a_shaped_link_holds_its_rate_and_tc_counts_the_bytes(bed):
    size = 15 * 2**20
    before = bed.link_counters()
    server = bed.popen("w2", [PYTHON, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        r = py(bed, "head", SENDER.format(ip=bed.node("w2").ip, size=size))
        assert r.returncode == 0, r.stderr
        got = int(server.communicate(timeout=60)[0].strip())
    finally:
        if server.poll() is None:
            server.kill()
    seconds = float(r.stdout)
    assert got == size
    rate = size * 8 / seconds
    assert rate <= LinkSpec.parse(W2_RATE).rate_bits * 1.1, f"{rate / 1e6:.0f} Mbit/s over a {W2_RATE} link"
    after = bed.link_counters()
    assert after["w2"]["tc_received_bytes"] - before["w2"]["tc_received_bytes"] >= size  # tbf towards w2 saw it all
    assert after["head"]["tc_sent_bytes"] - before["head"]["tc_sent_bytes"] >= size


RECEIVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 7777)); s.listen(1)
c, _ = s.accept(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    n += len(b)
print(n)
"""
SENDER = """
import socket, time
for _ in range(50):
    try:
        c = socket.create_connection(("{ip}", 7777), timeout=5); break
    except OSError:
        time.sleep(0.2)
t = time.perf_counter(); c.sendall(bytes({size})); c.shutdown(socket.SHUT_WR); c.recv(1); print(time.perf_counter() - t)
"""


# ----------------------------------------------------------------------------- the use case and the two failures

ARGS = ["--agents", "12", "--rounds", "3", "--algorithm", "comdml", "--checkpoint-every", "1", *SMALL]


@pytest.fixture(scope="module")
def job(bed):
    """`ray job submit` from inside the head's namespace: 12 ComDML agents in 3 actors (one per node), a local --out on the head."""
    argv = [RAY, "job", "submit", "--address", bed.dashboard_url, "--", PYTHON, RUN_PY, *ARGS, "--address", "auto", "--out", "/tmp/job"]
    return bed.run("head", argv, timeout=600)


def test_collective_binds_to_the_node_ip(bed, job):
    """Failure 1: `join_collective` failed at start-up (gloo offered 127.0.1.1 to its peers on other nodes)."""
    assert "connectFullMesh" not in job.stdout + job.stderr
    assert job.returncode == 0 and "succeeded" in job.stdout, (job.stdout + job.stderr)[-3000:]
    summary = json.loads(bed.path("head", "/tmp/job/summary.json").read_text())
    assert summary["actors"] == 3  # one per node: 1 CPU each, 1 CPU per actor
    assert pd.read_csv(bed.path("head", "/tmp/job/rounds.csv"))["pairs"].sum() > 0  # activations crossed between nodes too


def test_checkpoints_of_a_local_out_are_on_the_driver_node(bed, job):
    """Failure 2: the actors on w1 and w2 wrote their group files into /tmp/job/checkpoints/... of their own disks."""
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    folder = json.loads(bed.path("head", "/tmp/job/checkpoints/latest.json").read_text())["folder"]
    assert folder == "round-00002"
    files = sorted(os.listdir(bed.path("head", f"/tmp/job/checkpoints/{folder}")))
    assert files == ["driver.pkl", "group-000.pt", "group-001.pt", "group-002.pt", "model.pt"]
    for w in ("w1", "w2"):
        assert not bed.path(w, "/tmp/job").exists()


def test_the_job_equals_one_host_and_resumes(bed, job, tmp_path):
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    out = bed.path("head", "/tmp/job")
    rounds = pd.read_csv(out / "rounds.csv")
    assert len(rounds) == 3
    env = dict(os.environ, COMDML_DASHBOARD="0", PYTHONPATH=str(PROJECT_ROOT))
    argv = [PYTHON, RUN_PY, *ARGS, "--num-cpus", "3", "--out", str(tmp_path / "one")]
    one = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert one.returncode == 0, one.stderr[-3000:]
    same_deterministic_columns(rounds, pd.read_csv(tmp_path / "one" / "rounds.csv"))

    resumed = bed.run("head", [PYTHON, RUN_PY, "--address", bed.gcs_address, "--resume", "/tmp/job", "--no-progress"], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming /tmp/job at round 2" in resumed.stdout + resumed.stderr
    same_deterministic_columns(pd.read_csv(out / "rounds.csv"), rounds)


def same_deterministic_columns(got: pd.DataFrame, want: pd.DataFrame) -> None:
    from comdml_ray.results.report import DETERMINISTIC_COLUMNS

    pd.testing.assert_frame_equal(
        got[DETERMINISTIC_COLUMNS].reset_index(drop=True), want[DETERMINISTIC_COLUMNS].reset_index(drop=True), check_exact=True
    )


# ----------------------------------------------------------------------------- the wall clock over real links

WALL = ["--clock", "wall", "--emulate", "compute", "--agents-per-actor", "1", "--cpus-per-agent", "1", "--placement", "spread"]


def test_a_comdml_wall_round_over_the_shaped_links(bed):
    """`--emulate compute`: compute paced to the profile, the activations over the nodes' real (tbf) links.

    Three agents, one per node, one of them 6x slower: it offloads, its chunks travel over
    the tc links (the counters see at least the bytes offloaded), the helpers measure those
    links, and each round's wall time is the driver's own measurement.
    """
    for n in bed.state.nodes:  # every node reads the preset (each has its own /tmp)
        bed.path(n.name, "/tmp/one_slow.csv").write_text("agent,slowdown,bandwidth_mbps\n0,1,125\n1,1,125\n2,6,125\n")
    args = ["--agents", "3", "--rounds", "2", "--algorithm", "comdml", "--reference-gflops", "0.5", "--train-samples", "360"]
    argv = [PYTHON, RUN_PY, *args, *WALL, "--heterogeneity", "/tmp/one_slow.csv", "--eval-every", "100", "--no-progress"]
    before = bed.link_counters()
    r = bed.run("head", [*argv, "--address", bed.gcs_address, "--out", "/tmp/wall"], timeout=600)
    after = bed.link_counters()
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    out = bed.path("head", "/tmp/wall")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clock"] == "wall" and summary["emulate"] == "compute" and summary["actors"] == 3
    rounds = pd.read_csv(out / "rounds.csv")
    assert len(rounds) == 2 and (rounds["pairs"] == 1).all()
    sent = sum(after[n]["tc_sent_bytes"] - before[n]["tc_sent_bytes"] for n in after)
    assert sent >= rounds["bytes_offloaded"].sum()  # the activations crossed the shaped links
    # the compute is paced: a round lasts at least most of what the clock charges for the work done
    assert (rounds["round_wall_s"] > 0.5 * rounds["round_virtual_s"]).all()
    assert pd.read_csv(out / "plan.csv")["observed_finish_s"].notna().all()


# ----------------------------------------------------------------------------- losing a whole node


def run_losing_w2(bed: Bed, out: str, extra: list[str], log: Path, on_loss=None, started: dict | None = None) -> int:
    """The job's run, driven from the head (--address), losing w2 (every process of it, by PID) in round 2; its exit status."""
    argv = [PYTHON, RUN_PY, *ARGS, "--address", bed.gcs_address, "--out", out, *extra]
    with open(log, "w") as f:
        p = bed.popen("head", argv, stdout=f, stderr=subprocess.STDOUT)
    if started is not None:
        started["p"] = p
    rows = bed.path("head", f"{out}/rounds.csv")
    try:
        deadline = time.monotonic() + 300
        while not (rows.exists() and len(rows.read_text().splitlines()) >= 3):  # rounds 0 and 1 written: round 2 runs
            assert p.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        with held(p):
            bed.stop_node("w2")
        if on_loss is not None:
            on_loss(log)
        return p.wait(timeout=300)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # the driver we started (its own process group); `down` ends the rest
            p.wait()


@contextlib.contextmanager
def held(p: subprocess.Popen):
    """The driver we started, stopped (SIGSTOP to its process group) while the block runs, then continued.

    p is nsenter, which mirrors its child's stop as a shell does (on seeing the child
    stopped it stops itself, and continues the child once continued): after the
    group's SIGCONT it may stop itself again, so it is continued until it stays running.
    """
    os.killpg(p.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(p.pid, signal.SIGCONT)
        nsenter = psutil.Process(p.pid)
        for _ in range(40):
            time.sleep(0.05)
            with contextlib.suppress(psutil.NoSuchProcess):
                if nsenter.status() == psutil.STATUS_STOPPED:
                    os.kill(p.pid, signal.SIGCONT)


def w2_back(bed: Bed) -> None:
    """A replacement w2 joins (its Ray started again on the node's namespaces)."""
    bed.start_ray(bed.node("w2"))
    bed.wait_nodes(3, timeout_s=60)


def wait_for_line(log: Path, text: str, p: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Wait until the driver's log has a line with text (the driver still running)."""
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        assert p.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)


def lost_w2_in_round_2(bed: Bed, out: str) -> dict:
    """rounds.csv and summary.json say: w2 lost in round 2, with the agents of one actor, and seconds lost."""
    rounds = pd.read_csv(bed.path("head", f"{out}/rounds.csv"), keep_default_na=False)
    summary = json.loads(bed.path("head", f"{out}/summary.json").read_text())
    ip = bed.node("w2").ip
    assert rounds["failures"].tolist() == [0, 0, 1]
    assert rounds["lost_nodes"].tolist() == ["", "", ip] and float(rounds["lost_wall_s"].iloc[2]) > 0
    (f,) = summary["failures"]
    assert (f["round"], f["node"], f["node_lost"]) == (2, ip, True) and f["agents"] == rounds["failed_agents"].iloc[2]
    assert summary["lost_nodes"] == [ip] and summary["time_lost_s"] == f["lost_wall_s"] > 0
    return summary


def test_a_lost_node_without_room_waits_for_one_to_join(bed, job, tmp_path):
    """One CPU per actor, one actor per node: w2's actor waits, with a progress line, until a replacement w2 joins."""
    log = tmp_path / "driver.log"
    driver = {}

    def replace_w2(lg: Path) -> None:
        wait_for_line(lg, "waiting for a node to join", driver["p"])
        bed.start_ray(bed.node("w2"))  # the run itself waits until it has joined

    try:
        assert run_losing_w2(bed, "/tmp/wait", ["--node-timeout", "300"], log, on_loss=replace_w2, started=driver) == 0, log.read_text()[
            -3000:
        ]
    finally:
        if bed.alive_nodes() < 3:  # the test failed before its replacement: the next tests need w2
            w2_back(bed)
    assert "a node with room joined" in log.read_text()
    lost_w2_in_round_2(bed, "/tmp/wait")
    same_deterministic_columns(pd.read_csv(bed.path("head", "/tmp/wait/rounds.csv")), pd.read_csv(bed.path("head", "/tmp/job/rounds.csv")))


def test_past_the_node_timeout_the_run_stops_in_one_sentence_and_resumes(bed, job, tmp_path):
    log = tmp_path / "driver.log"
    try:
        assert run_losing_w2(bed, "/tmp/stop", ["--node-timeout", "0"], log) == 2, log.read_text()[-3000:]
    finally:
        w2_back(bed)
    errors = [ln for ln in log.read_text().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "--node-timeout" in errors[0] and errors[0].endswith("continue with --resume /tmp/stop."), errors
    assert "waiting for a node to join" in log.read_text()
    assert "Traceback" not in log.read_text()
    summary = json.loads(bed.path("head", "/tmp/stop/summary.json").read_text())
    assert summary["aborted"] and summary["lost_nodes"] == [bed.node("w2").ip]
    resumed = bed.run("head", [PYTHON, RUN_PY, "--address", bed.gcs_address, "--resume", "/tmp/stop", "--no-progress"], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming /tmp/stop at round 2" in resumed.stdout + resumed.stderr
    lost_w2_in_round_2(bed, "/tmp/stop")
    same_deterministic_columns(pd.read_csv(bed.path("head", "/tmp/stop/rounds.csv")), pd.read_csv(bed.path("head", "/tmp/job/rounds.csv")))


def test_a_lost_node_with_room_left_goes_on_from_the_checkpoint_on_the_others(bed, job, tmp_path):
    """Half a CPU per actor, spread: the survivors have room for w2's actor, which Ray re-places there.

    Last of the node-loss tests: w2 stays lost (`down` follows).
    """
    log = tmp_path / "driver.log"
    extra = ["--cpus-per-agent", "0.5", "--agents-per-actor", "4", "--placement", "spread"]
    assert run_losing_w2(bed, "/tmp/room", extra, log) == 0, log.read_text()[-3000:]
    assert "whose actor now runs on" in log.read_text()
    summary = lost_w2_in_round_2(bed, "/tmp/room")
    assert summary["aborted"] is None
    same_deterministic_columns(pd.read_csv(bed.path("head", "/tmp/room/rounds.csv")), pd.read_csv(bed.path("head", "/tmp/job/rounds.csv")))


def test_a_head_gone_while_the_run_starts_is_one_sentence_and_exit_2(bed, tmp_path):
    """A driver on w1 joins the head; the head's every process ends while the run places its actors.

    Last but one: the bed's cluster is gone after it (`down` follows).
    """
    log = tmp_path / "driver.log"
    argv = [PYTHON, RUN_PY, *ARGS, "--address", bed.gcs_address, "--out", "/tmp/headless"]
    with open(log, "w") as f:
        p = bed.popen("w1", argv, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for_line(log, "layout:", p)  # joined, now placing its actors
        with held(p):  # it cannot finish starting (or the run) before the head is gone
            bed.stop_node("head")
        t0 = time.monotonic()
        assert p.wait(timeout=60) == 2, log.read_text()[-3000:]
        assert time.monotonic() - t0 < 30
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    errors = [ln for ln in log.read_text().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "stopped answering" in errors[0] and "with nothing computed" in errors[0], log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


# ----------------------------------------------------------------------------- nothing left


def test_down_leaves_nothing(bed):
    state = bed.state
    procs = [Proc(p.pid, p.create_time()) for n in state.nodes for p in bed.processes(n)]  # psutil keeps the start time
    assert len(procs) > 5  # inits, Ray's processes on w1 (the head and w2 were lost by the tests before)
    bed.down()
    assert leftovers(NAME, state) == []
    assert [p.pid for p in procs if p.alive()] == []  # same PID and start time, not a zombie


def _testbed(*args: str, name: str = f"{NAME}x", timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    argv = [PYTHON, "-m", "comdml_ray.testbed", "--name", name, *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_an_interrupted_up_leaves_nothing():
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    argv = [PYTHON, "-m", "comdml_ray.testbed", "--name", f"{NAME}x", "up", "--nodes", "2", "--link", "100mbit"]
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        state = STATE_ROOT / f"{NAME}x" / "state.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (state.exists() and '"ray": {' in state.read_text()):
            time.sleep(0.1)  # until the head's `ray start` runs: namespaces, veths, qdiscs, mounts and processes all exist
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 130 and "interrupted" in err, err
        assert leftovers(f"{NAME}x") == []
    finally:
        if p.poll() is None:
            p.kill()
        _testbed("down")  # whatever a failed check left (nothing, when it passed)


def test_a_failed_up_leaves_nothing_and_says_why_in_one_sentence():
    r = _testbed("up", "--nodes", "2", "--object-store-mb", "1")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("testbed: `ray start` on node head exited") and "Traceback" not in r.stderr.split("\n")[0]
    assert leftovers(f"{NAME}x") == []


def test_bad_input_is_one_sentence():
    r = _testbed("up", "--link", "fast")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "100mbit:2ms" in r.stderr, r.stderr
    r = _testbed("status", name=f"{NAME}q")
    assert r.returncode == 2 and "no bed named" in r.stderr and r.stderr.count("\n") == 1
    r = _testbed("up", "--node-resources", "w1=comdml_slot_0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "NAME:AMOUNT" in r.stderr, r.stderr


def test_a_checkout_under_a_private_path_stays_visible_on_the_nodes():
    """A clone in /tmp (as a CI runner may make) must not vanish under a node's private /tmp: it is bound back."""
    from comdml_ray.testbed.bed import _kept_visible

    private = ["/tmp", "/var/tmp", "/dev/shm"]
    assert _kept_visible(private, {"/tmp/ci/clone", "/tmp/ci/clone/.venv", "/usr"}) == ["/tmp/ci/clone"]
    assert _kept_visible(private, {"/work/main", "/work/main/.venv", "/root/.pyenv/versions/3.11.7"}) == []
    assert _kept_visible(private, {"/tmpfoo/x"}) == []  # a prefix of the name is not a parent folder
