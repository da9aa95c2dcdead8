"""``slam serve`` (the SLAM service over ZeroMQ) and ``slam keys generate`` (CurveZMQ keys).

Registered by ``slam.cli.main`` through :func:`register`; heavy imports happen in
the ``execute`` functions so that ``slam --help`` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slam.config import SENSORS
from slam.errors import CalibrationError, ConfigError, SensorError
from slam_protocol.endpoints import DEFAULT_PORTS

log = logging.getLogger(__name__)

PORTS = DEFAULT_PORTS
# A service runs for days: it keeps the newest hour of poses at 30 Hz (about 12 MB) for
# `snapshot`'s trajectory; older ones were published and are counted as dropped.
SERVICE_MAX_TRAJECTORY_POSES = 108_000
# A live camera must be kept up with: tracking never waits for mapping, only the frames
# that become keyframes get sub-pixel refinement (about 4 ms a frame saved), and no
# keyframe is added where one sees the place within 5 degrees (a robot that keeps
# revisiting its workspace for days must not keep growing its map: without it, the
# looped sample tracked at 20 fps grew from 60 to 140 keyframes in five minutes).
LIVE_OVERRIDES: dict[str, Any] = {
    "tracking.wait_for_mapping": False, "tracking.subpixel": "keyframes",
    "tracking.keyframe_revisit_deg": 5.0,
}


def register(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` and ``keys`` subparsers to ``commands`` (argparse subparsers)."""
    _register_serve(commands, parents)
    _register_keys(commands, parents)


def _register_serve(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "serve", parents=list(parents), help="run SLAM as a service over ZeroMQ",
        description="Track a source (or frames pushed to the ingestion socket) and publish "
        "poses, keyframes, map updates, loops, status and images; answer commands. "
        "See docs/protocol.md.",
        epilog="Endpoints bind to 127.0.0.1 unless --bind says otherwise; a bare port "
        "(5555) uses the --bind address. --source zmq: takes frames from the ingestion "
        "socket only (needs --calib).")
    p.add_argument("--source", required=True, metavar="URI",
                   help="tum:, kitti:, euroc:, video:, images:, webcam:, synthetic: or "
                   "zmq:[ENDPOINT]")
    p.add_argument("--sensor", required=True, choices=SENSORS)
    p.add_argument("--calib", type=Path, metavar="FILE", help="ORB-SLAM settings YAML")
    p.add_argument("--config", type=Path, metavar="FILE", help="configuration YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a setting")
    p.add_argument("--fps", type=float, help="frame rate of video: and images: sources")
    p.add_argument("--pub", metavar="EP", help="PUB endpoint (default port 5555)")
    p.add_argument("--cmd", metavar="EP", help="command endpoint (default port 5556)")
    p.add_argument("--ingest", metavar="EP", help="ingestion endpoint (default port 5557)")
    p.add_argument("--http", type=int, metavar="PORT", help="serve the browser viewer here")
    p.add_argument("--http-bind", metavar="ADDR", help="address of the viewer (default: "
                   "--bind; e.g. 127.0.0.1 to reach it through an SSH tunnel only)")
    p.add_argument("--allow-host", dest="allow_hosts", action="append", default=[],
                   metavar="NAME[:PORT]", help="viewer: also accept this Host name "
                   "(repeatable; see docs/security.md)")
    p.add_argument("--allow-origin", dest="allow_origins", action="append", default=[],
                   metavar="ORIGIN", help="viewer: also accept pages of this origin, "
                   "e.g. https://robot.example (repeatable)")
    p.add_argument("--rate", choices=("realtime", "max"), default="max",
                   help="replay at the source's frame rate (dropping frames when late) or "
                   "as fast as tracking goes (default)")
    p.add_argument("--paused", action="store_true", help="wait for 'resume' before tracking")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                   help="address of the default endpoints (0.0.0.0: every interface)")
    p.add_argument("--curve-server-key", type=Path, metavar="FILE",
                   help="server secret key (.key_secret) from 'slam keys generate'")
    p.add_argument("--curve-clients", type=Path, metavar="DIR",
                   help="folder of the client public keys (.key) to admit")
    p.add_argument("--max-message-bytes", type=int, metavar="N",
                   help="largest request or frame accepted (default 32 MiB)")
    _register_map_options(p)
    p.set_defaults(func=execute_serve)


def _register_map_options(p: argparse.ArgumentParser) -> None:
    """The map directory of save_map/load_map/list_maps (docs/protocol.md, "Map files")."""
    from server import maps

    p.add_argument("--map-dir", type=Path, metavar="DIR",
                   help="the only directory remote save_map/load_map use (maps are named, "
                   "never paths; default $XDG_DATA_HOME/slam/maps, created mode 0700)")
    p.add_argument("--max-map-bytes", type=int, metavar="N", default=maps.DEFAULT_MAX_MAP_BYTES,
                   help="largest map file load_map reads (default 256 MiB)")
    p.add_argument("--max-maps", type=int, metavar="N", default=maps.DEFAULT_MAX_MAPS,
                   help="most maps in the map directory (default %(default)s)")
    p.add_argument("--map-save-interval", type=float, metavar="S",
                   default=maps.DEFAULT_SAVE_INTERVAL_S,
                   help="minimum seconds between two saves (default %(default)s)")


