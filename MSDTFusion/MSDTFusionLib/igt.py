"""Live OpenIGTLink data (PLUS Server, trackers, ultrasound) into the MRML scene, safely for a GUI.

:class:`IgtClient` receives on a background thread built on :class:`pyigtl.OpenIGTLinkClient` and only *queues*
what arrives; :meth:`IgtClient.process_pending`, called from the main thread (a Slicer timer or a loop), applies
the queued messages to MRML nodes. The scene is therefore never touched from another thread and the main thread
never waits on the network.

- ``TRANSFORM`` -> :class:`vtkMRMLLinearTransformNode` named like the device (``ProbeToTracker``).
- ``IMAGE`` -> :class:`vtkMRMLScalarVolumeNode` named like the device, with spacing, origin and direction
  from the message's IJK-to-world matrix (LPS messages are converted to RAS).
- The PLUS coordinate chain is built with parent transforms, so that the live frame lands in MRI space::

      Image -> ImageToProbe -> ProbeToTracker -> TrackerToReference -> ReferenceToMRI

  ``TrackerToReference`` is kept as the inverse of the received ``ReferenceToTracker``; ``ReferenceToMRI`` is a
  transform node you give (e.g. the registration result). An image device ``<Name>_<Frame>`` (PLUS naming, e.g.
  ``Image_Image`` or ``Image_Reference``) is placed under the transform that leaves ``<Frame>``.

The receiver differs from pyigtl's own loop where that loop is fragile: it keeps *every* message in order
(pyigtl keeps only the newest per device), reassembles messages split across reads, checks header sanity and the
CRC, notices a closed connection, reconnects with backoff, and turns garbage or truncated data into counted
errors and a reconnect instead of an exception.

:class:`IgtlBroadcastServer` is a small OpenIGTLink server (several clients, one sender thread each, bounded
per-client queues, no signal handlers, usable from any thread) used by :class:`IgtServer` (send MRML nodes) and by
the PLUS replay simulator in :mod:`MSDTFusionLib.igtsim`.
"""

from __future__ import annotations

import collections
import logging
import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pyigtl
import slicer
import vtk
from pyigtl.messages import CRC64, MessageBase

log = logging.getLogger("msdt.igt")

DEFAULT_PORT = 18944
HEADER_SIZE = MessageBase.IGTL_HEADER_SIZE  # 58 bytes
DEFAULT_CHAIN = ("Image", "Probe", "Tracker", "Reference")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_HEADER = struct.Struct("> H 12s 20s I I Q Q")
_TYPE_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,11}$")
_TRANSFORM_NAME = re.compile(r"^([A-Za-z0-9]+?)To([A-Z][A-Za-z0-9]*)$")


# ------------------------------------------------------------------------------------------------ helpers

def vtk_matrix(array) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            matrix.SetElement(row, col, float(array[row][col]))
    return matrix


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (bind to port 0 and read what the OS picked)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def split_transform_name(name: str) -> tuple[str, str] | None:
    """``"ProbeToTracker"`` -> ``("Probe", "Tracker")``; None when the name is not ``<From>To<To>``."""
    match = _TRANSFORM_NAME.match(name)
    return (match.group(1), match.group(2)) if match else None


def parse_header(raw: bytes) -> tuple[dict, int]:
    """Validate and decode a 58-byte OpenIGTLink header; returns (pyigtl header fields, CRC).

    Raises ValueError naming the problem for anything that cannot be a real header (random bytes, a header
    of another protocol, an absurd body size), so the caller can drop the connection and resynchronise.
    """
    version, type_raw, device_raw, seconds, fraction, body_size, crc = _HEADER.unpack(raw)
    if version not in (1, 2):
        raise ValueError(f"header version {version}")
    type_name = type_raw.split(b"\0", 1)[0].decode("ascii", "replace")
    if not _TYPE_NAME.match(type_name):
        raise ValueError(f"message type {type_raw!r}")
    try:
        device_name = device_raw.split(b"\0", 1)[0].decode("utf8")
    except UnicodeDecodeError:
        raise ValueError(f"device name {device_raw!r}") from None
    if version == 2 and body_size < 12:
        raise ValueError(f"version-2 body of {body_size} bytes (shorter than the extended header)")
    fields = {"header_version": version, "message_type": type_name, "device_name": device_name,
              "timestamp": seconds + fraction / 2.0**32, "body_size": body_size}
    return fields, crc


