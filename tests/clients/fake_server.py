"""A tiny stand-in for the SLAM service, speaking ``slam_protocol`` on free local ports.

XPUB (so a test can wait until the client has subscribed), a command ROUTER and an
ingestion ROUTER, all served by one thread. The PUB socket is only used by that
thread: tests queue messages with :meth:`publish` or start a pose stream.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import cv2
import numpy as np
import zmq

import slam_protocol as protocol

JOIN_TIMEOUT_S = 10.0  # the serving thread polls every 2 ms; this is for a loaded CPU


def _bind(sock: zmq.Socket[Any]) -> str:
    return f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}"


def pose_dict(seq: int, position: list[float] | None = None) -> dict[str, Any]:
    """A pose map as the service publishes it (position (seq, 0, 0) by default)."""
    return {
        "v": 1, "seq": seq, "stamp": protocol.stamp_from_seconds(100.0 + seq / 30.0),
        "frame_id": "map", "child_frame_id": "camera",
        "position": [float(seq), 0.0, 0.0] if position is None else position,
        "orientation": [0.0, 0.0, 0.0, 1.0], "state": "tracking", "latency_ms": 4.5,
        "keyframe": seq % 5 == 0, "source_index": seq, "sender": None,
    }


class FakeServer:
    """``replies`` maps a command to its reply map; ``mute`` makes the next N commands
    go unanswered (a hung service); ``garbage_reply`` answers the next command with bytes
    that are not msgpack. Ingested frames are decoded and kept in ``frames``; the seqs in
    ``drop_seqs`` are answered ``dropped``, a frame that fails to decode ``ok: false``.
    ``stream_hz`` > 0 streams poses at that rate (until seq ``stream_until`` when set);
    :meth:`wait_streamed` waits for one of them to go out.
    """

    def __init__(self) -> None:
        self.replies: dict[str, dict[str, Any]] = {
            "stats": {"ok": True, "frames": 7, "tracked_frames": 6, "fps": 29.5,
                      "state": "tracking", "keyframes": 2, "map_points": 321, "drops": 0,
                      "paused": False},
            "pause": {"ok": True}, "resume": {"ok": True}, "reset": {"ok": True},
            "shutdown": {"ok": True},
        }
        self.requests: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        self.drop_seqs: set[int] = set()
        self.mute = 0
        self.garbage_reply = False
        self.stream_hz = 0.0
        self.stream_until: int | None = None
        self.last_stream_seq = -1
        self._streamed = threading.Condition()
        self._outbox: queue.Queue[tuple[bytes, bytes]] = queue.Queue()
        self._ctx = zmq.Context()
        self._pub = self._socket(zmq.XPUB)
        self._pub.setsockopt(zmq.SNDHWM, 100_000)
        self.pub = _bind(self._pub)
        self._cmd = self._socket(zmq.ROUTER)
        self.cmd = _bind(self._cmd)
        self._ingest = self._socket(zmq.ROUTER)
        self.ingest = _bind(self._ingest)
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _socket(self, kind: int) -> zmq.Socket[Any]:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        return sock

    # --------------------------------------------------------------- test side
    def publish(self, topic: str, msg: dict[str, Any] | bytes) -> None:
        payload = msg if isinstance(msg, bytes) else protocol.encode(msg)
        self._outbox.put((topic.encode("ascii"), payload))

    def wait_subscribed(self, timeout: float = 5.0) -> None:
        if not self._subscribed.wait(timeout):
            raise TimeoutError("nobody subscribed to the fake PUB socket")
        self._subscribed.clear()

    def wait_streamed(self, seq: int, timeout: float = 10.0) -> None:
        """Block until the pose stream has sent ``seq``."""
        with self._streamed:
            if not self._streamed.wait_for(lambda: self.last_stream_seq >= seq, timeout):
                raise TimeoutError(f"the fake never streamed pose {seq}")

    def close(self) -> None:
        """Stop the thread (which closes its sockets) and destroy the fake's context."""
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT_S)
        self._ctx.destroy(linger=0)  # closes the sockets too if the thread is stuck
        assert not self._thread.is_alive(), "the fake server's thread did not stop"

    # ------------------------------------------------------------- server side
    def _serve(self) -> None:
        """Serve until :meth:`close`; the sockets are this thread's: it closes them."""
        try:
            self._serve_until_stopped()
        finally:
            for sock in (self._pub, self._cmd, self._ingest):
                sock.close(linger=0)

    def _serve_until_stopped(self) -> None:
        poller = zmq.Poller()
        for sock in (self._pub, self._cmd, self._ingest):
            poller.register(sock, zmq.POLLIN)
        next_stream = time.monotonic()
        while not self._stop.is_set():
            events = dict(poller.poll(2))
            if self._pub in events and self._pub.recv()[:1] == b"\x01":
                self._subscribed.set()
            if self._cmd in events:
                self._on_command(self._cmd.recv_multipart())
            if self._ingest in events:
                self._on_frame(self._ingest.recv_multipart())
            while not self._outbox.empty():
                self._pub.send_multipart(list(self._outbox.get()))
            rate, seq = self.stream_hz, self.last_stream_seq + 1
            if rate <= 0 or (self.stream_until is not None and seq > self.stream_until):
                next_stream = time.monotonic()
            elif time.monotonic() >= next_stream:
                self._pub.send_multipart([b"pose", protocol.encode(pose_dict(seq))])
                with self._streamed:
                    self.last_stream_seq = seq
                    self._streamed.notify_all()
                next_stream += 1.0 / rate

    def _on_command(self, frames: list[bytes]) -> None:
        envelope, body = frames[:-1], frames[-1]
        request = protocol.decode(body)
        self.requests.append(request)
        if self.mute > 0:
            self.mute -= 1
            return
        if self.garbage_reply:
            self.garbage_reply = False
            self._cmd.send_multipart([*envelope, b"\xc1 not msgpack"])
            return
        cmd = str(request.get("cmd"))
        if cmd in ("save_map", "load_map"):
            name = str(request.get("name"))
            reply = ({"ok": False, "error": f"no map named {name!r}"} if "missing" in name
                     else {"ok": True, "name": name, "state": "saving"} if cmd == "save_map"
                     else {"ok": True, "name": name, "keyframes": 3, "map_points": 99})
            if cmd == "save_map" and reply["ok"]:  # saved at once, as stats then says
                self.replies["stats"]["map_save"] = {"name": name, "state": "saved",
                                                     "bytes": 1234, "seconds": 0.5}
        elif cmd == "list_maps":
            reply = {"ok": True, "maps": [{"name": "office", "bytes": 1234,
                                           "modified": "2026-01-01T00:00:00+00:00"}]}
        else:
            reply = self.replies.get(cmd, {"ok": False, "error": f"unknown command {cmd!r}"})
        self._cmd.send_multipart([*envelope, protocol.encode(reply)])

    def _on_frame(self, frames: list[bytes]) -> None:
        identity, body = frames[0], frames[-1]
        try:
            frame = protocol.IngestFrame.from_dict(protocol.decode(body))
            decoded = self._decode(frame)
        except (protocol.ProtocolError, ValueError) as exc:
            reply = protocol.IngestReply(protocol.NO_SEQ, False, error=str(exc))
        else:
            self.frames.append(decoded)
            if frame.seq in self.drop_seqs:
                reply = protocol.IngestReply(frame.seq, False, "dropped: queue full", True)
            else:
                pose = protocol.PoseMsg.from_dict(pose_dict(len(self.frames) - 1))
                reply = protocol.IngestReply(frame.seq, True, pose=pose)
        self._ingest.send_multipart([identity, protocol.encode(reply.to_dict())])

    @staticmethod
    def _decode(frame: protocol.IngestFrame) -> dict[str, Any]:
        image: Any
        if frame.encoding == "raw":
            assert frame.shape is not None
            image = np.frombuffer(frame.image, np.uint8).reshape(frame.shape)
        else:
            image = cv2.imdecode(np.frombuffer(frame.image, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError("cannot decode the image")
        depth: Any = None
        if frame.depth is not None:
            if frame.encoding == "raw":
                depth = np.frombuffer(frame.depth, "<f4").reshape(image.shape[:2])
            else:
                raw: Any = cv2.imdecode(np.frombuffer(frame.depth, np.uint8), cv2.IMREAD_UNCHANGED)
                depth = raw.astype(np.float32) / float(frame.depth_scale or 5000.0)
        return {"seq": frame.seq, "stamp": frame.stamp.to_seconds(), "image": image,
                "depth": depth, "encoding": frame.encoding, "has_right": frame.right is not None}
