"""The bed itself: namespaces, links, private disks and one Ray node in each, up and down by PID.

Layout of a bed named NAME (default `cdbed`) with nodes `head`, `w1`, `w2`, ...:
- network namespace `NAME-br` holds the bridge `br0`; node i has network namespace
  `NAME-<node>` whose `eth0` is one end of a veth pair, the other end (`v<i>`) a port of
  `br0`.  Addresses 198.18.S.(10+i)/24 (S: the bed's subnet number, 198.18.0.0/15 is
  the benchmarking range): nothing is ever added to the root namespace, so a packet
  to a node cannot leave the machine;
- a rate (`tc` tbf) shapes both directions of a node's link: `eth0`'s egress and the
  bridge port's egress towards it; a delay needs the kernel's netem qdisc;
- each node's init (PID 1 of its own PID namespace, started through `ip netns exec`
  and `unshare --pid --mount --uts`) mounts a private tmpfs over /tmp, /var/tmp,
  /dev/shm and the spec's extra paths, binds its own /etc/hosts (`127.0.1.1 <its host
  name>`, as stock Debian images have it) and then only reaps children.  Every command
  on a node enters all of its namespaces with `nsenter`; the host reads a node's files
  under /proc/<init pid>/root;
- on each node `ray start --block` (the head with its dashboard, every node with
  `--node-ip-address`, token authentication with the bed's own token), the project on
  PYTHONPATH; `BedSpec.detect_s` shortens how long the head takes to declare a lost
  node dead (Ray's health checks; its default, about 15 s, otherwise).
State (node PIDs with their start times, the token, the subnet) is kept in
/run/comdml-testbed/NAME/state.json, written before each thing is made, so `down`
from any process removes everything: it kills the recorded PIDs (only while their
start time matches) and every process inside the bed's namespaces, deletes the
namespaces (their veths, qdiscs and bridge go with them; the private mounts die with
the last process of their mount namespace), then the state.  `leftovers(NAME)` lists
whatever of a bed still exists (the tests check it is nothing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PREFIX = "cdbed"  # every bed's name starts with this: `down --all` and `leftovers` look for it
STATE_ROOT = Path("/run/comdml-testbed")
NET = "198.18"  # 198.18.S.0/24 per bed, S in 1..254
GCS_PORT = 6379
DASHBOARD_PORT = 8265
PRIVATE_PATHS = ("/tmp", "/var/tmp", "/dev/shm")
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # comdml_ray/testbed/ -> the checkout
PYTHON = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))
RAY_TEMP = "/tmp/ray"  # on the node's own tmpfs
TOOLS = ("ip", "tc", "unshare", "nsenter", "mount")
STARTUP_TIMED_OUT = "timed out during startup"  # what `ray start` says when its raylet did not register in time


class BedError(RuntimeError):
    """The bed cannot do what was asked; the message is one sentence naming the fix."""


class BedUnavailable(BedError):
    """This machine cannot host a bed at all (no root, no iproute2, no namespaces)."""


def unavailable_reason(probe: bool = True) -> str | None:
    """Why a bed cannot run here, in one sentence; None when it can (probe: also try to make a network namespace)."""
    if os.geteuid() != 0:
        return "the multi-host test bed needs root (it makes network and mount namespaces); run it as root."
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"the multi-host test bed needs `{tool}` (iproute2 and util-linux), which is not installed here."
    if probe:
        ns = f"{PREFIX}probe{os.getpid()}"
        r = _run(["ip", "netns", "add", ns], check=False)
        if r.returncode != 0:
            return f"this machine does not allow network namespaces (`ip netns add` says: {r.stderr.strip() or r.returncode})."
        _run(["ip", "netns", "del", ns], check=False)
    return None


def _run(argv: list[str], check: bool = True, timeout: float = 60.0, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and r.returncode != 0:
        raise BedError(f"`{' '.join(argv)}` failed: {(r.stderr or r.stdout).strip()}")
    return r


# ----------------------------------------------------------------------------- specification

_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit)$")
_DELAY = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")
_RATE_BITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}


@dataclass(frozen=True)
class LinkSpec:
    """One node's link: a rate (tc units: 100mbit) and a delay (2ms), each optional, applied in both directions."""

    rate: str | None = None
    delay: str | None = None

    @staticmethod
    def parse(text: str) -> LinkSpec:
        """'100mbit:2ms', '100mbit', ':2ms' or '' (unshaped); BedError naming the form otherwise."""
        rate, _, delay = text.strip().lower().partition(":")
        if (rate and not _RATE.match(rate)) or (delay and not _DELAY.match(delay)):
            raise BedError(f"link '{text}' is not RATE[:DELAY]; write it as e.g. 100mbit:2ms, 1gbit or :5ms.")
        return LinkSpec(rate or None, delay or None)

    @property
    def rate_bits(self) -> int | None:
        if self.rate is None:
            return None
        m = _RATE.match(self.rate)
        return int(float(self.rate[: m.start(2)]) * _RATE_BITS[m.group(2)])

    def __str__(self) -> str:
        return f"{self.rate or ''}{':' + self.delay if self.delay else ''}" or "unshaped"