def _percentile_ms(values, q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values), q)) * 1000.0, 3) if len(values) else None


@dataclass
class IgtUpdate:
    """What :meth:`IgtClient.process_pending` applied for one message (given to listeners, main thread)."""

    device: str
    message_type: str
    nodes: tuple  # the device node first, then derived nodes (e.g. TrackerToReference)
    timestamp: float  # message timestamp (s since 1970, sender clock)
    receive_time: float  # when the message was complete on the socket (s since 1970, local clock)
    message_id: int
    metadata: dict
    message: object = field(repr=False, default=None)


class _DeviceStats:
    __slots__ = ("message_type", "received", "applied", "dropped", "invalid", "first_receive", "last_receive",
                 "last_timestamp", "last_id", "latencies", "intervals", "recent")

    def __init__(self, message_type: str, window: int):
        self.message_type = message_type
        self.received = self.applied = self.dropped = self.invalid = 0
        self.first_receive = self.last_receive = None
        self.last_timestamp = None
        self.last_id = None
        self.latencies = collections.deque(maxlen=window)
        self.intervals = collections.deque(maxlen=50)
        self.recent = collections.deque(maxlen=1000)

    def reset_sequence(self) -> None:
        """Forget where the stream was (after a reconnect a gap is not a drop)."""
        self.last_id = None
        self.last_timestamp = None
        self.intervals.clear()

    def count_gap(self, message_id: int, timestamp: float) -> int:
        """Messages missing before this one: from the message ID when the sender numbers its messages
        (header version 2), otherwise from a timestamp interval much longer than the usual one."""
        missing = 0
        if message_id > 0:
            if self.last_id is not None and message_id > self.last_id + 1:
                missing = message_id - self.last_id - 1
            self.last_id = message_id
        elif self.last_timestamp is not None:
            interval = timestamp - self.last_timestamp
            if interval > 0:
                usual = float(np.median(self.intervals)) if len(self.intervals) >= 5 else None
                if usual and interval > 2.5 * usual:
                    missing = int(round(interval / usual)) - 1
                else:
                    self.intervals.append(interval)
        self.last_timestamp = timestamp
        return missing

    def summary(self) -> dict:
        span = (self.last_receive - self.first_receive) if self.received > 1 else 0.0
        now = time.time()
        recent = [t for t in self.recent if now - t <= 1.0]
        return {"type": self.message_type, "received": self.received, "applied": self.applied,
                "dropped": self.dropped, "invalid": self.invalid,
                "fps": round((self.received - 1) / span, 3) if span > 0 else None,
                "recent_fps": len(recent),
                "latency_median_ms": _percentile_ms(self.latencies, 50),
                "latency_p95_ms": _percentile_ms(self.latencies, 95),
                "last_timestamp": self.last_timestamp}


# ----------------------------------------------------------------------------------------- receiver thread

