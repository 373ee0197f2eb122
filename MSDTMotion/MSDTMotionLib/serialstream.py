"""Live sensor streams over a serial port (pyserial) into a ring buffer and an MRML table.

The sensor sends one text line per sample: ``counter,v1,v2,...`` (``fmt="csv"``) or the same separated by
whitespace (``fmt="space"``) or tabs (``fmt="tsv"``). The first field is a sample counter that wraps
around (modulus ``counter_modulus``; ``None`` picks 2**8, 2**16 or 2**32 from the largest counter seen).
Lines starting with ``#`` are comments (skipped, not counted).

:class:`SerialStreamReader` reads in a background thread; nothing it offers blocks the caller. Lines with
the wrong number of fields or non-numeric fields are counted as *corrupt* and skipped; a counter gap of
``k`` is counted as ``k - 1`` *dropped* samples (a repeated counter is counted as corrupt). When the port
goes away the reader reports ``"disconnected"`` and, with ``reconnect=True``, tries to open it again.
:class:`TablePump` copies new samples into a ``vtkMRMLTableNode`` from the main (GUI) thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from MSDTLib.errors import MSDTError

_SEPARATORS = {"csv": ",", "tsv": "\t", "space": None}


@dataclass
class StreamStatistics:
    status: str
    received: int
    dropped: int
    corrupt: int
    overrun: int
    rate_hz: float
    error: str = ""


class SerialStreamReader:
    """Background reader of ``counter,v1,v2,...`` lines into a fixed-capacity numpy ring buffer.

    ``port`` is a device path or a pyserial URL (``loop://``, ``socket://...``); ``channels`` is the number
    of values per line or a list of channel names (``None``: taken from the first valid line).
    """

    def __init__(self, port: str, baudrate: int = 115200, channels=None, fmt: str = "csv",
                 capacity: int = 100_000, counter_modulus: int | None = None, reconnect: bool = False,
                 reconnect_interval_s: float = 0.5, read_timeout_s: float = 0.05):
        if fmt not in _SEPARATORS:
            raise MSDTError(f"Unknown stream format '{fmt}'; expected one of {', '.join(_SEPARATORS)}.")
        if capacity < 1:
            raise MSDTError("The ring buffer capacity must be at least one sample.")
        self.port, self.baudrate, self.fmt = port, baudrate, fmt
        self.separator = _SEPARATORS[fmt]
        if isinstance(channels, int):
            self.channel_names = [f"ch{i + 1}" for i in range(channels)]
        elif channels is not None:
            self.channel_names = [str(name) for name in channels]
        else:
            self.channel_names = None
        self.capacity = int(capacity)
        self.counter_modulus = counter_modulus
        self._auto_modulus = counter_modulus is None
        self.reconnect = reconnect
        self.reconnect_interval_s = reconnect_interval_s
        self.read_timeout_s = read_timeout_s

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._serial = None
        self._status = "idle"
        self._error = ""
        self._values: np.ndarray | None = None  # (capacity, channels)
        self._index = np.zeros(self.capacity, dtype=np.int64)  # unwrapped sample index (counts dropped ones)
        self._times = np.zeros(self.capacity, dtype=np.float64)  # host receive time (s since start)
        self._written = 0  # samples ever written to the ring
        self._read = 0  # samples handed out by pop_available
        self._received = self._dropped = self._corrupt = self._overrun = 0
        self._last_counter: int | None = None
        self._next_index = 0
        self._start_time = time.monotonic()
        self._recent: list[tuple[float, int]] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> SerialStreamReader:
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._start_time = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"SerialStreamReader({self.port})", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._close_port()
        with self._lock:
            if self._status != "disconnected":
                self._status = "stopped"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ public, non-blocking
    @property
    def status(self) -> str:
        """idle, connecting, streaming, disconnected or stopped."""
        return self._status

    @property
    def channels(self) -> int | None:
        return len(self.channel_names) if self.channel_names is not None else None

    def statistics(self) -> StreamStatistics:
        with self._lock:
            return StreamStatistics(self._status, self._received, self._dropped, self._corrupt, self._overrun,
                                    self._rate_locked(), self._error)

    def pop_available(self) -> dict:
        """Samples that arrived since the last call: ``index`` (unwrapped counter), ``time_s`` (host
        receive time since :meth:`start`) and ``values`` ``(n, channels)``; empty arrays when none.
        Samples overwritten before they were popped are counted in ``statistics().overrun``."""
        with self._lock:
            start = max(self._read, self._written - self.capacity)
            data = self._slice_locked(start, self._written)
            self._read = self._written
        return data

    def latest(self, count: int | None = None) -> dict:
        """The last ``count`` samples still in the ring (all of them by default), popped or not."""
        with self._lock:
            start = max(0, self._written - self.capacity)
            if count is not None:
                start = max(start, self._written - int(count))
            return self._slice_locked(start, self._written)

    # ------------------------------------------------------------------ internals
    def _slice_locked(self, start: int, stop: int) -> dict:
        width = self.channels or 0
        if stop <= start or self._values is None:
            return {"index": np.zeros(0, np.int64), "time_s": np.zeros(0), "values": np.zeros((0, width))}
        slots = np.arange(start, stop) % self.capacity
        return {"index": self._index[slots].copy(), "time_s": self._times[slots].copy(),
                "values": self._values[slots].copy()}

    def _rate_locked(self) -> float:
        if len(self._recent) < 2:
            return 0.0
        (t_first, n_first), (t_last, n_last) = self._recent[0], self._recent[-1]
        return (n_last - n_first) / (t_last - t_first) if t_last > t_first else 0.0

    def _open_port(self):
        import serial

        return serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=self.read_timeout_s)

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except Exception:  # closing a vanished device may fail; nothing left to release
                pass

    def _run(self) -> None:
        import serial

        pending = b""
        while not self._stop.is_set():
            if self._serial is None:
                self._status = "connecting"
                try:
                    self._serial = self._open_port()
                    self._status, self._error = "streaming", ""
                    pending = b""
                except (serial.SerialException, OSError, ValueError) as error:
                    self._set_disconnected(error)
                    if not self.reconnect:
                        return
                    self._stop.wait(self.reconnect_interval_s)
                    continue
            try:
                chunk = self._serial.read(max(1, self._serial.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as error:
                # TypeError/AttributeError: pyserial internals after the fd vanished under it
                if pending.strip():
                    self._count_corrupt()  # a line cut off by the disconnect
                pending = b""
                self._close_port()
                self._set_disconnected(error)
                if not self.reconnect:
                    return
                self._stop.wait(self.reconnect_interval_s)
                continue
            if not chunk:
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._handle_line(line)

    def _set_disconnected(self, error) -> None:
        with self._lock:
            self._status = "disconnected"
            self._error = str(error)

    def _handle_line(self, raw: bytes) -> None:
        text = raw.decode("ascii", errors="replace").strip()
        if not text or text.startswith("#"):
            return
        fields = text.split(self.separator) if self.separator else text.split()
        try:
            counter_value = float(fields[0])
            values = [float(field) for field in fields[1:]]
            counter = int(counter_value)
            if counter != counter_value or counter < 0 or not np.all(np.isfinite(values)):
                raise ValueError(text)
        except (ValueError, IndexError):
            self._count_corrupt()
            return
        with self._lock:
            if self.channel_names is None:
                if not values:
                    self._corrupt += 1
                    return
                self.channel_names = [f"ch{i + 1}" for i in range(len(values))]
            if len(values) != len(self.channel_names):
                self._corrupt += 1
                return
            if self._values is None:
                self._values = np.zeros((self.capacity, len(self.channel_names)))
            if self._auto_modulus:
                needed = next(m for m in (2**8, 2**16, 2**32, 2**64) if counter < m)
                self.counter_modulus = max(self.counter_modulus or 0, needed)
            modulus = self.counter_modulus
            if counter >= modulus:
                self._corrupt += 1
                return
            if self._last_counter is None:
                step = 1
            else:
                step = (counter - self._last_counter) % modulus
                if step == 0:
                    self._corrupt += 1  # repeated sample
                    return
                self._dropped += step - 1
            self._last_counter = counter
            self._next_index += step if self._received else 0
            slot = self._written % self.capacity
            if self._written - self._read >= self.capacity:
                self._overrun += 1
            self._values[slot] = values
            self._index[slot] = self._next_index
            now = time.monotonic() - self._start_time
            self._times[slot] = now
            self._written += 1
            self._received += 1
            self._recent.append((now, self._received))
            while len(self._recent) > 2 and now - self._recent[0][0] > 1.0:
                self._recent.pop(0)

    def _count_corrupt(self) -> None:
        with self._lock:
            self._corrupt += 1


class TablePump:
    """Move new samples of ``reader`` into a ``vtkMRMLTableNode`` (the last ``max_rows`` are kept).

    Call :meth:`update` from the main thread (a Qt timer in Slicer): it does nothing when called sooner
    than ``min_interval_s`` after the last refresh, so the GUI is refreshed at most ~10 times a second.
    Columns: ``sample`` (unwrapped counter), ``time_s`` (host receive time) and one column per channel.
    """

    def __init__(self, scene, reader: SerialStreamReader, table_name: str = "Serial stream",
                 max_rows: int = 2000, min_interval_s: float = 0.1):
        self.scene, self.reader = scene, reader
        self.max_rows = int(max_rows)
        self.min_interval_s = min_interval_s
        self.table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", table_name)
        self._last_update = -np.inf
        self._index = np.zeros(0, np.int64)
        self._time = np.zeros(0)
        self._values: np.ndarray | None = None
        self.rows_added = 0

    def update(self, force: bool = False) -> int:
        """Append what arrived since the last call; return the number of new rows."""
        now = time.monotonic()
        if not force and now - self._last_update < self.min_interval_s:
            return 0
        self._last_update = now
        data = self.reader.pop_available()
        count = len(data["index"])
        if not count:
            return 0
        if self._values is None or self._values.shape[1] != data["values"].shape[1]:
            self._values = np.zeros((0, data["values"].shape[1]))
        self._index = np.concatenate([self._index, data["index"]])[-self.max_rows:]
        self._time = np.concatenate([self._time, data["time_s"]])[-self.max_rows:]
        self._values = np.concatenate([self._values, data["values"]])[-self.max_rows:]
        self._refresh()
        self.rows_added += count
        return count

    def _refresh(self) -> None:
        import vtk
        from vtk.util import numpy_support

        table = vtk.vtkTable()
        names = self.reader.channel_names or [f"ch{i + 1}" for i in range(self._values.shape[1])]
        columns = {"sample": self._index.astype(np.float64), "time_s": self._time}
        columns.update({name: self._values[:, i] for i, name in enumerate(names)})
        for name, values in columns.items():
            array = numpy_support.numpy_to_vtk(np.ascontiguousarray(values, dtype=np.float64), deep=1)
            array.SetName(name)
            table.AddColumn(array)
        self.table_node.SetAndObserveTable(table)
        self.table_node.SetColumnUnitLabel("time_s", "s")
        self.table_node.Modified()
