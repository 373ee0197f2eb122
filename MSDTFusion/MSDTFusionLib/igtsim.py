"""Replay a PLUS tracked-ultrasound recording (``.igs.mha``) as an OpenIGTLink server, as PLUS Server does.

``read_tracked_sequence`` reads the frames and every per-frame field PLUS stores (``Seq_Frame0000_<Name>Transform``,
``..._<Name>TransformStatus``, ``..._Timestamp``, ``..._ImageStatus``). :class:`IgtSimulator` streams it:

- one ``TRANSFORM`` message per stored transform and frame, named like PLUS names them (``ProbeToTracker``,
  ``ReferenceToTracker``, ``StylusToTracker``; ``ImageToProbe`` too when the file has it or one is given);
- one ``IMAGE`` message per frame, ``Image_Image`` by default (PLUS naming ``<Image>_<Frame>``: pixels in the
  Image frame, spacing and origin in the matrix); with ``image_frame="Reference"`` the image is sent as
  ``Image_Reference`` with ImageToReference embedded in its matrix, as a PLUS ``EmbeddedTransformToFrame`` does.

All messages of a frame carry the same timestamp (the wall-clock time the frame is sent, so receivers can measure
latency) and OpenIGTLink v3 metadata: ``FrameIndex``, ``RecordedTimestamp`` (the file's) and, for transforms,
``TransformStatus``; message IDs count per device from 1 so receivers can see gaps.

``msdt igt-sim FILE.igs.mha --port P [--fps F] [--loop] [--seconds S]`` runs :func:`run_simulator`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyigtl
import SimpleITK as sitk

from MSDTLib.errors import MSDTError

from .igt import DEFAULT_PORT, IgtlBroadcastServer

log = logging.getLogger("msdt.igtsim")

_FIELD = re.compile(r"^Seq_Frame(\d+)_(.+)$")


@dataclass
class TrackedSequence:
    """Frames and per-frame tracking of a PLUS sequence file."""

    frames: np.ndarray  # (n, rows, cols) as stored (uint8 for B-mode), or (n, rows, cols, components)
    spacing: tuple  # (sx, sy, sz) mm (or pixel) per voxel, from ElementSpacing
    origin: tuple  # (x, y, z)
    timestamps: np.ndarray  # (n,) seconds, PLUS tracker clock
    transforms: dict = field(default_factory=dict)  # name (without "Transform") -> (n, 4, 4)
    statuses: dict = field(default_factory=dict)  # transform name or "Image" -> list of n status strings
    orientation: str | None = None  # UltrasoundImageOrientation (MF, MFA, ...)
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        return float(self.timestamps[-1] - self.timestamps[0]) if len(self) > 1 else 0.0

    @property
    def recorded_fps(self) -> float | None:
        return (len(self) - 1) / self.duration if self.duration > 0 else None

    def image_to_frame(self, frame: str, image_to_probe=None) -> np.ndarray:
        """4x4 transform from the Image frame to ``frame`` for every frame index, shape (n, 4, 4)."""
        if frame == "Image":
            return np.repeat(np.eye(4)[np.newaxis], len(self), axis=0)
        image_to_probe = self._transform("ImageToProbe", image_to_probe)
        if frame == "Probe":
            return image_to_probe
        probe_to_tracker = self._transform("ProbeToTracker")
        if frame == "Tracker":
            return probe_to_tracker @ image_to_probe
        if frame == "Reference":
            return np.linalg.inv(self._transform("ReferenceToTracker")) @ probe_to_tracker @ image_to_probe
        raise MSDTError(f"Unknown coordinate frame '{frame}' (Image, Probe, Tracker or Reference).")

    def _transform(self, name: str, given=None) -> np.ndarray:
        if given is not None:
            given = np.asarray(given, dtype=float)
            return np.repeat(given[np.newaxis], len(self), axis=0) if given.ndim == 2 else given
        if name not in self.transforms:
            raise MSDTError(f"'{self.path}' has no {name}Transform; it is needed for this coordinate frame.")
        return self.transforms[name]


def _matrix(text: str) -> np.ndarray:
    values = [float(v) for v in text.split()]
    if len(values) != 16:
        raise ValueError(f"{len(values)} numbers instead of 16")
    return np.array(values).reshape(4, 4)


def read_tracked_sequence(path: str | Path) -> TrackedSequence:
    """Read a PLUS ``.igs.mha``/``.igs.nrrd`` (any file SimpleITK reads with ``Seq_Frame`` fields)."""
    path = Path(path)
    if not path.is_file():
        raise MSDTError(f"Tracked sequence '{path}' does not exist.")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise MSDTError(f"'{path}' is not an image file SimpleITK can read.") from None
    frames = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 2:
        frames = frames[np.newaxis]
    if image.GetNumberOfComponentsPerPixel() == 1 and frames.ndim != 3:
        raise MSDTError(f"'{path}' holds {frames.ndim}D data; a tracked sequence is a stack of 2D frames.")
    n = frames.shape[0]

    fields: dict[str, dict[int, str]] = {}
    for key in image.GetMetaDataKeys():
        match = _FIELD.match(key)
        if match:
            fields.setdefault(match.group(2), {})[int(match.group(1))] = image.GetMetaData(key).strip()
    if not fields:
        raise MSDTError(f"'{path}' has no Seq_FrameNNNN_ fields: it is not a PLUS tracked sequence.")

    stamps = fields.get("Timestamp", {})
    if len(stamps) == n:
        timestamps = np.array([float(stamps[k]) for k in range(n)])
    else:
        log.warning("%s: %d of %d frames have a timestamp; using 10 frames/s", path.name, len(stamps), n)
        timestamps = np.arange(n) * 0.1

    transforms, statuses = {}, {}
    for name, values in fields.items():
        if name.endswith("TransformStatus") or not name.endswith("Transform"):
            continue
        device = name[: -len("Transform")]
        matrices = np.repeat(np.eye(4)[np.newaxis], n, axis=0)
        status = ["MISSING"] * n
        given = fields.get(f"{name}Status", {})
        for index, text in values.items():
            if index >= n:
                continue
            try:
                matrices[index] = _matrix(text)
                status[index] = given.get(index, "OK")
            except ValueError as error:
                raise MSDTError(f"'{path}': frame {index} {name} is not a 4x4 matrix ({error}).") from None
        transforms[device] = matrices
        statuses[device] = status
    if "ImageStatus" in fields:
        statuses["Image"] = [fields["ImageStatus"].get(k, "OK") for k in range(n)]

    spacing = tuple(float(v) for v in image.GetSpacing()) + (1.0,) * (3 - image.GetDimension())
    origin = tuple(float(v) for v in image.GetOrigin()) + (0.0,) * (3 - image.GetDimension())
    orientation = image.GetMetaData("UltrasoundImageOrientation").strip() \
        if image.HasMetaDataKey("UltrasoundImageOrientation") else None
    return TrackedSequence(np.ascontiguousarray(frames), spacing, origin, timestamps, transforms, statuses,
                           orientation, path)


class IgtSimulator:
    """Stream a tracked sequence over OpenIGTLink like PLUS Server (see the module docstring).

    ``fps=None`` keeps the recorded timing; a number sends at that rate. ``loop=True`` replays forever (message
    IDs and timestamps keep increasing). ``wait_for_client=True`` holds playback until a client is connected, so
    that client sees every frame. Counters (:meth:`statistics`) are thread-safe.
    """

    def __init__(self, path, port: int = DEFAULT_PORT, fps: float | None = None, loop: bool = False, *,
                 host: str = "127.0.0.1", image_device: str | None = None, image_frame: str = "Image",
                 image_spacing=None, image_to_probe=None, transforms=None, wait_for_client: bool = False):
        self.sequence = path if isinstance(path, TrackedSequence) else read_tracked_sequence(path)
        if fps is not None and not fps > 0:
            raise MSDTError(f"--fps must be positive (got {fps}).")
        self.port, self.host = int(port), host
        self.fps, self.loop, self.wait_for_client = fps, loop, wait_for_client
        seq = self.sequence
        self.image_frame = image_frame
        self.image_device = image_device or f"Image_{image_frame}"
        spacing = list(seq.spacing)
        if image_spacing is not None:
            spacing[: len(image_spacing)] = [float(v) for v in image_spacing]
        self.image_spacing = tuple(spacing)
        pixel_to_image = np.diag([*self.image_spacing, 1.0])
        pixel_to_image[:3, 3] = seq.origin
        self._ijk_to_world = seq.image_to_frame(image_frame, image_to_probe) @ pixel_to_image

        self.transform_names = list(transforms) if transforms is not None else sorted(seq.transforms)
        self._transforms = {name: seq.transforms[name] for name in self.transform_names if name in seq.transforms}
        self._statuses = {name: seq.statuses.get(name, ["OK"] * len(seq)) for name in self._transforms}
        if image_to_probe is not None and "ImageToProbe" not in self._transforms:
            self._transforms["ImageToProbe"] = np.repeat(np.asarray(image_to_probe, float)[np.newaxis], len(seq), 0)
            self._statuses["ImageToProbe"] = ["OK"] * len(seq)
        self._offsets = self._schedule()

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: IgtlBroadcastServer | None = None
        self._frames_sent = 0
        self._messages_sent = 0
        self._loops = 0
        self._message_ids: dict[str, int] = {}
        self._started_at = None
        self._server_stats: dict = {}

    def _schedule(self) -> np.ndarray:
        """Send time of each frame relative to the first one, plus one period at the end (for looping)."""
        n = len(self.sequence)
        if self.fps:
            return np.arange(n + 1) / self.fps
        offsets = self.sequence.timestamps - self.sequence.timestamps[0]
        intervals = np.diff(offsets)
        step = float(np.median(intervals)) if len(intervals) else 0.1
        return np.append(offsets, offsets[-1] + (step if step > 0 else 0.1))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> IgtSimulator:
        self._server = IgtlBroadcastServer(self.port, self.host)
        self.port = self._server.port
        self._stop.clear()
        self.finished.clear()
        self._thread = threading.Thread(target=self._replay, name=f"igt-sim-{self.port}", daemon=True)
        self._thread.start()
        log.info("Replaying %s on %s:%d (%s)", self.sequence.path, self.host, self.port,
                 f"{self.fps:g} fps" if self.fps else "recorded timing")
        return self

    def stop(self) -> None:
        """Stop playback and close the server (connected clients see the connection drop)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._server is not None:
            self._server.stop()
            self._server_stats = self._server.statistics()
            self._server = None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until playback has finished (never, with ``loop=True``, unless stopped)."""
        return self.finished.wait(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def client_count(self) -> int:
        return self._server.client_count if self._server is not None else 0

    def statistics(self) -> dict:
        server = self._server.statistics() if self._server is not None else dict(self._server_stats)
        with self._lock:
            elapsed = time.monotonic() - self._started_at if self._started_at else 0.0
            return {"file": str(self.sequence.path), "port": self.port, "frames_in_file": len(self.sequence),
                    "frames_sent": self._frames_sent, "messages_sent": self._messages_sent,
                    "loops_completed": self._loops, "seconds": round(elapsed, 3),
                    "fps": round(self._frames_sent / elapsed, 3) if elapsed > 0 else None,
                    "devices": [*self._transforms, self.image_device],
                    "clients": server.get("clients", 0), "connections": server.get("connections", 0),
                    "bytes_sent": server.get("bytes_sent", 0), "dropped_for_slow_clients": server.get("dropped", 0)}

    # ------------------------------------------------------------------ playback
    def _replay(self):
        try:
            if self.wait_for_client:
                while not self._server.client_connected.wait(0.05):
                    if self._stop.is_set():
                        return
            n = len(self.sequence)
            period = float(self._offsets[-1])
            start, wall_start = time.monotonic(), time.time()
            with self._lock:
                self._started_at = start
            # Pack a little before a frame is due, stamped with the time it is due (as a device stamps the
            # acquisition), and send when due: latency then measures transport, not packing. Packing (CRC) holds
            # the GIL, so it is kept away from the moment the previous frame is on its way.
            lead = min(0.008, 0.5 * period / max(n, 1))
            cycle = 0
            while not self._stop.is_set():
                for index in range(n):
                    due = cycle * period + self._offsets[index]
                    delay = start + due - lead - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                    packed = self._pack_frame(index, wall_start + due)
                    delay = start + due - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                    for data in packed:
                        self._server.send(data)
                    with self._lock:
                        self._frames_sent += 1
                        self._messages_sent += len(packed)
                cycle += 1
                with self._lock:
                    self._loops = cycle
                if not self.loop:
                    break
        except Exception:  # a replay error must not vanish inside the thread
            log.exception("IGT simulator stopped")
        finally:
            self.finished.set()

    def _next_id(self, device: str) -> int:
        self._message_ids[device] = self._message_ids.get(device, 0) + 1
        return self._message_ids[device]

    def _stamp(self, message, index: int, **extra) -> None:
        message.header_version = 2  # OpenIGTLink v3 header: message ID and metadata
        message.message_id = self._next_id(message.device_name)
        message.metadata = {"FrameIndex": str(index),
                            "RecordedTimestamp": f"{self.sequence.timestamps[index]:.6f}", **extra}

    def _pack_frame(self, index: int, timestamp: float) -> list[bytes]:
        """The frame's TRANSFORM messages then its IMAGE, packed, all with ``timestamp``."""
        packed = []
        for name, matrices in self._transforms.items():
            message = pyigtl.TransformMessage(matrices[index], timestamp=timestamp, device_name=name)
            self._stamp(message, index, TransformStatus=self._statuses[name][index])
            packed.append(message.pack())
        pixels = self.sequence.frames[index][np.newaxis]
        image = pyigtl.ImageMessage(pixels, ijk_to_world_matrix=self._ijk_to_world[index],
                                    world_coordinate_system="ras", timestamp=timestamp, device_name=self.image_device)
        status = self.sequence.statuses.get("Image", ["OK"] * len(self.sequence))[index]
        self._stamp(image, index, ImageStatus=status)
        packed.append(image.pack())
        return packed