@dataclass
class BedSpec:
    """What `up` builds: a head and nodes-1 workers, each with these logical CPUs/GPUs and link."""

    name: str = PREFIX
    nodes: int = 3
    cpus: int = 1
    gpus: int = 0
    link: LinkSpec = field(default_factory=LinkSpec)
    node_links: dict[str, LinkSpec] = field(default_factory=dict)  # node name -> its own link
    node_cpus: dict[str, int] = field(default_factory=dict)  # node name -> its own logical CPUs
    # node name -> custom Ray resources it offers (`ray start --resources`), e.g. {"w1": {"comdml_slot_0": 1}}: what
    # `--placement slots` pins actor g to, so agent g's link is that node's link
    node_resources: dict[str, dict[str, float]] = field(default_factory=dict)
    private: tuple[str, ...] = ()  # more paths under a private tmpfs on every node
    object_store_mb: int = 200
    # seconds until the head declares a silent node dead (Ray's health checks: 3 missed, detect_s/3 apart);
    # None: Ray's own default, about 15 s (5 missed, 3 s apart), as on a real cluster
    detect_s: float | None = None

    def check(self) -> BedSpec:
        if not re.fullmatch(rf"{PREFIX}[a-z0-9]{{0,6}}", self.name):
            raise BedError(f"bed name '{self.name}' must be '{PREFIX}' followed by at most 6 lowercase letters or digits.")
        if self.detect_s is not None and self.detect_s <= 0:
            raise BedError(f"detect_s {self.detect_s}: give a positive number of seconds, or None for Ray's default.")
        if not 1 <= self.nodes <= 32:
            raise BedError(f"--nodes {self.nodes}: a bed has 1 to 32 nodes.")
        if self.cpus < 0 or self.gpus < 0:
            raise BedError("--cpus and --gpus must be >= 0.")
        names = set(self.node_names)
        unknown = sorted((set(self.node_links) | set(self.node_cpus) | set(self.node_resources)) - names)
        if unknown:
            raise BedError(f"no node named {', '.join(unknown)} in this bed; its nodes are {', '.join(self.node_names)}.")
        for p in self.private:
            if not p.startswith("/") or p == "/":
                raise BedError(f"--private {p}: give an absolute path below /.")
        return self

    @property
    def node_names(self) -> list[str]:
        return ["head"] + [f"w{i}" for i in range(1, self.nodes)]

    def link_of(self, node: str) -> LinkSpec:
        return self.node_links.get(node, self.link)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["link"] = str(self.link)
        d["node_links"] = {k: str(v) for k, v in self.node_links.items()}
        return d


