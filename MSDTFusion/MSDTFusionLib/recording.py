"""Record live OpenIGTLink data into Slicer sequences and export it (``.mrb`` and ``.seq.nrrd``).

:class:`Recorder` listens to an :class:`~MSDTFusionLib.igt.IgtClient` (main thread, inside ``process_pending``) and
adds every applied message to a ``vtkMRMLSequenceNode`` per node (``<device>-Sequence``; the chain link
``TrackerToReference`` derived from ``ReferenceToTracker`` gets its own, so a replay moves the whole chain). The
index is ``time`` in ``s``: the message timestamp minus that of the first recorded message (the absolute start is
kept in the ``MSDT.RecordingStartTime`` attribute, the device in ``MSDT.IGTDevice``). :meth:`Recorder.stop` adds a ``vtkMRMLSequenceBrowserNode``
that synchronises the sequences, with the live nodes as its proxies (as Slicer's own IGT recording does).

``save_recording`` writes the scene as ``.mrb`` and each image sequence as ``.seq.nrrd`` (Slicer's
vtkMRMLVolumeSequenceStorageNode: a 4D NRRD whose ``axis 3 index values`` are the timestamps).
``record`` is the whole thing for ``msdt igt-record --host H --port P --seconds S --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import slicer

from MSDTLib import io
from MSDTLib.errors import MSDTError

from .igt import DEFAULT_PORT, IgtClient, IgtUpdate

log = logging.getLogger("msdt.recording")

SEQUENCE_SUFFIX = "-Sequence"
START_ATTRIBUTE = "MSDT.RecordingStartTime"
DEVICE_ATTRIBUTE = "MSDT.IGTDevice"


class Recorder:
    """Record what ``client`` applies into sequence nodes (one per node, index ``time`` in seconds)."""

    def __init__(self, scene, client: IgtClient, devices=None, name: str = "IGTRecording"):
        self.scene = scene
        self.client = client
        self.devices = None if devices is None else set(devices)
        self.name = name
        self.recording = False
        self.start_time: float | None = None
        self.browser = None
        self._sequences: dict[str, object] = {}  # node name -> sequence node
        self._sources: dict[str, object] = {}  # node name -> the recorded (live) node
        self._last_value: dict[str, float] = {}
        self._master_name: str | None = None

    # ------------------------------------------------------------------ control
    def start(self) -> Recorder:
        if not self.recording:
            self.client.add_listener(self._on_update)
            self.recording = True
        return self

    def stop(self):
        """Stop recording; returns the sequence browser node (None when nothing was recorded)."""
        if self.recording:
            self.client.remove_listener(self._on_update)
            self.recording = False
        if self._sequences:
            self._update_browser()
        return self.browser

    @property
    def sequences(self) -> dict:
        return dict(self._sequences)

    @property
    def frame_counts(self) -> dict[str, int]:
        return {name: seq.GetNumberOfDataNodes() for name, seq in self._sequences.items()}

    # ------------------------------------------------------------------ recording
    def _on_update(self, update: IgtUpdate) -> None:
        if self.devices is not None and update.device not in self.devices:
            return
        if self.start_time is None:
            self.start_time = update.timestamp
        elapsed = update.timestamp - self.start_time
        for node in update.nodes:
            name = node.GetName()
            sequence = self._sequences.get(name)
            if sequence is None:
                sequence = self._new_sequence(node)
            # Index values must be unique within a sequence: nudge a repeated timestamp by a microsecond.
            value = max(elapsed, self._last_value.get(name, -1e9) + 1e-6)
            self._last_value[name] = value
            sequence.SetDataNodeAtValue(node, f"{value:.6f}")

    def _new_sequence(self, node):
        name = node.GetName()
        sequence = self.scene.AddNewNodeByClass("vtkMRMLSequenceNode", f"{name}{SEQUENCE_SUFFIX}")
        sequence.SetIndexName("time")
        sequence.SetIndexUnit("s")
        sequence.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
        sequence.SetAttribute(START_ATTRIBUTE, f"{self.start_time:.6f}")
        sequence.SetAttribute(DEVICE_ATTRIBUTE, name)
        self._sequences[name] = sequence
        self._sources[name] = node
        if self._master_name is None or (node.IsA("vtkMRMLVolumeNode")
                                         and not self._sources[self._master_name].IsA("vtkMRMLVolumeNode")):
            self._master_name = name
        return sequence

    def _update_browser(self) -> None:
        """Create the browser (first stop) and synchronise every sequence recorded so far."""
        browser = self.browser
        if browser is None or not self.scene.IsNodePresent(browser):
            browser = self.browser = self.scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", self.name)
            browser.SetAttribute(START_ATTRIBUTE, f"{self.start_time:.6f}")
            browser.SetAndObserveMasterSequenceNodeID(self._sequences[self._master_name].GetID())
        new = [name for name, seq in self._sequences.items() if not browser.IsSynchronizedSequenceNodeID(seq.GetID(), True)]
        for name in new:
            browser.AddSynchronizedSequenceNodeID(self._sequences[name].GetID())
        # Show the last recorded state (what the live nodes hold now), then adopt the live nodes as proxies.
        master = browser.GetMasterSequenceNode()
        browser.SetSelectedItemNumber(master.GetNumberOfDataNodes() - 1)
        for name in self._sequences:
            node, sequence = self._sources[name], self._sequences[name]
            automatic = browser.GetProxyNode(sequence)  # made by the Sequences logic when the sequence was added
            if automatic is node or not self.scene.IsNodePresent(node):
                continue
            browser.AddProxyNode(node, sequence, False)
            if automatic is not None and self.scene.IsNodePresent(automatic):
                self.scene.RemoveNode(automatic)


def find_sequence(scene, device: str):
    """The recorded sequence of ``device`` (found by its ``MSDT.IGTDevice`` attribute, which survives a
    save/load; Slicer renames transform sequences read from ``.seq.mha``), or None."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode")):
        sequence = scene.GetNthNodeByClass(index, "vtkMRMLSequenceNode")
        if sequence.GetAttribute(DEVICE_ATTRIBUTE) == device:
            return sequence
    return None


