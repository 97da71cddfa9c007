"""The Ray dashboard's Actors page during a real job, in headless Chromium: the picture of what a user sees.

    python benchmarks/dashboard_screenshot.py                          # writes clusters/dashboard-actors.png
    python benchmarks/dashboard_screenshot.py --out /tmp/actors.png --rounds 20

Starts a private Ray head on this machine (`ray start --head --block`: dashboard on
127.0.0.1, free ports, a fresh temp dir, token authentication with a fresh token), submits
`benchmarks/run.py` to it with `ray job submit --working-dir`, opens the dashboard in
headless Chromium (Debian's `chromium`; no sandbox, no GPU, no background networking,
a fresh profile, every host name but 127.0.0.1 unresolvable) with the cluster's token
as the dashboard's session cookie, waits until the Actors page lists every
`agent-NNN` actor as alive, takes the screenshot, waits for the job to end, and prints what
`ray job logs` shows.  Only the processes it started are stopped (the `ray start`
process and its descendants), never another Ray on the machine.

The job runs 4 agents on one *logical* GPU at 0.25 GPU each, so each agent is its
own actor (`agent-000` ... `agent-003`) and, as torch finds no CUDA device here,
each actor logs a WARNING: the page shows the agents, the logs show a warning.
tests/test_job_logs.py runs this end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from comdml_ray.testbed.bed import still_running  # the same wait for processes the bed uses

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
DEFAULT_OUT = ROOT / "clusters" / "dashboard-actors.png"


TERM_GRACE_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- a private Ray head


@dataclass
class LocalHead:
    """A Ray head of our own on 127.0.0.1: its ports, temp dir and token; `stop()` ends exactly what `start()` began."""

    num_cpus: int = 2
    num_gpus: int = 1
    temp_dir: str = field(
        default_factory=lambda: tempfile.mkdtemp(prefix="comdml-ray-", dir="/tmp")
    )  # short: Ray's socket paths are limited
    ports: dict[str, int] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    extra_args: list[str] = field(default_factory=list)  # more `ray start` flags (e.g. --autoscaling-config)
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.ports['gcs']}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    @property
    def token_path(self) -> str:
        return os.path.join(self.temp_dir, "auth_token")

    def env(self) -> dict[str, str]:
        """Environment for `ray` commands and drivers aimed at this head (token auth on, its token file)."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        return env | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_path}

    def start(self, timeout_s: float = 180.0) -> LocalHead:
        Path(self.token_path).write_text(self.token)
        os.chmod(self.token_path, 0o600)
        names = ("gcs", "dashboard", "agent_http", "agent_grpc", "metrics", "client", "runtime_env", "node_manager", "object_manager")
        self.ports = {n: self.ports.get(n) or free_port() for n in names}  # a caller may fix some (e.g. the GCS port)
        p = self.ports
        # No --node-ip-address: Ray maps 127.0.0.1 to the machine's own address anyway. The
        # dashboard (and with it the Jobs API) listens on 127.0.0.1 only.
        cmd = [
            RAY,
            "start",
            "--head",
            "--block",
            f"--port={p['gcs']}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={p['dashboard']}",
            "--include-dashboard=true",
            f"--dashboard-agent-listen-port={p['agent_http']}",
            f"--dashboard-agent-grpc-port={p['agent_grpc']}",
            f"--metrics-export-port={p['metrics']}",
            f"--ray-client-server-port={p['client']}",
            f"--runtime-env-agent-port={p['runtime_env']}",
            f"--node-manager-port={p['node_manager']}",
            f"--object-manager-port={p['object_manager']}",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={self.num_cpus}",
            f"--num-gpus={self.num_gpus}",
            "--disable-usage-stats",
            *self.extra_args,
        ]
        self.log_file = open(os.path.join(self.temp_dir, "ray-start.log"), "w")  # noqa: SIM115 -- open while the node runs; closed in stop()
        self.proc = subprocess.Popen(
            cmd, env=self.env() | self.extra_env, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"`ray start --head` exited with {self.proc.returncode}; see {self.log_file.name}")
            try:
                if self.api("/api/version"):
                    return self
            except OSError:
                pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"the Ray head did not answer within {timeout_s:.0f} s; see {self.log_file.name}")

    def api(self, path: str) -> dict:
        req = urllib.request.Request(self.dashboard_url + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")

    def ray_cli(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], env=self.env(), capture_output=True, text=True, timeout=timeout_s, check=False)

    def stop(self) -> None:
        """Terminate the `ray start --block` process and every process below it (GCS, raylet, workers, job drivers)."""
        if self.proc is None:
            return
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]  # collected first: job drivers run in sessions of their own
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        # GCS, raylet and the dashboard exit within ~3 s of SIGTERM, but `ray start --block` and the autoscaler's
        # monitor may sit on it for 15 s and more (measured): what still runs after the grace period is killed.
        for p in still_running(procs, TERM_GRACE_S):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        still_running(procs, 10)
        self.proc.wait(timeout=10)  # `ray start` is our child: reap it
        self.proc = None
        self.log_file.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalHead:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def submit_job(head: LocalHead, argv: list[str], submission_id: str) -> None:
    """`ray job submit --no-wait --working-dir <repo>` of benchmarks/run.py with argv, by this interpreter."""
    r = head.ray_cli(
        "job",
        "submit",
        "--address",
        head.dashboard_url,
        "--working-dir",
        str(ROOT),
        "--submission-id",
        submission_id,
        "--no-wait",
        "--",
        sys.executable,
        "benchmarks/run.py",
        *argv,
        timeout_s=300,
    )
    if r.returncode != 0:
        raise RuntimeError(f"ray job submit failed ({r.returncode}): {r.stderr[-2000:]}")