class _QueueingClient(pyigtl.OpenIGTLinkClient):
    """pyigtl's client with a receive loop that hands every message to ``sink`` and survives bad streams.

    pyigtl's stock loop keeps only the newest message per device, loses a header split across reads, never
    notices that the server closed the connection and prints tracebacks on errors; this loop replaces it.
    Outgoing messages still go through pyigtl's queue (:meth:`send_message`).
    """

    RECV_BYTES = 1 << 20

    def __init__(self, host, port, sink, reconnect=True, retry_interval=0.1, max_retry_interval=2.0,
                 connect_timeout=1.0, body_timeout=5.0, poll_interval=0.02, max_message_bytes=256 << 20):
        super().__init__(host=host, port=port, start_now=False, body_receive_timeout_sec=body_timeout)
        self.sink = sink
        self.reconnect = reconnect
        self.retry_interval = retry_interval
        self.max_retry_interval = max_retry_interval
        self.connect_timeout = connect_timeout
        self.poll_interval = poll_interval
        self.max_message_bytes = max_message_bytes
        self._stop_event = threading.Event()

    def stop(self, timeout: float = 5.0) -> None:
        self.communication_thread_stop_requested = True
        self._stop_event.set()
        if self._started and self._client_thread.is_alive():
            self._client_thread.join(timeout)
        self._started = False
        self._connected = False

    def _client_thread_function(self):
        try:
            self._run()
        except Exception as error:  # the thread must never die silently
            self.sink._on_error(f"receiver stopped by an unexpected error: {error!r}")
        finally:
            self._close()
            self.communication_thread_stopped = True
            self.sink._on_status("stopped")

    def _close(self):
        if self.socket is not None:
            try:
                self.socket.close()
            except OSError:
                pass
        self.socket = None
        self._connected = False

    def _connect(self) -> bool:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect((self.host, self.port))
        except OSError:
            sock.close()
            return False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.poll_interval)
        self.socket = sock
        self._connected = True
        return True

    def _run(self):
        delay = self.retry_interval
        ever_connected = False
        address = f"{self.host}:{self.port}"
        while not self._stop_event.is_set():
            self.sink._on_status(f"connecting to {address}")
            if not self._connect():
                self.sink._on_status(f"waiting for {address} (retry in {delay:.1f} s)")
                if self._stop_event.wait(delay):
                    break
                delay = min(delay * 2.0, self.max_retry_interval)
                continue
            self.sink._on_connected(reconnect=ever_connected)
            ever_connected = True
            delay = self.retry_interval
            self.sink._on_status(f"connected to {address}")
            reason = self._receive_loop()
            self._close()
            if self._stop_event.is_set():
                break
            if not self.reconnect:
                self.sink._on_status(f"disconnected from {address}: {reason}")
                return
            self.sink._on_status(f"disconnected from {address}: {reason}; retrying in {delay:.1f} s")
            if self._stop_event.wait(delay):
                break

    def _receive_loop(self) -> str:
        """Read until the connection ends; returns why it ended."""
        sock = self.socket
        buffer = bytearray()
        last_progress = time.monotonic()
        expected = HEADER_SIZE
        while not self._stop_event.is_set():
            try:
                while self._send_queued_message_from_socket(sock):
                    pass
            except OSError as error:
                return f"sending failed ({error})"
            try:
                chunk = sock.recv(self.RECV_BYTES)
            except (TimeoutError, BlockingIOError):
                if buffer and time.monotonic() - last_progress > self.body_receive_timeout_sec:
                    self.sink._on_error(f"truncated message: {len(buffer)} of {expected} bytes, then nothing for "
                                    f"{self.body_receive_timeout_sec:g} s")
                    return "stalled in the middle of a message"
                continue
            except OSError as error:
                return f"connection lost ({error})"
            if not chunk:
                if buffer:
                    self.sink._on_error(f"truncated message: the connection closed after {len(buffer)} of "
                                    f"{expected} bytes")
                return "the server closed the connection"
            buffer += chunk
            last_progress = time.monotonic()
            while len(buffer) >= HEADER_SIZE:
                try:
                    header, crc = parse_header(bytes(buffer[:HEADER_SIZE]))
                except (ValueError, struct.error) as error:
                    self.sink._on_error(f"invalid OpenIGTLink header ({error}); dropping the connection")
                    return "protocol error"
                if header["body_size"] > self.max_message_bytes:
                    self.sink._on_error(f"message body of {header['body_size']} bytes is larger than the "
                                    f"{self.max_message_bytes} allowed; dropping the connection")
                    return "protocol error"
                expected = HEADER_SIZE + header["body_size"]
                if len(buffer) < expected:
                    break
                body = bytes(buffer[HEADER_SIZE:expected])
                del buffer[:expected]
                self.sink._on_message(header, crc, body, time.time())
                expected = HEADER_SIZE
        return "stopped"


# --------------------------------------------------------------------------------------------- the client