@dataclass
class Proc:
    """A process the bed started, as recorded: its PID and start time (a PID reused by another process does not match)."""

    pid: int
    started: float

    @staticmethod
    def of(pid: int) -> Proc:
        return Proc(pid, psutil.Process(pid).create_time())

    def alive(self) -> psutil.Process | None:
        try:
            p = psutil.Process(self.pid)
            if abs(p.create_time() - self.started) < 0.05 and p.status() != psutil.STATUS_ZOMBIE:
                return p
        except psutil.NoSuchProcess:
            pass
        return None


@dataclass
class Node:
    name: str
    index: int
    ip: str
    netns: str
    hostname: str
    link: str
    cpus: int
    init: Proc | None = None  # PID 1 of the node's PID namespace
    unshare: Proc | None = None  # its parent, in the root PID namespace
    ray: Proc | None = None  # the `nsenter ... ray start --block` process


@dataclass
class State:
    name: str
    subnet: int
    token: str
    spec: dict
    bridge_ns: str
    nodes: list[Node] = field(default_factory=list)

    @staticmethod
    def load(path: Path) -> State:
        d = json.loads(path.read_text())
        nodes = []
        for n in d.pop("nodes"):
            for k in ("init", "unshare", "ray"):
                n[k] = Proc(**n[k]) if n.get(k) else None
            nodes.append(Node(**n))
        return State(**d, nodes=nodes)


# ----------------------------------------------------------------------------- the node's init

INIT = textwrap.dedent(
    """
    import os, socket, subprocess, sys, time
    hostname, rest = sys.argv[1], sys.argv[2:]
    paths, keep = rest[: rest.index("--keep")], rest[rest.index("--keep") + 1 :]
    # What must stay visible under a private path (a checkout or venv under /tmp): held by
    # a descriptor while the tmpfs goes over it, then bound back in place.
    held = {k: os.open(k, os.O_RDONLY | os.O_DIRECTORY) for k in keep}
    for p in paths:
        os.makedirs(p, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777", "bedtmp", p], check=True)
    for k, fd in held.items():
        os.makedirs(k, exist_ok=True)
        # --no-canonicalize: mount(8) would resolve the descriptor's link to the path, now the empty one
        subprocess.run(["mount", "--bind", "--no-canonicalize", f"/proc/{os.getpid()}/fd/{fd}", k], check=True)
        os.close(fd)
    with open("/tmp/.bed-hosts", "w") as f:
        f.write(f"127.0.0.1 localhost\\n127.0.1.1 {hostname}\\n")
    subprocess.run(["mount", "--bind", "/tmp/.bed-hosts", "/etc/hosts"], check=True)
    socket.sethostname(hostname)
    print("bed-node-ready", flush=True)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1)
    """
)


# ----------------------------------------------------------------------------- the bed