def job_status(head: LocalHead, submission_id: str) -> str:
    return head.api(f"/api/jobs/{submission_id}")["status"]


def wait_for_job(head: LocalHead, submission_id: str, timeout_s: float = 600.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = job_status(head, submission_id)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        time.sleep(2.0)
    raise TimeoutError(f"job {submission_id} still running after {timeout_s:.0f} s")


# ----------------------------------------------------------------------------- headless Chromium over the DevTools protocol


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """The few Chrome DevTools Protocol calls this script needs, over one page's websocket (aiohttp, no other package)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def text(self) -> str:
        r = await self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''", returnByValue=True)
        return r.get("result", {}).get("value", "")


@dataclass
class Shot:
    path: Path
    page_text: str  # the page's visible text when the screenshot was taken
    seconds: float  # from opening the page to the screenshot


async def _screenshot(
    ws_url: str, url: str, token: str, must_show: list[str], must_not_show: list[str], out: Path, timeout_s: float, size: tuple[int, int]
) -> Shot:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        dt = DevTools(ws)
        await dt.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1, mobile=False)
        # The dashboard reads the token from this cookie (what pasting it into its login dialog sets).
        await dt.call("Network.setCookie", name="ray-authentication-token", value=token, url=url.split("#")[0], httpOnly=True)
        t0 = time.monotonic()
        await dt.call("Page.navigate", url=url)
        text = ""
        while time.monotonic() - t0 < timeout_s:
            text = await dt.text()
            if all(s in text for s in must_show) and not any(s in text for s in must_not_show):
                await asyncio.sleep(2.0)  # let the table finish rendering (icons, widths)
                text = await dt.text()
                png = await dt.call("Page.captureScreenshot", format="png")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(base64.b64decode(png["data"]))
                return Shot(out, text, time.monotonic() - t0)
            await asyncio.sleep(1.0)
        raise TimeoutError(
            f"after {timeout_s:.0f} s the page at {url} lacks {[s for s in must_show if s not in text]} "
            f"or shows {[s for s in must_not_show if s in text]}: {text[:500]!r}"
        )


def stop_process(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM a process this script (or a test) started; SIGKILL it if it has not exited within timeout_s."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def screenshot(
    url: str,
    token: str,
    must_show: list[str],
    out: Path,
    must_not_show: tuple[str, ...] = (),
    timeout_s: float = 180.0,
    size: tuple[int, int] = (1600, 900),
) -> Shot:
    """Open url in headless Chromium with the dashboard's token cookie; screenshot once the page shows all of must_show and none of must_not_show."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("chromium is not installed: apt-get install -y chromium")
    port = free_port()
    profile = tempfile.mkdtemp(prefix="comdml-chromium-", dir="/tmp")
    cmd = [
        binary,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-sync",
        "--disable-component-update",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        f"--remote-debugging-port={port}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "about:blank",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        ws_url = None
        while ws_url is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                ws_url = pages[0]["webSocketDebuggerUrl"] if pages else None
            except OSError:
                pass
            if ws_url is None:
                time.sleep(0.5)
        if ws_url is None:
            raise RuntimeError("headless Chromium did not open its DevTools port within 60 s")
        return asyncio.run(_screenshot(ws_url, url, token, must_show, list(must_not_show), out, timeout_s, size))
    finally:
        stop_process(proc, timeout_s=15)
        shutil.rmtree(profile, ignore_errors=True)


# ----------------------------------------------------------------------------- the whole picture


AGENTS = 4


def job_argv(rounds: int, out_dir: str) -> list[str]:
    """4 agents at 0.25 of the head's one logical GPU: one actor each (agent-000..003), and a GPU warning from each.

    Every round is evaluated on the whole test set (`--eval-samples 0`), as before evaluation
    used a subset, so the job still runs when the page is ready (the screenshot needs it running).
    """
    return [
        "--agents",
        str(AGENTS),
        "--rounds",
        str(rounds),
        "--train-samples",
        "2000",
        "--algorithm",
        "comdml",
        "--eval-samples",
        "0",
        "--gpus-per-agent",
        "0.25",
        "--cpus-per-agent",
        "0.5",
        "--no-progress",
        "--out",
        out_dir,
    ]


@dataclass
class JobPicture:
    submission_id: str
    status_at_shot: str
    final_status: str
    logs: str  # `ray job logs` output
    shot: Shot | None


def picture_of_a_job(head: LocalHead, out: Path | None, rounds: int = 12) -> JobPicture:
    """Submit the job, screenshot its Actors page while it runs (out=None: no browser), wait for it, fetch `ray job logs`."""
    sid = f"comdml-{secrets.token_hex(4)}"
    submit_job(head, job_argv(rounds, os.path.join(head.temp_dir, "results")), sid)
    shot, status_at_shot = None, ""
    if out is not None:
        names = [f"agent-{k:03d}" for k in range(AGENTS)]
        # The page polls the cluster itself: wait until the agents' actors are up, not only listed.
        shot = screenshot(f"{head.dashboard_url}/#/actors", head.token, names, out, must_not_show=("PENDING_CREATION",))
        status_at_shot = job_status(head, sid)
    final = wait_for_job(head, sid)
    logs = head.ray_cli("job", "logs", "--address", head.dashboard_url, sid)
    return JobPicture(sid, status_at_shot, final, logs.stdout + logs.stderr, shot)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="benchmarks/dashboard_screenshot.py",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    p.add_argument("--rounds", type=int, default=12, help="rounds of the job (it must still run when the page is ready)")
    a = p.parse_args(argv)
    if chromium_binary() is None:
        print("error: chromium is not installed; install it with `apt-get install -y chromium`.", file=sys.stderr)
        return 2
    with LocalHead() as head:
        print(f"Ray head on {head.dashboard_url} (temp dir {head.temp_dir})")
        pic = picture_of_a_job(head, a.out, a.rounds)
    print(f"screenshot: {pic.shot.path} after {pic.shot.seconds:.0f} s, job {pic.status_at_shot} then; job {pic.final_status}")
    print("---- ray job logs " + pic.submission_id)
    print(pic.logs)
    return 0 if pic.final_status == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