class IgtClient:
    """OpenIGTLink client that feeds MRML nodes from the main thread.

    ``client.start()`` connects in the background (retrying with backoff while the server is away); call
    ``client.process_pending()`` regularly from the thread that owns ``scene``. ``client.statistics()`` and
    ``client.status`` can be read from any thread. Nothing here raises into the caller because of the network
    or the data; problems are counted (``errors``) and described (``last_error``).
    """

    def __init__(self, scene, host: str = "127.0.0.1", port: int = DEFAULT_PORT, reconnect: bool = True, *,
                 reference_to_mri=None, image_to_probe=None, chain=DEFAULT_CHAIN, max_queue: int = 512,
                 verify_crc: bool = True, retry_interval: float = 0.1, max_retry_interval: float = 2.0,
                 body_timeout: float = 5.0, latency_window: int = 20000, start: bool = False):
        self.scene = scene
        self.host, self.port = host, int(port)
        self.chain = tuple(chain)
        self.verify_crc = verify_crc
        self.max_queue = max_queue
        self._image_to_probe = None if image_to_probe is None else np.asarray(image_to_probe, float)
        self._node_ids: dict[str, str] = {}
        self._chain_ready = False
        self._reference_to_mri_id = None
        self.set_reference_to_mri(reference_to_mri)

        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._devices: dict[str, _DeviceStats] = {}
        self._latency_window = latency_window
        self._status = "not started"
        self._errors = 0
        self._error_log: collections.deque = collections.deque(maxlen=20)
        self._reconnects = 0
        self._connections = 0
        self._overflow = 0
        self._ignored: collections.Counter = collections.Counter()
        self._received = 0
        self._started_at = None

        self._listeners: list = []
        self._link = _QueueingClient(self.host, self.port, self, reconnect=reconnect,
                                     retry_interval=retry_interval, max_retry_interval=max_retry_interval,
                                     body_timeout=body_timeout)
        if start:
            self.start()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> IgtClient:
        self._started_at = time.time()
        self._link.start()
        return self

    def stop(self) -> None:
        """Stop receiving (messages already queued stay queued for :meth:`process_pending`)."""
        self._link.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def status(self) -> str:
        with self._lock:
            return self._status

    @property
    def connected(self) -> bool:
        return self._link.is_connected()

    @property
    def reconnects(self) -> int:
        with self._lock:
            return self._reconnects

    @property
    def errors(self) -> int:
        with self._lock:
            return self._errors

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._error_log[-1] if self._error_log else None

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def send_message(self, message) -> bool:
        """Queue a pyigtl message for the server (sent by the receiver thread)."""
        return self._link.send_message(message, wait=False)

    # ------------------------------------------------------- receiver-thread side (called by _QueueingClient)
    def _on_status(self, text: str) -> None:
        with self._lock:
            self._status = text

    def _on_connected(self, reconnect: bool) -> None:
        with self._lock:
            self._connections += 1
            if reconnect:
                self._reconnects += 1
            for stats in self._devices.values():
                stats.reset_sequence()

    def _on_error(self, text: str) -> None:
        log.debug("igt %s:%s: %s", self.host, self.port, text)
        with self._lock:
            self._errors += 1
            self._error_log.append(text)

    def _on_message(self, header: dict, crc: int, body: bytes, receive_time: float) -> None:
        kind, device = header["message_type"], header["device_name"]
        if self.verify_crc and CRC64(body) != crc:
            self._on_error(f"CRC mismatch in {kind} message '{device}'")
            return
        message = MessageBase.create_message(kind)
        if message is None:
            with self._lock:
                self._ignored[kind] += 1
            return
        try:
            message.unpack(header, body)
        except Exception as error:
            self._on_error(f"{kind} message '{device}' could not be decoded: {error!r}")
            return
        with self._lock:
            stats = self._devices.get(device)
            if stats is None:
                stats = self._devices[device] = _DeviceStats(kind, self._latency_window)
            stats.received += 1
            self._received += 1
            stats.first_receive = stats.first_receive or receive_time
            stats.last_receive = receive_time
            stats.recent.append(receive_time)
            stats.latencies.append(receive_time - message.timestamp)
            stats.dropped += stats.count_gap(int(message.message_id or 0), message.timestamp)
            self._queue.append((message, receive_time))
            while len(self._queue) > self.max_queue:
                old, _ = self._queue.popleft()
                self._overflow += 1
                self._devices[old.device_name].dropped += 1

    # ------------------------------------------------------------------------- main-thread side
    def add_listener(self, callback) -> None:
        """``callback(update: IgtUpdate)`` after each applied message (main thread, inside process_pending)."""
        self._listeners.append(callback)

    def remove_listener(self, callback) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def set_reference_to_mri(self, node) -> None:
        """Put the chain under ``node`` (a transform node, its ID, or None to end the chain at Reference).

        Main thread. Nodes this client placed under the previous ReferenceToMRI (the top chain link, images and
        tools given in the Reference frame) move under the new one.
        """
        old = self._reference_to_mri_id
        self._reference_to_mri_id = node if node is None or isinstance(node, str) else node.GetID()
        for name in list(self._node_ids):
            placed = self._existing_node(name)
            if placed is not None and placed.GetTransformNodeID() == old and old is not None:
                placed.SetAndObserveTransformNodeID(self._reference_to_mri_id)
        if self._chain_ready:
            top = self._existing_node(self._link_name(len(self.chain) - 2))
            if top is not None:
                top.SetAndObserveTransformNodeID(self._reference_to_mri_id)

    def process_pending(self, max_messages: int | None = None) -> int:
        """Apply the messages queued so far to the scene, oldest first; returns how many were applied.

        Call from the thread that owns the scene. Messages arriving meanwhile wait for the next call, so the
        call always ends. A message that cannot be applied is counted as an error, never raised.
        """
        with self._lock:
            count = len(self._queue) if max_messages is None else min(max_messages, len(self._queue))
        applied = 0
        for _ in range(count):
            with self._lock:
                if not self._queue:
                    break
                message, receive_time = self._queue.popleft()
            try:
                nodes = self._apply(message)
            except Exception as error:
                self._on_error(f"{message.message_type} '{message.device_name}' could not be applied: {error!r}")
                continue
            if not nodes:
                continue
            applied += 1
            with self._lock:
                self._devices[message.device_name].applied += 1
            update = IgtUpdate(message.device_name, message.message_type, tuple(nodes), message.timestamp,
                               receive_time, int(message.message_id or 0), dict(message.metadata), message)
            for listener in list(self._listeners):
                try:
                    listener(update)
                except Exception as error:
                    self._on_error(f"listener {listener!r} failed: {error!r}")
        return applied

    def statistics(self) -> dict:
        """Counters and rates (thread-safe): per device received/applied/dropped/fps/latency, plus totals."""
        with self._lock:
            devices = {name: stats.summary() for name, stats in sorted(self._devices.items())}
            latencies = [v for stats in self._devices.values() for v in stats.latencies]
            image_fps = [d["fps"] for d in devices.values() if d["type"] == "IMAGE" and d["fps"]]
            return {"host": self.host, "port": self.port, "status": self._status,
                    "connected": self._link.is_connected(), "connections": self._connections,
                    "reconnects": self._reconnects, "errors": self._errors,
                    "last_error": self._error_log[-1] if self._error_log else None,
                    "received": self._received, "pending": len(self._queue),
                    "dropped": sum(d["dropped"] for d in devices.values()), "queue_overflow": self._overflow,
                    "ignored": dict(self._ignored),
                    "image_fps": max(image_fps) if image_fps else None,
                    "latency_median_ms": _percentile_ms(latencies, 50),
                    "latency_p95_ms": _percentile_ms(latencies, 95), "devices": devices}

    # ------------------------------------------------------------------------------ applying
    def _existing_node(self, name: str, class_name: str | None = None):
        node_id = self._node_ids.get(name)
        node = self.scene.GetNodeByID(node_id) if node_id else None
        if node is not None and node.GetName() == name and (class_name is None or node.IsA(class_name)):
            return node
        return None

    def _node(self, name: str, class_name: str, parent_id: str | None = "keep"):
        """The node called ``name`` (reused from the scene when one exists, else created)."""
        node = self._existing_node(name, class_name)
        if node is None:
            node = self.scene.GetFirstNode(name, class_name, None, True)  # exact name
            if node is None or not node.IsA(class_name):
                node = self.scene.AddNewNodeByClass(class_name, name)
                if parent_id != "keep":
                    node.SetAndObserveTransformNodeID(parent_id)
            self._node_ids[name] = node.GetID()
        return node

    def _link_name(self, index: int) -> str:
        return f"{self.chain[index]}To{self.chain[index + 1]}"

    def _ensure_chain(self) -> None:
        """Create (or adopt) ImageToProbe -> ProbeToTracker -> TrackerToReference and hang it on ReferenceToMRI."""
        if self._chain_ready:
            for index in range(len(self.chain) - 1):
                if self._existing_node(self._link_name(index)) is None:
                    break
            else:
                return
        parent_id = self._reference_to_mri_id
        for index in reversed(range(len(self.chain) - 1)):
            node = self._node(self._link_name(index), "vtkMRMLLinearTransformNode")
            node.SetAndObserveTransformNodeID(parent_id)
            node.SetAttribute("MSDT.IGTChainLink", "1")
            if index == 0 and self._image_to_probe is not None:
                node.SetMatrixTransformToParent(vtk_matrix(self._image_to_probe))
            parent_id = node.GetID()
        self._chain_ready = True

    def _frame_parent_id(self, frame: str) -> str | None:
        """ID of the transform that takes coordinates of ``frame`` one step up the chain (None: world)."""
        if frame not in self.chain:
            return None
        index = self.chain.index(frame)
        if index == len(self.chain) - 1:
            return self._reference_to_mri_id
        self._ensure_chain()
        return self._existing_node(self._link_name(index)).GetID()

    def _apply(self, message) -> list:
        kind = message.message_type
        if kind == "TRANSFORM":
            return self._apply_transform(message)
        if kind == "IMAGE":
            return [self._apply_image(message)]
        return []

    def _apply_transform(self, message) -> list:
        name = message.device_name
        status = message.metadata.get("TransformStatus", "OK") if message.metadata else "OK"
        if status.upper() not in ("OK", "VALID"):
            with self._lock:
                self._devices[name].invalid += 1
            return []
        matrix = vtk_matrix(message.matrix)
        frames = split_transform_name(name)
        links = {(self.chain[i], self.chain[i + 1]) for i in range(len(self.chain) - 1)}
        nodes = []
        if frames in links:  # a link of the chain itself (ProbeToTracker)
            self._ensure_chain()
            node = self._node(name, "vtkMRMLLinearTransformNode")
            node.SetMatrixTransformToParent(matrix)
            return [node]
        if frames is not None and frames[::-1] in links:  # the inverse of a link (ReferenceToTracker)
            node = self._node(name, "vtkMRMLLinearTransformNode", parent_id=None)
            node.SetMatrixTransformToParent(matrix)
            nodes.append(node)
            self._ensure_chain()
            inverse = self._existing_node(f"{frames[1]}To{frames[0]}")
            inverse.SetMatrixTransformFromParent(matrix)
            nodes.append(inverse)
            return nodes
        parent_id = self._frame_parent_id(frames[1]) if frames else None  # e.g. StylusToTracker
        node = self._node(name, "vtkMRMLLinearTransformNode", parent_id=parent_id)
        node.SetMatrixTransformToParent(matrix)
        return [node]

    def _apply_image(self, message):
        name = message.device_name
        voxels = np.asarray(message.image)
        if voxels.ndim == 4 and voxels.shape[3] == 1:
            voxels = voxels[..., 0]
        if voxels.ndim == 2:
            voxels = voxels[np.newaxis]
        if voxels.dtype.byteorder not in ("=", "|"):
            voxels = voxels.astype(voxels.dtype.newbyteorder("="))
        class_name = "vtkMRMLScalarVolumeNode" if voxels.ndim == 3 else "vtkMRMLVectorVolumeNode"
        frame = name.rsplit("_", 1)[1] if "_" in name else self.chain[0]
        created = self._existing_node(name, class_name) is None
        node = self._node(name, class_name, parent_id=self._frame_parent_id(frame))
        was_modifying = node.StartModify()
        image = node.GetImageData()
        components = voxels.shape[3] if voxels.ndim == 4 else 1
        same = (image is not None and image.GetPointData().GetScalars() is not None
                and tuple(image.GetDimensions()) == tuple(reversed(voxels.shape[:3]))
                and image.GetNumberOfScalarComponents() == components
                and slicer.util.arrayFromVolume(node).dtype == voxels.dtype)
        if same:  # the usual case: refill the existing buffer, no allocation
            np.copyto(slicer.util.arrayFromVolume(node), voxels)
            slicer.util.arrayFromVolumeModified(node)
        else:  # first frame or a new size/type (this also signals ImageDataModifiedEvent)
            slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(voxels))
        ijk_to_world = np.asarray(message.ijk_to_world_matrix, dtype=float)
        if getattr(message, "world_coordinate_system", "ras") == "lps":
            ijk_to_world = LPS_TO_RAS @ ijk_to_world
        node.SetIJKToRASMatrix(vtk_matrix(ijk_to_world))
        node.EndModify(was_modifying)
        if same:
            node.InvokeEvent(slicer.vtkMRMLVolumeNode.ImageDataModifiedEvent, node)
        if created and node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        return node