def run_simulator(path, port: int = DEFAULT_PORT, fps: float | None = None, loop: bool = False,
                  seconds: float | None = None, host: str = "127.0.0.1", wait_for_client: bool = False) -> dict:
    """Serve ``path`` until playback ends, ``seconds`` pass or Ctrl-C; returns the simulator statistics."""
    simulator = IgtSimulator(path, port, fps, loop, host=host, wait_for_client=wait_for_client)
    try:
        simulator.start()
    except OSError as error:
        raise MSDTError(str(error)) from None
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while not simulator.finished.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            simulator.wait(0.2 if remaining is None else min(0.2, remaining))
    except KeyboardInterrupt:
        log.info("Interrupted")
    finally:
        simulator.stop()
    return simulator.statistics()


# ---------------------------------------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``msdt igt-sim`` (for the CLI's ``add_commands``)."""
    parser.add_argument("file", type=Path, help="PLUS tracked sequence (.igs.mha)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--fps", type=float, help="frames per second (default: the recorded timing)")
    parser.add_argument("--loop", action="store_true", help="replay forever")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--wait-for-client", action="store_true", help="start playback when a client connects")
    return parser


def command(args: argparse.Namespace) -> dict:
    """``msdt igt-sim`` handler: returns the summary the CLI prints."""
    return run_simulator(args.file, args.port, args.fps, args.loop, args.seconds, args.host,
                         getattr(args, "wait_for_client", False))


def main(argv: list[str] | None = None) -> int:
    """``python -m`` entry point: the same as ``msdt igt-sim``."""
    from MSDTLib import cli

    return cli.main(["igt-sim", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
