"""Import motion recordings (C3D, CSV, whitespace text) into :class:`Recording` objects and the MRML scene.

A :class:`Recording` holds uniformly sampled :class:`Signal` objects (float64 values, sample rate, unit,
start time) and, for motion capture, marker trajectories ``(frames, n, 3)`` in millimetres.

Scene representation (:func:`recording_to_scene`), chosen to stay small and to survive a ``.mrb`` round trip:

- one ``vtkMRMLTableNode`` per sample rate of the signals (normally one per recording): a ``time_s`` column
  followed by one double column per signal, the unit as the column unit label;
- markers as a ``vtkMRMLMarkupsFiducialNode`` with one control point per marker at its first visible
  position (lab coordinates of the C3D file, mm, not converted to RAS; a marker never seen has its
  position marked *missing*) plus a ``vtkMRMLTableNode`` of trajectories (``time_s``, ``<marker>_X/_Y/_Z``;
  occluded samples are NaN). A sequence of one markups node per frame was not used: hundreds of frames
  would mean hundreds of nodes and files in the bundle.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from MSDTLib.errors import MSDTError

TIME_NAMES = {"time", "time_s", "t", "times", "timestamp", "time_sec", "seconds"}
_FS_COMMENT = re.compile(r"\b(?:fs|sample_?rate|sampling_?rate|rate)\s*[=:]\s*([0-9]*\.?[0-9]+(?:[eE][+-]?\d+)?)",
                         re.IGNORECASE)
_NAME_UNIT = re.compile(r"^\s*(.*?)\s*[\(\[]\s*([^\)\]]*)\s*[\)\]]\s*$")
JITTER_TOLERANCE = 1e-3  # relative deviation of a time step from the median step that counts as jitter


@dataclass
class Signal:
    """A uniformly sampled signal: ``values[k]`` was taken at ``t0_s + k / fs_hz``."""

    name: str
    values: np.ndarray
    fs_hz: float
    unit: str = ""
    t0_s: float = 0.0

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=np.float64)
        self.fs_hz = float(self.fs_hz)
        if not self.fs_hz > 0:
            raise MSDTError(f"Signal '{self.name}' needs a positive sample rate (got {self.fs_hz}).")

    @property
    def times(self) -> np.ndarray:
        return self.t0_s + np.arange(len(self.values)) / self.fs_hz

    @property
    def duration_s(self) -> float:
        return len(self.values) / self.fs_hz


@dataclass
class Recording:
    """Signals (by name) and optional marker trajectories of one recording."""

    name: str = "Recording"
    signals: dict[str, Signal] = field(default_factory=dict)
    markers: np.ndarray | None = None  # (frames, n, 3), mm, NaN where occluded
    marker_names: list[str] = field(default_factory=list)
    marker_rate_hz: float | None = None
    marker_unit: str = "mm"
    metadata: dict = field(default_factory=dict)

    @property
    def marker_times(self) -> np.ndarray:
        if self.markers is None or not self.marker_rate_hz:
            return np.zeros(0)
        return float(self.metadata.get("marker_t0_s", 0.0)) + np.arange(len(self.markers)) / self.marker_rate_hz


# --------------------------------------------------------------------------------------------- readers

def read_recording(path: str | Path, **options) -> Recording:
    """Read ``path`` by its extension: ``.c3d``, ``.csv``, ``.txt``/``.tsv``/``.dat``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".c3d":
        return read_c3d(path)
    if suffix == ".csv":
        return read_csv(path, **options)
    if suffix in (".txt", ".tsv", ".dat"):
        return read_table_text(path, **options)
    raise MSDTError(f"Unknown recording file type '{suffix or path.name}' ({path}); "
                    "expected .c3d, .csv, .txt, .tsv or .dat.")


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise MSDTError(f"Recording file '{path}' does not exist.")
    if path.stat().st_size == 0:
        raise MSDTError(f"Recording file '{path}' is empty.")


def _parameter(group: dict, name: str, default=None):
    entry = group.get(name)
    if entry is None:
        return default
    return entry.get("value", default)