# ----------------------------------------------------------------------------------------- the server side

class _Peer:
    """One connected client of :class:`IgtlBroadcastServer`: a bounded queue and a sender thread."""

    def __init__(self, server, sock, address, max_pending):
        self.server, self.sock, self.address = server, sock, address
        self.queue: collections.deque = collections.deque()
        self.max_pending = max_pending
        self.dropped = 0
        self.condition = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name=f"igtl-peer-{address}", daemon=True)

    def put(self, data: bytes) -> None:
        with self.condition:
            self.queue.append(data)
            while len(self.queue) > self.max_pending:
                self.queue.popleft()
                self.dropped += 1
            self.condition.notify()

    def close(self) -> None:
        with self.condition:
            self.closed = True
            self.condition.notify()
        for action in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):
            try:
                action()
            except OSError:
                pass

    def _client_gone(self) -> bool:
        """Drain what the client sent (ignored) and tell whether it closed the connection."""
        try:
            while select.select([self.sock], [], [], 0)[0]:
                if not self.sock.recv(65536):
                    return True
        except (OSError, ValueError):
            return True
        return False

    def _run(self):
        try:
            while True:
                with self.condition:
                    while not self.queue and not self.closed:
                        if not self.condition.wait(0.25):
                            break
                    if self.closed:
                        return
                    data = self.queue.popleft() if self.queue else None
                if data is None:
                    if self._client_gone():
                        return
                    continue
                self.sock.sendall(data)
                self.server._sent(len(data))
        except OSError:
            pass
        finally:
            self.server._forget(self)
            self.close()


