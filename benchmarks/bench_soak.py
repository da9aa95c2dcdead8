"""Soak: the bundled sample looped into ``slam serve --source zmq:`` for a long time.

Usage: ``python -m benchmarks.bench_soak [--minutes 10] [--flood-minutes 10]
[--rate 30] [--flood 10] [--out results/soak.json]``.

Two phases, each against a fresh server (RGB-D, the bundled fr1_rpy sample, its 143
frames pushed over and over with increasing timestamps, so every lap ends with a jump
back to the start that tracking must relocalise from):

- ``steady``: frames pushed at ``--rate`` (the camera's 30 Hz);
- ``flood``: frames pushed as fast as the service lets the client, asking for
  ``--flood`` times the camera's rate. The scene still moves at the camera's pace
  (each sample frame is pushed ``--flood`` times with fresh timestamps, as a camera
  ten times as fast would see it); ``--flood-speed 10`` plays the sample ten times as
  fast instead (every pushed frame the next one: a scene moving ten times as fast, a
  harder tracking problem rather than an overload).

Every second the server's RSS (``/proc/PID/status``) and its ``stats`` (keyframes, map
points, queue depths, drops, errors) are sampled. Reported per phase: the RSS slope
after the first minute (least squares, MB/s; target <= 0.05), the range of the live
map's size after the first minute, and the latency the client sees (send -> reply)
for tracked frames and for every reply (target for the flood: p99 <= 0.5 s).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.service_process import REPO, EncodedFrame, Server, encoded_frames
from clients.client import ClientError, SlamClient

log = logging.getLogger("benchmarks.bench_soak")
SAMPLE = REPO / "datasets" / "sample" / "rgbd_dataset_freiburg1_rpy"
SLOPE_TARGET_MB_S = 0.05
FLOOD_P99_TARGET_S = 0.5
WARM_UP_S = 60.0  # the slope is fitted after this (the map and caches fill up first)


@dataclass
class PhaseLog:
    """What one phase measured: per-second samples and per-reply latencies."""

    t: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    keyframes: list[int] = field(default_factory=list)
    map_points: list[int] = field(default_factory=list)
    queue_frames: list[int] = field(default_factory=list)
    queue_mapping: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    tracked_ms: list[float] = field(default_factory=list)
    reply_ms: list[float] = field(default_factory=list)
    sent: int = 0
    tracked: int = 0
    lost: int = 0  # answered with a pose message, but no pose (tracking lost)
    dropped: int = 0
    errors: int = 0
    last_stats: dict[str, Any] = field(default_factory=dict)


def _collect(client: SlamClient, sent_at: dict[int, float], out: PhaseLog, wait_s: float
             ) -> None:
    for reply in client.replies(wait_s):
        t_sent = sent_at.pop(int(reply.seq), None)
        if t_sent is None:
            continue
        ms = (time.monotonic() - t_sent) * 1e3
        out.reply_ms.append(ms)
        if reply.ok and reply.pose is not None:
            out.tracked += 1
            out.lost += reply.pose.position is None
            out.tracked_ms.append(ms)
        elif getattr(reply, "dropped", False):
            out.dropped += 1
        else:
            out.errors += 1


def _sample(server: Server, client: SlamClient, t: float, out: PhaseLog) -> None:
    st = client.stats()
    out.t.append(t)
    out.rss_mb.append(server.rss_mb())
    out.keyframes.append(int(st["keyframes"]))
    out.map_points.append(int(st["map_points"]))
    out.queue_frames.append(int(st["queue_depth"]["frames"]))
    out.queue_mapping.append(int(st["queue_depth"]["mapping"]))
    out.frames.append(int(st["frames"]))
    out.last_stats = st


def push_phase(server: Server, frames: list[EncodedFrame], rate_hz: float, seconds: float,
               content_hz: float) -> PhaseLog:
    """Push ``frames`` in a loop at ``rate_hz`` for ``seconds``, sampling every second; the
    pushed images advance through ``frames`` at ``content_hz``."""
    out = PhaseLog()
    sent_at: dict[int, float] = {}
    with server.client(timeout_s=30.0) as pusher, server.client(timeout_s=10.0) as cmd:
        t0 = time.monotonic()
        next_send, next_sample, k = t0, t0, 0
        while (now := time.monotonic()) < t0 + seconds:
            if now >= next_sample:
                _sample(server, cmd, now - t0, out)
                next_sample += 1.0
            f = frames[int(k * content_hz / rate_hz) % len(frames)]
            seq = pusher.send_frame(f.image, k / rate_hz, depth=f.depth_m)
            sent_at[seq] = time.monotonic()
            k += 1
            next_send += 1.0 / rate_hz
            _collect(pusher, sent_at, out, 0.0)
            while (wait := next_send - time.monotonic()) > 0:  # pace: the camera's clock
                _collect(pusher, sent_at, out, wait)
        deadline = time.monotonic() + 10.0
        while sent_at and time.monotonic() < deadline:
            _collect(pusher, sent_at, out, 0.1)
        _sample(server, cmd, time.monotonic() - t0, out)
    out.sent = k
    return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarise(log_: PhaseLog, seconds: float) -> dict[str, Any]:
    """Slope, map-size range and latency percentiles of one phase."""
    t, rss = np.array(log_.t), np.array(log_.rss_mb)
    late = t >= min(WARM_UP_S, 0.5 * seconds)
    slope = float(np.polyfit(t[late], rss[late], 1)[0]) if late.sum() >= 3 else float("nan")
    kfs, pts = np.array(log_.keyframes)[late], np.array(log_.map_points)[late]
    st = log_.last_stats
    return {
        "seconds": seconds, "sent": log_.sent, "sent_fps": log_.sent / seconds,
        "tracked": log_.tracked, "lost": log_.lost, "dropped": log_.dropped,
        "errors": log_.errors,
        "rss_mb_first": float(rss[0]) if len(rss) else float("nan"),
        "rss_mb_after_warm_up": float(rss[late][0]) if late.any() else float("nan"),
        "rss_mb_last": float(rss[-1]) if len(rss) else float("nan"),
        "rss_slope_mb_s": slope, "rss_slope_target_mb_s": SLOPE_TARGET_MB_S,
        "keyframes_min_max": [int(kfs.min()), int(kfs.max())] if len(kfs) else None,
        "map_points_min_max": [int(pts.min()), int(pts.max())] if len(pts) else None,
        "tracked_latency_ms_p50": _pct(log_.tracked_ms, 50),
        "tracked_latency_ms_p99": _pct(log_.tracked_ms, 99),
        "tracked_latency_ms_max": max(log_.tracked_ms, default=float("nan")),
        "reply_latency_ms_p99": _pct(log_.reply_ms, 99),
        "server_drops": st.get("drops"), "server_errors": st.get("errors"),
        "server_poses_dropped": st.get("poses_dropped"), "server_frames": st.get("frames"),
        "samples": {"t": log_.t, "rss_mb": log_.rss_mb, "keyframes": log_.keyframes,
                    "map_points": log_.map_points, "queue_frames": log_.queue_frames,
                    "queue_mapping": log_.queue_mapping, "frames": log_.frames},
    }


def run_phase(name: str, frames: list[EncodedFrame], rate_hz: float, seconds: float,
              content_hz: float, workdir: Path) -> dict[str, Any]:
    server = Server.start(["--source", "zmq:", "--sensor", "rgbd", "--calib",
                           str(SAMPLE / "TUM1.yaml")], workdir)
    try:
        log.info("%s: pushing at %.0f fps for %.0f s", name, rate_hz, seconds)
        result = summarise(push_phase(server, frames, rate_hz, seconds, content_hz), seconds)
    finally:
        code = server.stop()
    result |= {"phase": name, "rate_asked_fps": rate_hz, "content_fps": content_hz,
               "server_exit": code}
    log.info("%s: RSS %.0f -> %.0f MB, slope %.4f MB/s, tracked p99 %.0f ms", name,
             result["rss_mb_first"], result["rss_mb_last"], result["rss_slope_mb_s"],
             result["tracked_latency_ms_p99"])
    return result


def report(phases: list[dict[str, Any]]) -> list[str]:
    lines = ["| phase | sent (fps) | tracked (lost) / dropped / errors | RSS first -> after 1 min "
             "-> last | slope after 1 min | keyframes / points after 1 min | latency tracked "
             "p50 / p99 / max |", "|---|---|---|---|---|---|---|"]
    for r in phases:
        kf, pt = r["keyframes_min_max"] or ["-", "-"], r["map_points_min_max"] or ["-", "-"]
        lines.append(
            f"| {r['phase']} ({r['rate_asked_fps']:.0f} fps asked, scene at "
            f"{r['content_fps']:.0f} fps, {r['seconds']:.0f} s) | "
            f"{r['sent']} ({r['sent_fps']:.1f}) | {r['tracked']} ({r['lost']}) / {r['dropped']} / "
            f"{r['errors']} | {r['rss_mb_first']:.0f} -> {r['rss_mb_after_warm_up']:.0f} -> "
            f"{r['rss_mb_last']:.0f} MB | {r['rss_slope_mb_s']:.4f} MB/s (target <= "
            f"{SLOPE_TARGET_MB_S}) | {kf[0]}-{kf[1]} / {pt[0]}-{pt[1]} | "
            f"{r['tracked_latency_ms_p50']:.0f} / {r['tracked_latency_ms_p99']:.0f} / "
            f"{r['tracked_latency_ms_max']:.0f} ms |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="steady phase length")
    p.add_argument("--flood-minutes", type=float, default=10.0, help="flood phase length")
    p.add_argument("--rate", type=float, default=30.0, help="the camera's rate (fps)")
    p.add_argument("--flood", type=float, default=10.0, help="flood: times the rate")
    p.add_argument("--flood-speed", type=float, default=1.0,
                   help="flood: times the camera's pace at which the scene moves")
    p.add_argument("--out", type=Path, default=REPO / "results" / "soak.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    frames = encoded_frames(f"tum:{SAMPLE}", 0, 10**9)
    phases = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, rate, content, minutes in (
                ("steady", args.rate, args.rate, args.minutes),
                ("flood", args.rate * args.flood, args.rate * args.flood_speed,
                 args.flood_minutes)):
            if minutes > 0:
                try:
                    phases.append(run_phase(name, frames, rate, 60.0 * minutes, content,
                                            Path(tmp)))
                except (ClientError, RuntimeError) as exc:
                    log.error("%s failed: %s", name, exc)
                    return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"phases": phases}, indent=1) + "\n")
    print("\n".join(report(phases)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
