"""``slam-client``: talk to a running SLAM service from the shell.

Exit codes: 0 done, 1 the service refused (``ok: false``), 2 bad usage,
3 no answer in time, 4 a frame source could not be read (``push``), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import slam_protocol as protocol
from clients.client import (
    DEFAULT_CMD,
    DEFAULT_INGEST,
    DEFAULT_PUB,
    ENCODINGS,
    TOPIC_TYPES,
    ClientError,
    ClientTimeoutError,
    ServerError,
    SlamClient,
    load_curve_keys,
)
from slam_protocol import Sensor, Stamp

log = logging.getLogger("clients.cli")

EXIT_OK, EXIT_SERVER, EXIT_USAGE, EXIT_TIMEOUT, EXIT_SOURCE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
SIMPLE_COMMANDS = ("pause", "resume", "reset", "shutdown")


def build_parser() -> argparse.ArgumentParser:
    """The ``slam-client`` parser, one subcommand per request."""
    p = argparse.ArgumentParser(prog="slam-client", description="Client of the SLAM service.")
    p.add_argument("--pub", default=DEFAULT_PUB, metavar="URL", help=f"default {DEFAULT_PUB}")
    p.add_argument("--cmd", default=DEFAULT_CMD, metavar="URL", help=f"default {DEFAULT_CMD}")
    p.add_argument("--ingest", default=DEFAULT_INGEST, metavar="URL",
                   help=f"default {DEFAULT_INGEST}")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="seconds to wait for a reply (default 5)")
    p.add_argument("--curve-secret", metavar="FILE",
                   help="CurveZMQ: this client's .key_secret (from 'slam keys generate')")
    p.add_argument("--curve-server", metavar="FILE",
                   help="CurveZMQ: the server's public .key")
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    e = sub.add_parser("echo", help="print the messages of one topic")
    e.add_argument("topic", choices=tuple(TOPIC_TYPES))
    e.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    e.add_argument("--json", action="store_true", help="one JSON object per line")
    e.add_argument("--wait", type=float, metavar="S",
                   help="fail (exit 3) after S seconds without a message")
    sub.add_parser("stats", help="print the service's counters")
    s = sub.add_parser("snapshot", help="fetch the map and trajectory")
    s.add_argument("--out", type=Path, metavar="FILE", help="write it (.npz arrays, else JSON)")
    push = sub.add_parser(
        "push",
        help="send frames of local sources to the service (zmq: source)",
        description="Read frames locally and push them to the ingestion socket. Reading "
        "sources is the one client feature that needs the slam package installed.",
    )
    push.add_argument("sources", nargs="+", metavar="URI", help="video:FILE, images:DIR, tum:DIR")
    push.add_argument("--rate", type=float, metavar="FPS",
                      help="send at this rate (default: as fast as the service answers)")
    push.add_argument("--sensor", choices=(Sensor.MONO.value, Sensor.RGBD.value),
                      default=Sensor.MONO.value,
                      help="rgbd also sends depth (tum: sources)")
    push.add_argument("--encoding", choices=ENCODINGS, default="jpeg")
    push.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames per source")
    push.add_argument("--window", type=int, default=4, metavar="N",
                      help="frames in flight without --rate (default 4)")
    for name in ("save-map", "load-map"):
        m = sub.add_parser(name, help=f"{name.replace('-', ' ')} (a name in the server's map "
                           "directory, such as 'office'; never a path)")
        m.add_argument("name", metavar="NAME")
        if name == "save-map":
            m.add_argument("--wait", type=float, default=60.0, metavar="S",
                           help="wait up to S seconds for the background save to finish "
                           "(default %(default)s; 0: return once it has started)")
    sub.add_parser("list-maps", help="list the maps in the server's map directory")
    for name in SIMPLE_COMMANDS:
        sub.add_parser(name, help=f"{name} the service")
    return p


def _jsonable(obj: Any) -> Any:
    """JSON-ready copy: stamps as {sec, nanosec}, arrays as lists, bytes as their length."""
    if isinstance(obj, Stamp):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"bytes": len(obj)}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _vec(values: Any) -> str:
    return "-" if values is None else "[" + " ".join(f"{float(v):+.4f}" for v in values) + "]"


def summary_line(msg: Any) -> str:
    """One human-readable line of a typed message of :mod:`slam_protocol`."""
    if isinstance(msg, protocol.PoseMsg):
        kf = " KF" if msg.keyframe else ""
        return (f"pose {msg.seq} t {msg.stamp.to_seconds():.3f} {msg.state} "
                f"p {_vec(msg.position)} q {_vec(msg.orientation)} {msg.latency_ms:.1f} ms{kf}")
    if isinstance(msg, protocol.KeyframeMsg):
        return (f"keyframe {msg.id} t {msg.stamp.to_seconds():.3f} p {_vec(msg.position)} "
                f"{msg.n_points} points" + (" moved" if msg.moved else ""))
    if isinstance(msg, protocol.LoopMsg):
        return (f"loop kf {msg.cur_kf} -> {msg.loop_kf} scale {msg.scale:.4f} "
                f"{msg.n_matches} matches")
    if isinstance(msg, protocol.MapUpdateMsg):
        return (f"map {msg.seq} +{len(msg.added_ids)} ~{len(msg.moved_ids)} "
                f"-{len(msg.removed_ids)} points" + (" reset" if msg.reset else ""))
    if isinstance(msg, protocol.ImageMsg):
        return f"image {msg.seq} {msg.width}x{msg.height} {len(msg.uv)} keypoints"
    d = _jsonable(msg)
    return type(msg).__name__ + " " + " ".join(f"{k}={json.dumps(v)}" for k, v in d.items())


def cmd_echo(client: SlamClient, args: argparse.Namespace) -> int:
    for n, msg in enumerate(client.subscribe(args.topic, timeout_s=args.wait), start=1):
        line = json.dumps(_jsonable(msg)) if args.json else summary_line(msg)
        print(line, flush=True)
        if args.count is not None and n >= args.count:
            break
    return EXIT_OK


def cmd_stats(client: SlamClient, args: argparse.Namespace) -> int:
    for key, value in client.stats().items():
        print(f"{key}: {json.dumps(_jsonable(value))}")
    return EXIT_OK


def cmd_snapshot(client: SlamClient, args: argparse.Namespace) -> int:
    snap = client.snapshot()
    print(f"{len(snap.keyframes)} keyframes, {len(snap.point_ids)} points, "
          f"{len(snap.stamps)} poses, {len(snap.loops)} loops, last seq {snap.last_seq}")
    if args.out is None:
        return EXIT_OK
    arrays = {k: getattr(snap, k) for k in
              ("point_ids", "xyz", "rgb", "stamps", "positions", "orientations")}
    try:
        if args.out.suffix == ".npz":
            np.savez_compressed(args.out, **arrays)
        else:
            rest = {"keyframes": snap.keyframes, "loops": snap.loops, "last_seq": snap.last_seq}
            args.out.write_text(json.dumps(_jsonable({**arrays, **rest})))
    except OSError as exc:
        raise ClientError(f"cannot write {args.out}: {exc}") from exc
    print(f"wrote {args.out}")
    return EXIT_OK


def cmd_push(client: SlamClient, args: argparse.Namespace) -> int:
    from slam.errors import SlamError  # the slam package: only to read local sources
    from slam.io.sources import LimitedSource, open_source

    sent = tracked = dropped = missing = 0
    errors: list[str] = []
    for uri in args.sources:
        try:
            source: Any = open_source(uri, args.sensor, None, args.rate)
            if args.max_frames is not None:
                source = LimitedSource(source, args.max_frames)
            window = None if args.rate else max(1, args.window)
            result = client.push_frames(source, args.rate, args.encoding, max_in_flight=window)
        except SlamError as exc:
            print(f"slam-client: error: {uri}: {_one_line(exc)}", file=sys.stderr)
            return EXIT_SOURCE
        sent, tracked, dropped = sent + result.sent, tracked + result.tracked, \
            dropped + result.dropped
        missing += result.missing
        errors += result.errors
    print(f"{sent} frames sent, {tracked} tracked, {dropped} dropped, "
          f"{len(errors)} refused, {missing} unanswered")
    for error in sorted(set(errors))[:5]:
        print(f"refused: {error}", file=sys.stderr)
    if missing:
        return EXIT_TIMEOUT
    return EXIT_SERVER if errors else EXIT_OK


def cmd_map_file(client: SlamClient, args: argparse.Namespace) -> int:
    if args.command == "save-map":
        reply = client.save_map(args.name, wait_s=args.wait or None)
        if reply.get("state") == "saved":
            print(f"saved map {reply.get('name')} ({reply.get('bytes', '?')} bytes, "
                  f"{reply.get('seconds', '?')} s)")
        else:
            print(f"saving map {reply.get('name')} (see stats: map_save)")
    elif args.command == "load-map":
        reply = client.load_map(args.name)
        print(f"loaded map {reply.get('name', args.name)}: {reply.get('keyframes', '?')} "
              f"keyframes, {reply.get('map_points', '?')} map points")
    else:
        for m in client.list_maps():
            print(f"{m.get('name')}\t{m.get('bytes')}\t{m.get('modified')}")
    return EXIT_OK


def cmd_simple(client: SlamClient, args: argparse.Namespace) -> int:
    getattr(client, args.command)()
    print("ok")
    return EXIT_OK


HANDLERS = {"echo": cmd_echo, "stats": cmd_stats, "snapshot": cmd_snapshot, "push": cmd_push,
            "save-map": cmd_map_file, "load-map": cmd_map_file, "list-maps": cmd_map_file,
            **{name: cmd_simple for name in SIMPLE_COMMANDS}}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slam-client``; return its exit status (errors are one line on stderr)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        curve = None
        if (args.curve_secret is None) != (args.curve_server is None):
            raise ClientError("CurveZMQ needs both --curve-secret and --curve-server")
        if args.curve_secret is not None:
            curve = load_curve_keys(args.curve_secret, args.curve_server)
        with SlamClient(args.pub, args.cmd, args.ingest, curve, args.timeout) as client:
            return HANDLERS[args.command](client, args)
    except ServerError as exc:
        print(f"slam-client: service error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_SERVER
    except ClientTimeoutError as exc:
        print(f"slam-client: timeout: {_one_line(exc)}", file=sys.stderr)
        return EXIT_TIMEOUT
    except ClientError as exc:
        print(f"slam-client: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `slam-client echo pose | head`
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