class IgtlBroadcastServer:
    """OpenIGTLink server that sends every message to every connected client (like PLUS Server).

    Binds in the constructor (``port=0`` picks a free port, see :attr:`port`), accepts on a background thread,
    and gives each client its own sender thread and a queue of at most ``max_pending`` messages (the oldest are
    dropped for a client that cannot keep up; :meth:`statistics` counts them). Thread-safe; no signal handlers.
    """

    def __init__(self, port: int = DEFAULT_PORT, host: str = "127.0.0.1", max_pending: int = 64):
        self.host = host
        self.max_pending = max_pending
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((host, int(port)))
        except OSError as error:
            self._listener.close()
            raise OSError(f"OpenIGTLink server cannot listen on {host}:{port}: {error}") from error
        self._listener.listen(8)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._peers: list[_Peer] = []
        self._stop = threading.Event()
        self._connections = 0
        self._messages = 0
        self._bytes = 0
        self._dropped_by_gone_peers = 0
        self.client_connected = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name=f"igtl-server-{self.port}", daemon=True)
        self._thread.start()

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._peers)

    def send(self, message) -> int:
        """Queue a pyigtl message (or packed bytes) for every connected client; returns how many."""
        data = message if isinstance(message, bytes | bytearray) else message.pack()
        with self._lock:
            peers = list(self._peers)
            if peers:
                self._messages += 1
        for peer in peers:
            peer.put(bytes(data))
        return len(peers)

    def statistics(self) -> dict:
        with self._lock:
            return {"port": self.port, "clients": len(self._peers), "connections": self._connections,
                    "messages_sent": self._messages, "bytes_sent": self._bytes,
                    "dropped": self._dropped_by_gone_peers + sum(p.dropped for p in self._peers)}

    def stop(self) -> None:
        """Close the listening socket and every connection (clients see the server go away)."""
        self._stop.set()
        self._thread.join(2.0)
        with self._lock:
            peers = list(self._peers)
        for peer in peers:
            peer.close()
        for peer in peers:
            peer.thread.join(2.0)

    def _sent(self, size: int) -> None:
        with self._lock:
            self._bytes += size

    def _forget(self, peer: _Peer) -> None:
        with self._lock:
            if peer in self._peers:
                self._peers.remove(peer)
                self._dropped_by_gone_peers += peer.dropped

    def _accept_loop(self):
        try:
            while not self._stop.is_set():
                try:
                    sock, address = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                peer = _Peer(self, sock, f"{address[0]}:{address[1]}", self.max_pending)
                with self._lock:
                    self._peers.append(peer)
                    self._connections += 1
                peer.thread.start()
                self.client_connected.set()
        finally:
            self._listener.close()