def read_c3d(path: str | Path) -> Recording:
    """Analog channels (names, rate, units; ezc3d applies scale and offset) and markers (mm) of a C3D file."""
    import ezc3d

    path = Path(path)
    _check_file(path)
    try:
        c3d = ezc3d.c3d(str(path))
    except Exception as error:  # ezc3d raises plain RuntimeError/IOError for malformed files
        raise MSDTError(f"'{path}' could not be read as a C3D file: {error}") from error
    parameters, header, data = c3d["parameters"], c3d["header"], c3d["data"]
    recording = Recording(name=path.stem, metadata={"source": str(path), "format": "c3d"})

    analog_group = parameters.get("ANALOG", {})
    analogs = np.asarray(data["analogs"], dtype=np.float64)  # (1, channels, samples)
    n_channels = analogs.shape[1] if analogs.ndim == 3 else 0
    if n_channels:
        rate = float(header["analogs"]["frame_rate"] or (_parameter(analog_group, "RATE", [0])[0]))
        labels = list(_parameter(analog_group, "LABELS", [])) + [f"analog{i + 1}" for i in range(n_channels)]
        units = list(_parameter(analog_group, "UNITS", []) or [])
        t0 = header["analogs"].get("first_frame", 0) / rate if rate else 0.0
        used = set()
        for index in range(n_channels):
            name = str(labels[index]).strip() or f"analog{index + 1}"
            unique, counter = name, 2
            while unique in used:
                unique, counter = f"{name}_{counter}", counter + 1
            used.add(unique)
            unit = str(units[index]).strip() if index < len(units) else ""
            recording.signals[unique] = Signal(unique, analogs[0, index], rate, unit, t0)

    point_group = parameters.get("POINT", {})
    points = np.asarray(data["points"], dtype=np.float64)  # (4, n, frames)
    if points.ndim == 3 and points.shape[1]:
        n_markers = points.shape[1]
        labels = list(_parameter(point_group, "LABELS", [])) + [f"marker{i + 1}" for i in range(n_markers)]
        recording.markers = np.transpose(points[:3], (2, 1, 0)).copy()
        recording.marker_names = [str(label).strip() for label in labels[:n_markers]]
        recording.marker_rate_hz = float(header["points"]["frame_rate"] or _parameter(point_group, "RATE", [0])[0])
        unit = _parameter(point_group, "UNITS", ["mm"])
        unit = str(unit[0]).strip() if len(unit) else "mm"
        if unit == "m":  # keep the documented unit: millimetres
            recording.markers *= 1000.0
            unit = "mm"
        recording.marker_unit = unit or "mm"
        first = header["points"].get("first_frame", 0)
        recording.metadata["marker_t0_s"] = first / recording.marker_rate_hz if recording.marker_rate_hz else 0.0
    manufacturer = parameters.get("MANUFACTURER", {})
    if "COMPANY" in manufacturer:
        recording.metadata["manufacturer"] = " ".join(map(str, _parameter(manufacturer, "COMPANY", [])))
    if not recording.signals and recording.markers is None:
        raise MSDTError(f"C3D file '{path}' holds neither analog channels nor markers.")
    return recording