class Bed:
    """One bed: `Bed(spec).up()`, or `Bed.attach(name)` for one that is up; `down()` removes it all."""

    def __init__(self, spec: BedSpec | None = None, state: State | None = None):
        self.spec = (spec or BedSpec()).check()
        self.state = state
        self.up_s: float | None = None
        self._children: list[subprocess.Popen] = []  # processes this object started (reaped in down)
        self._logs: list = []

    # -- paths and lookup
    @property
    def dir(self) -> Path:
        return STATE_ROOT / self.spec.name

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @classmethod
    def attach(cls, name: str = PREFIX) -> Bed:
        path = STATE_ROOT / name / "state.json"
        if not path.exists():
            raise BedError(f"no bed named {name} is up; start one with `python -m comdml_ray.testbed up`.")
        st = State.load(path)
        kept = {
            k: st.spec[k] for k in ("cpus", "gpus", "object_store_mb", "detect_s", "node_resources") if k in st.spec
        }  # what start_ray reads
        spec = BedSpec(name=st.name, nodes=len(st.nodes), **kept)
        return cls(spec, st)

    def node(self, name: str) -> Node:
        for n in self.state.nodes:
            if n.name == name:
                return n
        raise BedError(f"no node named {name} in bed {self.spec.name}; its nodes are {', '.join(n.name for n in self.state.nodes)}.")

    @property
    def head(self) -> Node:
        return self.state.nodes[0]

    @property
    def gcs_address(self) -> str:
        return f"{self.head.ip}:{GCS_PORT}"

    @property
    def dashboard_url(self) -> str:
        """The head's dashboard (and Jobs API), as seen from inside the head's namespace."""
        return f"http://127.0.0.1:{DASHBOARD_PORT}"

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self.state), indent=1))
        os.chmod(tmp, 0o600)  # holds the cluster's token
        tmp.replace(self.state_file)

    # -- up
    def up(self, timeout_s: float = 300.0, log=print) -> Bed:
        """Build the bed and start Ray on every node; on any failure or interrupt, remove what was made and re-raise."""
        reason = unavailable_reason()
        if reason:
            raise BedUnavailable(reason)
        if self.state_file.exists() or _netns_of(self.spec.name):
            raise BedError(
                f"a bed named {self.spec.name} exists already; remove it with `python -m comdml_ray.testbed down --name {self.spec.name}`."
            )
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        try:
            self.state = State(self.spec.name, _free_subnet(), secrets.token_hex(32), self.spec.to_dict(), f"{self.spec.name}-br")
            self._save()
            self._network()
            log(f"bed {self.spec.name}: network up ({len(self.state.nodes)} nodes on {NET}.{self.state.subnet}.0/24)")
            for n in self.state.nodes:
                self._start_init(n, deadline)
            self.start_ray(self.head, wait=False)
            self._wait_started_or_retry(self.head, deadline, log)
            for n in self.state.nodes[1:]:
                self.start_ray(n, wait=False)
            for n in self.state.nodes[1:]:
                self._wait_started_or_retry(n, deadline, log)
            self.wait_nodes(len(self.state.nodes), deadline - time.monotonic())
        except BaseException:
            self.down()
            raise
        self.up_s = time.monotonic() - t0
        log(f"bed {self.spec.name}: {len(self.state.nodes)} Ray nodes up in {self.up_s:.0f} s; head {self.gcs_address}")
        return self

    def _network(self) -> None:
        st, spec = self.state, self.spec
        br = st.bridge_ns
        _run(["ip", "netns", "add", br])
        _run(["ip", "-n", br, "link", "set", "lo", "up"])
        _run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", br, "link", "set", "br0", "up"])
        for i, name in enumerate(spec.node_names):
            n = Node(
                name, i, f"{NET}.{st.subnet}.{10 + i}", f"{spec.name}-{name}", f"{spec.name}-{name}", str(spec.link_of(name)),
                spec.node_cpus.get(name, spec.cpus),
            )  # fmt: skip
            st.nodes.append(n)
            self._save()
            _run(["ip", "netns", "add", n.netns])
            _run(["ip", "-n", br, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", n.netns])
            _run(["ip", "-n", br, "link", "set", f"v{i}", "master", "br0", "up"])
            _run(["ip", "-n", n.netns, "addr", "add", f"{n.ip}/24", "dev", "eth0"])
            _run(["ip", "-n", n.netns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", n.netns, "link", "set", "lo", "up"])
            link = spec.link_of(name)
            _shape(n.netns, "eth0", link)  # the node's sending direction
            _shape(br, f"v{i}", link)  # its receiving direction

    def _start_init(self, n: Node, deadline: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / f"{n.name}-init.log", "w")  # noqa: SIM115 -- the init writes to it while the node lives
        self._logs.append(log)
        paths = list(dict.fromkeys([*PRIVATE_PATHS, *self.spec.private]))
        argv = ["ip", "netns", "exec", n.netns, "unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--uts"]
        argv += ["--propagation", "private", PYTHON, "-c", INIT, n.hostname, *paths, "--keep", *_kept_visible(paths)]
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._children.append(p)
        n.unshare = Proc.of(p.pid)
        self._save()
        while True:
            kids = psutil.Process(p.pid).children() if p.poll() is None else []
            if kids and "bed-node-ready" in Path(log.name).read_text():
                n.init = Proc.of(kids[0].pid)
                self._save()
                return
            if p.poll() is not None:
                raise BedError(f"node {n.name}'s namespaces could not be set up: {_last_line(Path(log.name).read_text())}")
            if time.monotonic() > deadline:
                raise BedError(f"node {n.name}'s namespaces were not ready in time; see {log.name}.")
            time.sleep(0.05)

    # -- commands on a node
    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of every process on a node: this project on PYTHONPATH, the venv's tools first, the bed's token."""
        drop = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "TMPDIR")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env |= {
            "PYTHONPATH": path,
            "PATH": os.pathsep.join([str(Path(PYTHON).parent), env.get("PATH", "/usr/bin:/bin")]),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.state.token,
        }
        return env | (extra or {})

    def argv(self, node: str | Node, argv: list[str], cwd: str | None = None) -> list[str]:
        """argv run inside every namespace of `node` (cwd: inside its mount namespace; default the project root)."""
        n = node if isinstance(node, Node) else self.node(node)
        if n.init is None or n.init.alive() is None:
            raise BedError(f"node {n.name} of bed {self.spec.name} is not running.")
        return ["nsenter", f"--target={n.init.pid}", "--mount", "--uts", "--net", "--pid", f"--wd={cwd or PROJECT_ROOT}", "--", *argv]

    def run(
        self, node: str | Node, argv: list[str], timeout: float = 300.0, cwd: str | None = None, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        """Run argv on a node and wait: its CompletedProcess (text output)."""
        return subprocess.run(
            self.argv(node, argv, cwd), env=self.env(env), capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def popen(self, node: str | Node, argv: list[str], cwd: str | None = None, env: dict | None = None, **kw) -> subprocess.Popen:
        """Start argv on a node without waiting (its process lives in the node's PID namespace: `down` ends it)."""
        p = subprocess.Popen(self.argv(node, argv, cwd), env=self.env(env), start_new_session=True, stdin=subprocess.DEVNULL, **kw)
        self._children.append(p)
        return p

    def path(self, node: str | Node, path: str) -> Path:
        """Where this (root) namespace sees `path` of a node's own disk."""
        n = node if isinstance(node, Node) else self.node(node)
        return Path(f"/proc/{n.init.pid}/root") / path.lstrip("/")

    # -- Ray on a node
    def start_ray(self, n: Node, deadline: float | None = None, wait: bool = True) -> None:
        """`ray start --block` on node n (the head with its dashboard); waits until it says it started."""
        obj = str(self.spec.object_store_mb * 2**20)
        common = [f"--node-ip-address={n.ip}", f"--num-cpus={n.cpus}", f"--num-gpus={self.spec.gpus}", f"--temp-dir={RAY_TEMP}"]
        common += [f"--object-store-memory={obj}", "--disable-usage-stats"]
        if self.spec.node_resources.get(n.name):
            common += [f"--resources={json.dumps(self.spec.node_resources[n.name])}"]
        if n.index == 0:
            argv = [RAY, "start", "--head", "--block", f"--port={GCS_PORT}", "--include-dashboard=true", "--dashboard-host=0.0.0.0"]
            argv += [f"--dashboard-port={DASHBOARD_PORT}", *common]
        else:
            argv = [RAY, "start", "--block", f"--address={self.gcs_address}", *common]
        log = open(self.dir / f"{n.name}-ray.log", "w")  # noqa: SIM115 -- `ray start --block` writes to it while the node lives
        self._logs.append(log)
        p = self.popen(n, argv, cwd="/tmp", env=self._health_env(), stdout=log, stderr=subprocess.STDOUT)
        n.ray = Proc.of(p.pid)
        self._save()
        if wait:
            self._wait_started(n, deadline or time.monotonic() + 120)

    def _health_env(self) -> dict[str, str]:
        """Ray's health-check settings for `spec.detect_s` (read by the head's GCS at start); none for Ray's default."""
        if self.spec.detect_s is None:
            return {}
        period = max(int(self.spec.detect_s * 1000 / 3), 100)
        # A lost node's port refuses at once, so a check fails fast however long its timeout; a long timeout (Ray's
        # default, 10 s) keeps a node that is only slow (a loaded machine, a node still starting) from being declared dead.
        return {
            "RAY_health_check_period_ms": str(period),
            "RAY_health_check_timeout_ms": "10000",
            "RAY_health_check_failure_threshold": "3",
        }

    def _wait_started_or_retry(self, n: Node, deadline: float, log) -> None:
        """Wait for `ray start` on n; once more if Ray gave up on its raylet's registration (30 s, fixed in Ray: a loaded machine)."""
        try:
            self._wait_started(n, deadline)
        except BedError as e:
            if STARTUP_TIMED_OUT not in str(e) or time.monotonic() > deadline:
                raise
            log(f"bed {self.spec.name}: node {n.name}'s raylet did not register within Ray's 30 s; starting it once more")
            self.stop_node(n.name)
            self.start_ray(n, deadline)

    def _wait_started(self, n: Node, deadline: float) -> None:
        log = self.dir / f"{n.name}-ray.log"
        while "Ray runtime started" not in log.read_text():
            if n.ray.alive() is None:
                raise BedError(f"`ray start` on node {n.name} exited, saying: {_last_line(log.read_text())}")
            if time.monotonic() > deadline:
                raise BedError(f"`ray start` on node {n.name} did not finish in time; see {log}.")
            time.sleep(0.2)

    def wait_nodes(self, count: int, timeout_s: float = 120.0) -> None:
        """Wait until `ray status` on the head lists `count` alive nodes."""
        deadline = time.monotonic() + max(timeout_s, 1.0)
        while True:
            got = self.alive_nodes()
            if got == count:
                return
            if time.monotonic() > deadline:
                raise BedError(f"the cluster shows {got} of {count} nodes; see the logs in {self.dir}.")
            time.sleep(1.0)

    def alive_nodes(self) -> int:
        r = self.run("head", [RAY, "status", f"--address={self.gcs_address}"], timeout=60)
        active = r.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in r.stdout else ""
        return len(re.findall(r"^\s*\d+ node_", active, flags=re.M))

    def processes(self, node: str | Node) -> list[psutil.Process]:
        """Every process of a node (its PID namespace), init first."""
        n = node if isinstance(node, Node) else self.node(node)
        init = n.init.alive() if n.init else None
        if init is None:
            return []
        ns = os.readlink(f"/proc/{init.pid}/ns/pid")
        found = [init]
        for p in psutil.process_iter():
            with contextlib.suppress(OSError, psutil.Error):
                if p.pid != init.pid and os.readlink(f"/proc/{p.pid}/ns/pid") == ns:
                    found.append(p)
        return found

    def stop_node(self, node: str) -> list[int]:
        """Lose a node: SIGKILL every process of it but its init (raylet, workers, everything Ray started), by PID; returns them.

        Its disk and network stay, so `start_ray` can bring a replacement node up in its place.
        """
        n = self.node(node)
        victims = self.processes(n)[1:]
        for p in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        still_running(victims, 10.0)
        self._reap()
        return [p.pid for p in victims]

    # -- links
    def link_counters(self) -> dict[str, dict[str, int]]:
        """Per node: bytes it sent and received on its link (the veth's counters) and, where shaped, `tc -s`'s per direction."""
        out = {}
        for n in self.state.nodes:
            stats = json.loads(_run(["ip", "-n", n.netns, "-s", "-j", "link", "show", "eth0"]).stdout)[0]["stats64"]
            row = {"tx_bytes": int(stats["tx"]["bytes"]), "rx_bytes": int(stats["rx"]["bytes"])}
            for key, ns, dev in (("tc_sent_bytes", n.netns, "eth0"), ("tc_received_bytes", self.state.bridge_ns, f"v{n.index}")):
                qd = json.loads(_run(["tc", "-n", ns, "-s", "-j", "qdisc", "show", "dev", dev]).stdout or "[]")
                root = [q for q in qd if q.get("root")]
                if root and root[0].get("kind") not in ("noqueue",):
                    row[key] = int(root[0].get("bytes", 0))
            out[n.name] = row
        return out

    # -- status and down
    def status(self) -> list[str]:
        """Lines describing each node: address, link, processes, whether its Ray runs."""
        lines = [f"bed {self.spec.name}: head {self.gcs_address}, dashboard {self.dashboard_url} (inside the head's namespace)"]
        for n in self.state.nodes:
            procs = self.processes(n)
            ray_up = bool(n.ray and n.ray.alive())
            lines.append(
                f"  {n.name:5s} {n.ip:15s} netns {n.netns:16s} link {n.link:14s} cpus {n.cpus}  "
                f"{len(procs)} processes, ray {'running' if ray_up else 'stopped'}"
            )
        return lines

    def down(self) -> list[str]:
        """Remove everything of this bed (also after a crash of the process that made it); returns what it removed."""
        removed = down(self.spec.name, self.state)
        self._reap()
        for f in self._logs:
            with contextlib.suppress(OSError):
                f.close()
        self._logs.clear()
        return removed

    def _reap(self) -> None:
        for p in list(self._children):
            if p.poll() is not None:
                self._children.remove(p)
        for p in list(self._children):
            with contextlib.suppress(subprocess.TimeoutExpired):
                if p.poll() is None and self.state is not None and not _bed_alive(self.state):
                    p.wait(timeout=5)
                    self._children.remove(p)

    def __enter__(self) -> Bed:
        return self.up() if self.state is None else self

    def __exit__(self, *exc) -> None:
        self.down()


# ----------------------------------------------------------------------------- helpers


def _kept_visible(private: list[str], wanted: set[str] | None = None) -> list[str]:
    """The project and the Python it runs on, where they lie under a node's private paths (e.g. a checkout in /tmp)."""
    wanted = {str(PROJECT_ROOT), sys.prefix, sys.base_prefix} if wanted is None else wanted
    under = sorted(w for w in wanted if any(w == p or w.startswith(p.rstrip("/") + "/") for p in private))
    return [w for w in under if not any(w != o and w.startswith(o + "/") for o in under)]  # the outermost of nested ones


def _shape(ns: str, dev: str, link: LinkSpec) -> None:
    """tbf for the rate (burst: 10 ms of it, at least 32 KiB), netem under it for the delay."""
    parent = ["root"]
    if link.rate:
        burst = max(32 * 1024, link.rate_bits // 8 // 100)
        tbf = ["tbf", "rate", link.rate, "burst", str(burst), "latency", "100ms"]
        _run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", *tbf])
        parent = ["parent", "1:1"]
    if link.delay:
        r = _run(["tc", "-n", ns, "qdisc", "add", "dev", dev, *parent, "handle", "10:", "netem", "delay", link.delay], check=False)
        if r.returncode != 0:
            if "unknown" in r.stderr.lower():
                raise BedError(
                    f"this kernel has no netem qdisc (sch_netem), so the link delay {link.delay} cannot be made; give rates only (e.g. --link {link.rate or '100mbit'})."
                )
            raise BedError(f"tc could not set the delay {link.delay} on {dev}: {r.stderr.strip()}")


def _last_line(text: str) -> str:
    """The last non-empty line of a log (what a failing command said last), without its ANSI colours."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in text.splitlines()]
    return next((ln for ln in reversed(lines) if ln), "nothing")


def _netns_of(name: str) -> list[str]:
    r = _run(["ip", "netns", "list"], check=False)
    found = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    return [ns for ns in found if ns.startswith(f"{name}-")]


def _netns_inode(ns: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return None


def _processes_in(netns: list[str]) -> list[psutil.Process]:
    inodes = {f"net:[{i}]" for i in (_netns_inode(ns) for ns in netns) if i}
    found = []
    if not inodes:
        return found
    for p in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.readlink(f"/proc/{p.pid}/ns/net") in inodes:
                found.append(p)
    return found


def still_running(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Those of procs still running after at most timeout_s (a zombie has exited: only its parent's wait is missing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        running = []
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.status() != psutil.STATUS_ZOMBIE:
                    running.append(p)
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(0.1)


def _recorded(state: State | None) -> list[psutil.Process]:
    procs = []
    for n in state.nodes if state else []:
        for rec in (n.init, n.unshare, n.ray):
            p = rec.alive() if rec else None
            if p is not None:
                procs.append(p)
    return procs


def _bed_alive(state: State) -> bool:
    return bool(_recorded(state))


def _free_subnet() -> int:
    used = set()
    if STATE_ROOT.exists():
        for f in STATE_ROOT.glob("*/state.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                used.add(int(json.loads(f.read_text())["subnet"]))
    for s in range(1, 255):
        if s not in used:
            return s
    raise BedError(f"254 beds are recorded under {STATE_ROOT}; remove some with `python -m comdml_ray.testbed down --all`.")


def down(name: str, state: State | None = None) -> list[str]:
    """Remove bed `name`: its processes (recorded PIDs, then anything inside its namespaces, by PID), namespaces and state."""
    state_file = STATE_ROOT / name / "state.json"
    if state is None and state_file.exists():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            state = State.load(state_file)
    removed: list[str] = []
    netns = _netns_of(name)
    # Inits first: SIGKILL to PID 1 of a PID namespace ends every process in it at once.
    inits = [p for p in (n.init.alive() if n.init else None for n in (state.nodes if state else [])) if p is not None]
    victims = inits + [p for p in _recorded(state) if p not in inits]
    victims += [p for p in _processes_in(netns) if p not in victims]
    for p in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            removed.append(f"process {p.pid} ({p.name()})")
            p.kill()
    still = still_running(victims, 15.0)
    if still:
        raise BedError(f"processes {', '.join(str(p.pid) for p in still)} of bed {name} did not end after SIGKILL; run `down` again.")
    for ns in netns:
        r = _run(["ip", "netns", "del", ns], check=False)
        if r.returncode == 0:
            removed.append(f"netns {ns}")
    if (STATE_ROOT / name).exists():
        shutil.rmtree(STATE_ROOT / name, ignore_errors=True)
        removed.append(f"state {STATE_ROOT / name}")
    return removed


def leftovers(name: str, state: State | None = None) -> list[str]:
    """Whatever of bed `name` still exists: namespaces, processes, mounts, root-namespace links or routes, state."""
    left = [f"netns {ns}" for ns in _netns_of(name)]
    left += [f"process {p.pid}" for p in _recorded(state)]
    left += [f"process {p.pid} in its namespaces" for p in _processes_in(_netns_of(name))]
    with open("/proc/self/mountinfo") as f:
        left += [f"mount {line.split()[4]}" for line in f if f"/{name}-" in line.split()[4]]
    links = _run(["ip", "-o", "link", "show"], check=False).stdout
    left += [f"root link {line.split(':')[1].strip()}" for line in links.splitlines() if f"{name}-" in line]
    routes = _run(["ip", "route", "show", "root", f"{NET}.0.0/15"], check=False).stdout
    left += [f"root route {r}" for r in routes.splitlines() if r.strip()]
    addrs = _run(["ip", "-o", "-4", "addr", "show"], check=False).stdout
    left += [f"root address {a.split()[3]}" for a in addrs.splitlines() if a.split()[3].startswith(("198.18.", "198.19."))]
    if (STATE_ROOT / name).exists():
        left.append(f"state {STATE_ROOT / name}")
    return left


def interrupt_on_term() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, so `up`'s clean-up runs for them as for Ctrl-C (main thread only).

    SIGINT too, explicitly: a process started in the background of a shell inherits it
    ignored, and an interrupted `up` must still remove what it made.
    """

    def handler(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