class IgtServer:
    """Send MRML transforms and images to OpenIGTLink clients (Slicer's OpenIGTLinkIF, another IgtClient).

    A thin layer over :class:`IgtlBroadcastServer` (pyigtl's own server serves one client at a time, must be
    created in the main thread because it installs signal handlers, and polls with a 10 ms delay).
    """

    def __init__(self, port: int = DEFAULT_PORT, host: str = "127.0.0.1"):
        self._server = IgtlBroadcastServer(port, host)
        self.port = self._server.port

    @property
    def client_count(self) -> int:
        return self._server.client_count

    def wait_for_client(self, timeout: float | None = None) -> bool:
        return self._server.client_connected.wait(timeout)

    def send_transform(self, node_or_matrix, device_name: str | None = None, timestamp: float | None = None,
                       to_world: bool = False) -> int:
        """Send a transform node's matrix to its parent (or to world) or a 4x4 array as TRANSFORM."""
        if hasattr(node_or_matrix, "GetMatrixTransformToParent"):
            matrix = vtk.vtkMatrix4x4()
            if to_world:
                node_or_matrix.GetMatrixTransformToWorld(matrix)
            else:
                node_or_matrix.GetMatrixTransformToParent(matrix)
            array = numpy_matrix(matrix)
            device_name = device_name or node_or_matrix.GetName()
        else:
            array = np.asarray(node_or_matrix, dtype=float)
        if not device_name:
            raise ValueError("a device name is needed to send a matrix")
        message = pyigtl.TransformMessage(array, timestamp=timestamp, device_name=device_name)
        return self._server.send(message)

    def send_image(self, volume_node, device_name: str | None = None, timestamp: float | None = None) -> int:
        """Send a scalar/vector volume node (voxels and IJK-to-RAS geometry) as IMAGE."""
        voxels = slicer.util.arrayFromVolume(volume_node)
        matrix = vtk.vtkMatrix4x4()
        volume_node.GetIJKToRASMatrix(matrix)
        message = pyigtl.ImageMessage(np.ascontiguousarray(voxels), ijk_to_world_matrix=numpy_matrix(matrix),
                                      world_coordinate_system="ras", timestamp=timestamp,
                                      device_name=device_name or volume_node.GetName())
        return self._server.send(message)

    def send_node(self, node, **kwargs) -> int:
        if node.IsA("vtkMRMLVolumeNode"):
            return self.send_image(node, **kwargs)
        if node.IsA("vtkMRMLTransformNode"):
            return self.send_transform(node, **kwargs)
        raise ValueError(f"Node '{node.GetName()}' ({node.GetClassName()}) cannot be sent over OpenIGTLink.")

    def statistics(self) -> dict:
        return self._server.statistics()

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