def _split_name_unit(header: str) -> tuple[str, str]:
    match = _NAME_UNIT.match(header)
    if match and match.group(1):
        return match.group(1), match.group(2).strip()
    return header.strip(), ""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_delimited(path: Path, delimiter: str | None, fs: float | None, name: str | None) -> Recording:
    _check_file(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [line.rstrip("\r\n") for line in text.splitlines()]
    comment_fs = None
    body = []
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(("#", "%", "//")):
            match = _FS_COMMENT.search(stripped)
            if match and comment_fs is None:
                comment_fs = float(match.group(1))
            continue
        body.append(line)
    if not body:
        raise MSDTError(f"Recording file '{path}' holds no data rows.")

    if delimiter == "auto":
        first = body[0]
        delimiter = next((d for d in (",", "\t", ";") if d in first), None)

    def split(line: str) -> list[str]:
        return [cell.strip() for cell in (line.split(delimiter) if delimiter else line.split())]

    first_cells = split(body[0])
    if all(_is_number(cell) for cell in first_cells if cell):
        headers = [f"ch{i + 1}" for i in range(len(first_cells))]
        rows = body
    else:
        headers = [cell.strip().strip('"') for cell in first_cells]
        rows = body[1:]
    if not rows:
        raise MSDTError(f"Recording file '{path}' has a header but no data rows.")
    try:
        table = np.loadtxt(io.StringIO("\n".join(rows)), delimiter=delimiter, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise MSDTError(f"Recording file '{path}' has a row that is not numeric or has the wrong number of "
                        f"fields ({error}).") from error
    if table.shape[1] != len(headers):
        raise MSDTError(f"Recording file '{path}' has {len(headers)} column names but {table.shape[1]} values per row.")

    names_units = [_split_name_unit(h) for h in headers]
    time_index = next((i for i, (n, _) in enumerate(names_units) if n.lower().replace(" ", "_") in TIME_NAMES), None)
    metadata = {"source": str(path), "format": path.suffix.lower().lstrip(".")}
    t0 = 0.0
    if time_index is not None:
        time = table[:, time_index].copy()
        time_unit = names_units[time_index][1].lower()
        if time_unit == "ms":
            time /= 1000.0
        elif time_unit in ("us", "µs"):
            time /= 1e6
        steps = np.diff(time)
        if len(time) > 1 and np.any(steps <= 0):
            bad = int(np.argmax(steps <= 0)) + 1
            word = "goes backwards" if steps[bad - 1] < 0 else "repeats a value"
            raise MSDTError(f"The time column '{headers[time_index]}' of '{path}' {word} at data row {bad + 1} "
                            f"({time[bad - 1]:g} -> {time[bad]:g} s); time must increase.")
        values = np.delete(table, time_index, axis=1)
        names_units.pop(time_index)
        t0 = float(time[0])
        if len(time) > 1:
            median_step = float(np.median(steps))
            estimated = 1.0 / median_step
            metadata["fs_estimated_hz"] = estimated
            rate = fs or comment_fs or estimated
            jitter = float(np.max(np.abs(steps - median_step)) / median_step)
            metadata["time_jitter"] = jitter
            if jitter > JITTER_TOLERANCE or (fs or comment_fs):
                count = int(np.floor((time[-1] - t0) * rate + 1e-9)) + 1
                grid = t0 + np.arange(count) / rate
                values = np.column_stack([np.interp(grid, time, values[:, i]) for i in range(values.shape[1])]) \
                    if values.shape[1] else np.zeros((count, 0))
                metadata["resampled"] = True
                metadata["note"] = (f"time steps deviate up to {100 * jitter:.2g} % from the median step; "
                                    f"linearly resampled onto a uniform {rate:g} Hz grid ({count} samples)")
            else:
                metadata["resampled"] = False
        else:
            rate = fs or comment_fs
    else:
        values = table
        rate = fs or comment_fs
    if not rate:
        raise MSDTError(f"No sample rate for '{path}': pass fs=..., add a '# fs=<Hz>' comment line or a time "
                        "column named time, Time, time_s or t.")
    metadata["fs_source"] = "argument" if fs else "comment" if comment_fs else "time column"
    recording = Recording(name=name or path.stem, metadata=metadata)
    for index, (column_name, unit) in enumerate(names_units):
        column_name = column_name or f"ch{index + 1}"
        while column_name in recording.signals:
            column_name += "_"
        recording.signals[column_name] = Signal(column_name, values[:, index], rate, unit, t0)
    if not recording.signals:
        raise MSDTError(f"Recording file '{path}' has a time column but no signal columns.")
    return recording


def read_csv(path: str | Path, fs: float | None = None, name: str | None = None) -> Recording:
    """Signals of a delimited text file (comma, tab or semicolon; header row optional).

    The sample rate is ``fs``, else a comment line such as ``# fs=2000``, else estimated from a time column
    (time, Time, time_s, t; ``Time (s)`` style unit suffixes are understood) by the median step. Jittery
    time steps (or a given ``fs`` with a time column) are resampled onto a uniform grid by linear
    interpolation; ``recording.metadata['note']`` says so. Column headers ``Name (unit)`` give the unit.
    """
    return _read_delimited(Path(path), "auto", fs, name)


def read_table_text(path: str | Path, fs: float | None = None, name: str | None = None) -> Recording:
    """Like :func:`read_csv` for text with whitespace-separated columns."""
    return _read_delimited(Path(path), None, fs, name)


# --------------------------------------------------------------------------------------------- scene

def table_from_arrays(scene, name: str, columns: dict[str, np.ndarray], units: dict[str, str] | None = None):
    """A ``vtkMRMLTableNode`` of double columns (fast: whole numpy arrays, not cell by cell)."""
    import vtk
    from vtk.util import numpy_support

    units = units or {}
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = vtk.vtkTable()
    for column_name, values in columns.items():
        array = numpy_support.numpy_to_vtk(np.ascontiguousarray(values, dtype=np.float64), deep=1)
        array.SetName(column_name)
        table.AddColumn(array)
    node.SetAndObserveTable(table)
    for column_name in columns:
        if units.get(column_name):
            node.SetColumnUnitLabel(column_name, units[column_name])
    return node


def table_column(table_node, column_name: str) -> np.ndarray:
    """A table node column as a float64 numpy array (text columns are parsed)."""
    from vtk.util import numpy_support

    array = table_node.GetTable().GetColumnByName(column_name)
    if array is None:
        raise MSDTError(f"Table '{table_node.GetName()}' has no column '{column_name}'.")
    if array.IsA("vtkDataArray"):
        return numpy_support.vtk_to_numpy(array).astype(np.float64)
    return np.array([float(array.GetValue(i) or "nan") for i in range(array.GetNumberOfValues())])


def recording_to_scene(scene, recording: Recording, scale: str = "macro", study: str = "Motion",
                       patient: str = "Patient") -> dict:
    """Add ``recording`` to ``scene`` under patient / scale / study; return the nodes by role.

    Keys: ``signals`` (table of the signals at the first sample rate; further rates as
    ``signals@<rate>Hz``), ``markers`` (fiducials at the first visible position) and
    ``marker_trajectories`` (table) when the recording has markers.
    """
    from MSDTLib.hierarchy import TwinHierarchy

    hierarchy = TwinHierarchy(scene, patient)
    nodes: dict = {}
    groups: dict[float, list[Signal]] = {}
    for signal in recording.signals.values():
        groups.setdefault(signal.fs_hz, []).append(signal)
    for position, (rate, signals) in enumerate(groups.items()):
        length = min(len(s.values) for s in signals)
        t0 = signals[0].t0_s
        columns = {"time_s": t0 + np.arange(length) / rate}
        units = {"time_s": "s"}
        for signal in signals:
            columns[signal.name] = signal.values[:length]
            units[signal.name] = signal.unit
        key = "signals" if position == 0 else f"signals@{rate:g}Hz"
        table_name = recording.name if position == 0 else f"{recording.name} {rate:g} Hz"
        table = table_from_arrays(scene, table_name, columns, units)
        table.SetAttribute("MSDT.SampleRateHz", f"{rate:g}")
        table.SetAttribute("MSDT.Source", str(recording.metadata.get("source", "")))
        if recording.metadata.get("note"):
            table.SetAttribute("MSDT.Note", recording.metadata["note"])
        hierarchy.place(table, scale, study)
        nodes[key] = table

    if recording.markers is not None and len(recording.marker_names):
        markers = recording.markers
        fiducials = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{recording.name} markers")
        fiducials.SetAttribute("MSDT.CoordinateFrame", f"lab ({recording.marker_unit}, not RAS)")
        for index, marker_name in enumerate(recording.marker_names):
            track = markers[:, index, :]
            visible = np.flatnonzero(np.all(np.isfinite(track), axis=1))
            position = track[visible[0]] if len(visible) else np.zeros(3)
            point = fiducials.AddControlPoint(*[float(v) for v in position], marker_name)
            if not len(visible):
                fiducials.SetNthControlPointPositionMissing(point)
        fiducials.SetLocked(True)
        hierarchy.place(fiducials, scale, study)
        nodes["markers"] = fiducials

        columns = {"time_s": recording.marker_times}
        units = {"time_s": "s"}
        for index, marker_name in enumerate(recording.marker_names):
            for axis, letter in enumerate("XYZ"):
                columns[f"{marker_name}_{letter}"] = markers[:, index, axis]
                units[f"{marker_name}_{letter}"] = recording.marker_unit
        trajectories = table_from_arrays(scene, f"{recording.name} marker trajectories", columns, units)
        trajectories.SetAttribute("MSDT.SampleRateHz", f"{recording.marker_rate_hz:g}")
        hierarchy.place(trajectories, scale, study)
        nodes["marker_trajectories"] = trajectories
    return nodes
