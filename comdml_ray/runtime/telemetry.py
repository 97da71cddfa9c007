"""What an agent actor tells the user while a run goes: its log lines, its warnings, and two dashboard metrics.

Owns
- `actor_logger()`: the `comdml_ray` logger of an actor process, INFO and up to
  stderr.  With `log_to_driver` on (`comdml_ray.runtime.cluster.start_ray`) Ray forwards
  those lines to the driver, so they appear in `ray job logs`; they also stay in the
  actor's own log (`ray logs actor --id <id> --err`).  Ray folds lines that differ
  only in numbers and come from several actors into one line plus
  `[repeated Nx across cluster]`; RAY_DEDUP_LOGS=0 in the driver's environment shows
  every one.
- `ActorTelemetry`: per actor, a line when its agents are ready, a WARNING when Ray
  gave it a GPU that torch cannot use, one INFO line per round (never per batch), a
  WARNING when an agent's training loss is not finite, and the metrics
  `comdml_rounds_total` (rounds, or rows of an asynchronous run, each agent finished:
  equals the rounds run) and `comdml_idle_share` (share of the last synchronous round
  the agent waited for the slowest one, on the virtual clock).  The other nine
  metrics are `comdml_ray.runtime.actors.AgentMetrics`.
- `with_idle_share(rows)`: the driver's side of the idle share (it alone sees every
  agent's finish time of a round).
- `round_line(...)`: the text of the per-round line (pure; tested without Ray).
"""

from __future__ import annotations

import logging
import math
import sys

LOGGER_NAME = "comdml_ray"
EXTRA_METRIC_NAMES = ("comdml_rounds_total", "comdml_idle_share")


def agent_name(k: int) -> str:
    return f"agent-{k:03d}"


def group_name(ids: list[int]) -> str:
    """The actor's name in the dashboard: agent-007, or agents-000-049 for an actor hosting several."""
    return agent_name(ids[0]) if len(ids) == 1 else f"agents-{ids[0]:03d}-{ids[-1]:03d}"


def actor_logger() -> logging.Logger:
    """The project's logger in an actor process: INFO to stderr, once, not passed on to Ray's own handlers."""
    log = logging.getLogger(LOGGER_NAME)
    if not any(getattr(h, "comdml", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
        handler.comdml = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def with_idle_share(rows: list[dict]) -> list[dict]:
    """Add `idle_share` (1 - finish / slowest finish) to one synchronous round's agent rows; asynchronous rows pass unchanged."""
    if not rows or any("steps" in r for r in rows):  # asynchronous methods have no barrier to wait at
        return rows
    longest = max(r["virtual_finish_s"] for r in rows)
    return [r | {"idle_share": (1.0 - r["virtual_finish_s"] / longest) if longest > 0 else 0.0} for r in rows]


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if math.isclose(lo, hi, rel_tol=1e-3, abs_tol=1e-9) else fmt.format(lo) + "-" + fmt.format(hi)


def round_line(name: str, rows: list[dict], accuracy: float | None) -> str:
    """One line for one actor's agents in one round (or asynchronous row)."""
    r0 = rows[0]
    losses = [r["train_loss"] for r in rows if math.isfinite(r["train_loss"])]
    loss = f"loss {sum(losses) / len(losses):.3f}" + (" (mean)" if len(rows) > 1 else "") if losses else "loss -"
    parts = [loss]
    if "steps" in r0:  # asynchronous: rows, not rounds; finish times are absolute
        head = f"row {r0['round'] + 1} {name}"
        parts.append(f"{sum(r['steps'] for r in rows)} steps")
        parts.append("last finish " + _span([r["virtual_finish_s"] for r in rows], "{:.1f}") + " s virtual")
    else:
        head = f"round {r0['round'] + 1} {name}"
        parts.append("virtual finish " + _span([r["virtual_finish_s"] for r in rows], "{:.1f}") + " s")
        if "idle_share" in r0:
            parts.append("idle " + _span([100 * r["idle_share"] for r in rows], "{:.0f}") + "%")
        offloaders = [r for r in rows if r["partner"] >= 0]
        if len(rows) == 1 and offloaders:
            parts.append(f"offloaded {_mb(r0['bytes_offloaded'])} to {agent_name(r0['partner'])} at split {r0['split']}")
        elif offloaders:
            parts.append(f"{len(offloaders)} offloaded {_mb(sum(r['bytes_offloaded'] for r in offloaders))}")
    parts.append(f"sent {_mb(sum(r['bytes_sent'] for r in rows))}")
    if accuracy is not None:
        parts.append(f"test accuracy {100 * accuracy:.1f}%")
    return f"{head}: " + ", ".join(parts)


class ActorTelemetry:
    """Log lines and the extra metrics of one agent actor (lives in the actor process)."""

    def __init__(self, agent_ids: list[int], device: str, gpu_ids: list[str]) -> None:
        from ray.util import metrics  # imported here: the functions above stay usable without Ray

        self.name = group_name(list(agent_ids))
        self.log = actor_logger()
        tags = ("agent",)
        self.rounds = metrics.Counter("comdml_rounds_total", "Rounds (asynchronous: rows) the agent finished", tag_keys=tags)
        self.idle = metrics.Gauge(
            "comdml_idle_share", "Share of the last synchronous round the agent waited for the slowest agent (virtual clock)", tag_keys=tags
        )
        self.log.info("%s ready on %s: %d agent%s", self.name, device, len(agent_ids), "" if len(agent_ids) == 1 else "s")
        if gpu_ids and device == "cpu":
            self.log.warning(
                "%s: Ray assigned it GPU %s but torch finds no CUDA device, so its agents train on the CPU; "
                "install a CUDA build of torch on the GPU nodes, or drop --gpus-per-agent",
                self.name,
                ",".join(gpu_ids),
            )

    def record(self, rows: list[dict], accuracy: float | None) -> None:
        """Metrics and the log line of one round (or row) for this actor's agents."""
        if not rows:
            return
        for r in rows:
            tags = {"agent": f"{r['agent']:03d}"}
            self.rounds.inc(1, tags)
            if "idle_share" in r:
                self.idle.set(r["idle_share"], tags)
        bad = [r for r in rows if not math.isfinite(r["train_loss"]) and r.get("steps", 1) > 0]
        self.log.info(round_line(self.name, rows, accuracy))
        if bad:
            self.log.warning(
                "round %d %s: training loss is %s for %s: the run diverges; lower --lr",
                rows[0]["round"] + 1,
                self.name,
                bad[0]["train_loss"],
                ", ".join(agent_name(r["agent"]) for r in bad),
            )