def _register_keys(commands: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("keys", parents=list(parents), help="CurveZMQ keys for serve",
                            description="Manage the CurveZMQ keys of 'slam serve'.")
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    g = sub.add_parser("generate", parents=list(parents), help="write server and client keys",
                       description="Write a server key pair, client key pairs and the "
                       "folder of admitted client public keys.")
    g.add_argument("--out", required=True, type=Path, metavar="DIR")
    g.add_argument("--client", dest="clients", action="append", metavar="NAME",
                   help="client key name (repeatable; default: client)")
    g.add_argument("--force", action="store_true", help="replace existing keys")
    g.set_defaults(func=execute_keys)
    t = sub.add_parser("viewer-token", parents=list(parents),
                       help="print the browser viewer's token",
                       description="Print the token the viewer's WebSocket needs when "
                       "CurveZMQ is on (derived from the server secret key; see "
                       "docs/security.md).")
    t.add_argument("--server-key", required=True, type=Path, metavar="FILE",
                   help="the server secret key (server.key_secret)")
    t.set_defaults(func=execute_viewer_token)


# --- keys ---------------------------------------------------------------------------
def execute_keys(args: argparse.Namespace) -> int:
    """Run ``slam keys generate``."""
    from server.security import generate_keys

    keys = generate_keys(args.out, tuple(args.clients or ("client",)), force=args.force)
    print(f"server secret key:  {keys.server_secret}  (slam serve --curve-server-key)")
    print(f"server public key:  {keys.server_public}  (give to clients)")
    print(f"admitted clients:   {keys.authorized_dir}  (slam serve --curve-clients)")
    for path in keys.client_secrets:
        print(f"client secret key:  {path}  (keep with the client)")
    return 0


def execute_viewer_token(args: argparse.Namespace) -> int:
    """Run ``slam keys viewer-token``: print the token (open ``http://HOST:PORT/#token=...``)."""
    from server.security import load_viewer_token

    print(load_viewer_token(args.server_key))
    return 0


# --- serve --------------------------------------------------------------------------
def endpoint(value: str | None, bind: str, port: int) -> str:
    """``tcp://BIND:PORT`` by default; a bare port or ``:PORT`` uses ``bind``."""
    if value is None:
        return f"tcp://{bind}:{port}"
    text = value.strip()
    if text.lstrip(":").isdigit():
        return f"tcp://{bind}:{text.lstrip(':')}"
    if "://" not in text:
        raise ConfigError(f"endpoint {value!r}: expected tcp://HOST:PORT, ipc://PATH or a port")
    return text


def connect_address(bound: str) -> str:
    """An endpoint a local client can connect to for a bound one (0.0.0.0 -> 127.0.0.1)."""
    for wildcard in ("0.0.0.0", "*", "[::]"):
        prefix = f"tcp://{wildcard}:"
        if bound.startswith(prefix):
            return "tcp://127.0.0.1:" + bound[len(prefix):]
    return bound


def _calibration(path: Path | None) -> Any:
    if path is None:
        raise CalibrationError("--source zmq: needs --calib (the camera of the pushed frames)")
    from slam.io.calibration import load_calibration

    return load_calibration(path)


def _open_source(args: argparse.Namespace) -> tuple[Any, Any]:
    """(source or None for zmq:, calibration)."""
    if args.source == "zmq" or args.source.startswith("zmq:"):
        return None, _calibration(args.calib)
    from slam.io.sources import open_source

    calib_path = str(args.calib) if args.calib is not None else None
    source = open_source(args.source, args.sensor, calib_path, args.fps)
    if args.sensor not in source.sensors:
        raise SensorError(f"{source.name} feeds {sorted(source.sensors)}, not {args.sensor}")
    if source.calibration is None:
        raise CalibrationError(f"{source.name} has no calibration: pass one with --calib")
    return source, source.calibration


def _curve(args: argparse.Namespace) -> Any:
    if args.curve_server_key is None and args.curve_clients is None:
        return None
    if args.curve_server_key is None or args.curve_clients is None:
        raise ConfigError("CurveZMQ needs both --curve-server-key and --curve-clients")
    from server.security import CurveServerKeys

    return CurveServerKeys.load(args.curve_server_key, args.curve_clients)


def build_options(args: argparse.Namespace) -> tuple[Any, Any]:
    """(ServiceOptions, source or None) of parsed ``serve`` arguments."""
    import slam_protocol as proto
    from server.service import ServiceOptions
    from slam.config import load_config, parse_overrides

    source, calibration = _open_source(args)
    live = source is None or args.rate == "realtime" or source.length is None
    overrides: dict[str, Any] = LIVE_OVERRIDES.copy() if live else {}
    overrides["system.max_trajectory_poses"] = SERVICE_MAX_TRAJECTORY_POSES
    overrides.update(parse_overrides(args.overrides))
    config = load_config(args.config, overrides)
    ingest_ep = endpoint(args.ingest, args.bind, PORTS["ingest"])
    zmq_target = args.source.partition(":")[2] if source is None else ""
    if zmq_target:
        ingest_ep = endpoint(zmq_target, args.bind, PORTS["ingest"])
    max_bytes = args.max_message_bytes or proto.MAX_MESSAGE_BYTES
    if max_bytes < 1024:
        raise ConfigError("--max-message-bytes must be at least 1024")
    opts = ServiceOptions(
        sensor=args.sensor, calibration=calibration, config=config,
        pub_endpoint=endpoint(args.pub, args.bind, PORTS["pub"]),
        cmd_endpoint=endpoint(args.cmd, args.bind, PORTS["cmd"]), ingest_endpoint=ingest_ep,
        realtime=args.rate == "realtime", paused=args.paused, max_message_bytes=max_bytes,
        curve=_curve(args), **_map_options(args))
    return opts, source


def _map_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ServiceOptions map fields. A ``--map-dir`` given is created (mode 0700) and
    checked here, so that an unusable one is a ConfigError at start; the default one
    is created at the first map command."""
    from server.maps import MapDirectory

    if args.max_map_bytes < 1024 or args.max_maps < 1 or not args.map_save_interval >= 0:
        raise ConfigError("--max-map-bytes must be at least 1024, --max-maps at least 1 and "
                          "--map-save-interval at least 0")
    root = None
    if args.map_dir is not None:
        root = args.map_dir.expanduser().resolve()
        MapDirectory(root).close()
    return {"map_dir": root, "max_map_bytes": args.max_map_bytes, "max_maps": args.max_maps,
            "map_save_interval_s": args.map_save_interval}


def _bridge_keys(opts: Any) -> Any:
    """An in-process client key for the viewer bridge, admitted by the server (CurveZMQ)."""
    if opts.curve is None:
        return None
    from slam_protocol.curve import CurveClientKeys

    keys = CurveClientKeys.ephemeral(opts.curve.public)
    opts.curve = opts.curve.with_client(keys.public)
    return keys


def _start_bridge(args: argparse.Namespace, service: Any, curve: Any) -> Any:
    """Start the browser viewer bridge (``server.web_bridge``) for ``--http``."""
    try:
        from server import web_bridge  # type: ignore[attr-defined]
    except ImportError as exc:
        raise ConfigError("--http needs the viewer bridge (server/web_bridge.py), which "
                          f"cannot be imported: {exc}") from exc
    from server.security import viewer_token

    ep = service.endpoints
    token = None if curve is None else viewer_token(service.opts.curve.secret)
    return web_bridge.start_bridge(args.http, connect_address(ep["pub"]),
                                   connect_address(ep["cmd"]), host=args.http_bind or args.bind,
                                   curve=curve, token=token, allow_hosts=args.allow_hosts,
                                   allow_origins=args.allow_origins)


def execute_serve(args: argparse.Namespace) -> int:
    """Run ``slam serve`` until ``shutdown``, Ctrl-C or SIGTERM; exit 0 when clean."""
    from server.service import SlamService

    logging.getLogger("server").setLevel(logging.getLogger("slam").getEffectiveLevel())
    opts, source = build_options(args)
    bridge_keys = _bridge_keys(opts) if args.http is not None else None
    service = SlamService(opts, source)
    bridge = None
    previous = _on_signals(service.request_shutdown)
    try:
        service.start()
        ep = service.endpoints
        print(f"slam serve: pub {ep['pub']}  cmd {ep['cmd']}  ingest {ep['ingest']}"
              f"{'  (CurveZMQ)' if opts.curve else ''}", flush=True)
        if args.http is not None:
            bridge = _start_bridge(args, service, bridge_keys)
            print(f"slam serve: viewer on {bridge.page_url}", flush=True)  # token included
        while not service.wait(0.5):
            pass
    finally:
        _restore_signals(previous)
        if bridge is not None:
            bridge.stop()
        service.stop()
    return 0


def _on_signals(handler: Any) -> dict[int, Any]:
    """The first Ctrl-C or SIGTERM requests a clean shutdown, a second one interrupts
    (main thread only; elsewhere nothing is installed)."""
    previous: dict[int, Any] = {}
    calls = [0]

    def on_signal(signum: int, frame: Any) -> None:
        calls[0] += 1
        if calls[0] > 1:
            raise KeyboardInterrupt
        log.info("signal %d: shutting down", signum)
        handler()

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    except ValueError:  # not the main thread
        pass
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m server.cli serve|keys ...``: the same as ``slam serve|keys``."""
    from slam.errors import SlamError

    parser = argparse.ArgumentParser(prog="slam")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), [])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("slam").setLevel(logging.INFO)
    try:
        return int(args.func(args))
    except SlamError as exc:
        print(f"slam: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