def sequence_timestamps(sequence) -> list[float]:
    """Index values of a sequence node as numbers."""
    return [float(sequence.GetNthIndexValue(i)) for i in range(sequence.GetNumberOfDataNodes())]


def _is_volume_sequence(sequence) -> bool:
    return sequence.GetNumberOfDataNodes() > 0 and sequence.GetNthDataNode(0).IsA("vtkMRMLVolumeNode")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def save_recording(scene, out_dir: str | Path, name: str = "recording") -> dict:
    """Write ``<name>.mrb`` (the whole scene) and ``<sequence>.seq.nrrd`` per image sequence into ``out_dir``.

    Returns ``{"mrb": path, "seq_nrrd": [paths]}``. Inside the bundle, image sequences are ``.seq.nrrd`` and
    transform sequences Slicer's compact ``.seq.mha`` (PLUS layout, about 100 bytes a frame; reading it back,
    Slicer rounds the index to milliseconds, keeps 6 significant digits and renames the sequence
    ``<name>-<name>-Seq``: use :func:`find_sequence`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sequences = [scene.GetNthNodeByClass(i, "vtkMRMLSequenceNode")
                 for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode"))]
    if not any(seq.GetNumberOfDataNodes() for seq in sequences):
        raise MSDTError("Nothing was recorded: the scene has no sequence with data.")
    nrrd_paths = []
    for sequence in sequences:
        if not _is_volume_sequence(sequence):
            continue
        writer = slicer.vtkMRMLVolumeSequenceStorageNode()
        writer.SetScene(scene)
        path = out_dir / f"{_safe(sequence.GetName())}.seq.nrrd"
        writer.SetFileName(str(path))
        if not writer.WriteData(sequence) or not path.is_file():
            raise MSDTError(f"The image sequence '{sequence.GetName()}' could not be written to '{path}'.")
        nrrd_paths.append(path)
    mrb = io.save_mrb(scene, out_dir / f"{name}.mrb")
    return {"mrb": mrb, "seq_nrrd": nrrd_paths}


def record(host: str = "127.0.0.1", port: int = DEFAULT_PORT, seconds: float = 10.0, out_dir: str | Path = ".",
           reference_to_mri=None, poll_interval: float = 0.005) -> dict:
    """Connect, record ``seconds`` of everything the server sends, export, and return a summary.

    The summary has frame counts per device, fps, dropped messages, latency median/p95 (ms), reconnects and
    errors, and the written files; it is also written to ``out_dir/summary.json``. Raises MSDTError when no
    message arrived at all.
    """
    from MSDTLib.app import new_scene, shutdown_scene

    if not seconds > 0:
        raise MSDTError(f"--seconds must be positive (got {seconds}).")
    scene = new_scene()
    try:
        if reference_to_mri is not None:
            node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "ReferenceToMRI")
            node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(reference_to_mri))
            reference_to_mri = node
        client = IgtClient(scene, host, port, reference_to_mri=reference_to_mri)
        recorder = Recorder(scene, client).start()
        client.start()
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                client.process_pending()
                time.sleep(poll_interval)
        except KeyboardInterrupt:
            log.info("Interrupted; saving what was recorded")
        client.stop()
        client.process_pending()  # what arrived before the stop
        recorder.stop()
        stats = client.statistics()
        if not stats["received"]:
            raise MSDTError(f"Nothing arrived from {host}:{port} in {seconds:g} s ({stats['status']}"
                            f"{'; ' + stats['last_error'] if stats['last_error'] else ''}).")
        files = save_recording(scene, out_dir)
        counts = recorder.frame_counts
        devices = {}
        for device, info in stats["devices"].items():
            devices[device] = {"type": info["type"], "frames": counts.get(device, 0), "received": info["received"],
                               "dropped": info["dropped"], "fps": info["fps"],
                               "latency_median_ms": info["latency_median_ms"],
                               "latency_p95_ms": info["latency_p95_ms"]}
        summary = {"host": host, "port": port, "seconds": seconds, "status": stats["status"],
                   "frames": sum(d["frames"] for d in devices.values()),
                   "image_frames": sum(d["frames"] for d in devices.values() if d["type"] == "IMAGE"),
                   "fps": stats["image_fps"], "dropped": stats["dropped"],
                   "latency_median_ms": stats["latency_median_ms"], "latency_p95_ms": stats["latency_p95_ms"],
                   "reconnects": stats["reconnects"], "errors": stats["errors"], "devices": devices,
                   "files": {"mrb": files["mrb"].name, "seq_nrrd": [p.name for p in files["seq_nrrd"]],
                             "summary": "summary.json"}}
        (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        shutdown_scene(scene)


# ---------------------------------------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``msdt igt-record`` (for the CLI's ``add_commands``)."""
    parser.add_argument("--host", default="127.0.0.1", help="OpenIGTLink server (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to record (default 10)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (recording.mrb, *.seq.nrrd)")
    return parser


def command(args: argparse.Namespace) -> dict:
    """``msdt igt-record`` handler: returns the summary the CLI prints."""
    return record(args.host, args.port, args.seconds, args.out)


def main(argv: list[str] | None = None) -> int:
    """``python -m`` entry point: the same as ``msdt igt-record``."""
    from MSDTLib import cli

    return cli.main(["igt-record", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
