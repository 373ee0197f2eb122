"""MSDT Motion: sEMG fatigue, IMU orientation and trunk angles, C3D/CSV recordings and live serial sensors for the
MSDT extension (musculoskeletal digital twin of the spine and trunk).

This file is the 3D Slicer front end only. The algorithms live in ``MSDTMotionLib`` (imported lazily, inside the
methods that need it), which also runs without the Slicer GUI.
"""

import importlib
import logging
import sys
import traceback
from typing import Annotated

import qt
import slicer
from MSDTWidgetTools import MSDTWidgetMixin
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Default, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Default serial speed of the sensor boards.
DEFAULT_BAUD_RATE = 115200

#: How often the widget copies received serial samples into the scene (ms), and every how many of those ticks it
#: refreshes the status line.
SERIAL_TIMER_INTERVAL_MS = 50
SERIAL_STATUS_EVERY_TICKS = 10

#: Name and length (rows kept) of the table the live serial stream is written to.
SERIAL_TABLE_NAME = "Serial stream"
SERIAL_MAX_ROWS = 2000

#: Twin hierarchy placement of loaded recordings.
RECORDING_SCALE = "macro"
RECORDING_STUDY = "Motion"

#: Python modules MSDTMotionLib imports that a Slicer installation may lack -> pip requirement that provides them.
_PIP_NAMES = {
    "ezc3d": "ezc3d",
    "h5py": "h5py",
    "scipy": "scipy",
    "serial": "pyserial",
    "vqf": "vqf",
}


#
# MSDTMotion
#


class MSDTMotion(ScriptedLoadableModule):
    """Module description shown in the Slicer module panel (uses ScriptedLoadableModule base class)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MSDT Motion")
        self.parent.categories = ["MSDT"]
        self.parent.dependencies = ["MSDT"]  # MSDTMotionLib uses MSDTLib (errors, hierarchy)
        self.parent.contributors = ["MSDT contributors"]
        self.parent.helpText = _(
            "Brings movement and muscle activity into the twin. Recordings (C3D markers and analog channels, "
            "CSV/TXT tables) are loaded as tables and fiducials under the patient's macro scale. sEMG: per "
            "channel the median frequency over time and its fatigue slope (Hz/s and %/min) with a trend chart. "
            "IMU: VQF orientation, the error against an optical reference when the file has one, and the trunk "
            "angles (flexion, lateral bending, axial rotation) with their range of motion. Live serial stream: "
            "'counter,v1,v2,...' lines from a sensor board go into a table, with received, dropped and corrupt "
            'counts. See <a href="https://github.com/msdt-project/SlicerMSDT">the project page</a> for details.'
        )
        self.parent.acknowledgementText = _(
            "Developed by the MSDT contributors. C3D through ezc3d, IMU orientation through VQF, serial ports "
            "through pyserial; test data from pyomeca and the BROAD IMU data set."
        )


#
# MSDTMotionParameterNode
#


@parameterNodeWrapper
class MSDTMotionParameterNode:
    """Typed state of the module, kept in the scene.

    The ``SlicerParameterName`` properties in ``Resources/UI/MSDTMotion.ui`` bind the widgets to these fields. The
    file paths are read from their line edits directly.
    """

    sampleRate: Annotated[float, WithinRange(0.0, 1000000.0), Default(0.0)]
    channels: str
    windowS: Annotated[float, WithinRange(0.05, 600.0), Default(1.0)]
    serialPort: str
    baudRate: Annotated[int, WithinRange(300, 10000000), Default(DEFAULT_BAUD_RATE)]
    # Outputs
    recordingInfo: str
    emgSummary: str
    imuSummary: str


#
# MSDTMotionWidget
#


class MSDTMotionWidget(MSDTWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI of the module (uses ScriptedLoadableModuleWidget base class)."""

    moduleTitle = "MSDT Motion"

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._busy = False
        self._timer = None
        self._ticks = 0
        self._recording = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MSDTMotion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MSDTMotionLogic()

        # Samples received by the serial reader thread are copied into the scene on the main thread, by this timer.
        self._timer = qt.QTimer()
        self._timer.setInterval(SERIAL_TIMER_INTERVAL_MS)
        self._timer.connect("timeout()", self._onTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.recordingPathLineEdit.connect("currentPathChanged(QString)", self._updateGUIState)
        self.ui.imuPathLineEdit.connect("currentPathChanged(QString)", self._updateGUIState)
        self.ui.loadRecordingButton.connect("clicked(bool)", self.onLoadRecordingButton)
        self.ui.analyseEmgButton.connect("clicked(bool)", self.onAnalyseEmgButton)
        self.ui.analyseImuButton.connect("clicked(bool)", self.onAnalyseImuButton)
        self.ui.connectSerialButton.connect("toggled(bool)", self.onConnectSerialToggled)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed: stop the timer and the reader."""
        if self._timer is not None:
            self._timer.stop()
        if self.logic is not None:
            try:
                self.logic.disconnectSerial()
            except Exception:  # closing must go on whatever the port does
                logging.error(traceback.format_exc())
        self.removeObservers()

    def onSceneStartClose(self, caller, event) -> None:
        if self.logic is not None:
            self._timer.stop()
            self.logic.disconnectSerial()
            self._showSerialState()
        self._recording = None
        self.setParameterNode(None)

    def onReload(self) -> None:
        """Developer "Reload": stop the reader and drop the cached MSDTMotionLib modules so that edits take effect."""
        self.cleanup()
        for name in list(sys.modules):
            if name == "MSDTMotionLib" or name.startswith("MSDTMotionLib."):
                del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    @staticmethod
    def _path(lineEdit) -> str:
        return str(lineEdit.currentPath or "").strip()

    def _updateGUIState(self, caller=None, event=None) -> None:
        parameterNode = self._parameterNode
        haveRecordingPath = bool(self._path(self.ui.recordingPathLineEdit))
        self.ui.loadRecordingButton.enabled = haveRecordingPath and not self._busy
        self.ui.loadRecordingButton.toolTip = (
            _("Load the recording into the scene")
            if haveRecordingPath
            else _("Choose a recording file first")
        )
        haveRecording = self._recording is not None
        self.ui.analyseEmgButton.enabled = haveRecording and not self._busy
        self.ui.analyseEmgButton.toolTip = (
            _("Median frequency over time and fatigue slope of each channel")
            if haveRecording
            else _("Load a recording first")
        )
        haveImuPath = bool(self._path(self.ui.imuPathLineEdit))
        self.ui.analyseImuButton.enabled = haveImuPath and not self._busy
        self.ui.analyseImuButton.toolTip = (
            _("IMU orientation, error against the reference and trunk angles")
            if haveImuPath
            else _("Choose an IMU file first")
        )
        connected = self.logic is not None and self.logic.isSerialConnected()
        self.ui.serialPortLineEdit.enabled = not connected
        self.ui.baudRateSpinBox.enabled = not connected
        if parameterNode is not None:
            self.ui.recordingInfoLabel.text = parameterNode.recordingInfo or ""
            self.ui.emgResultLabel.text = parameterNode.emgSummary or ""
            self.ui.imuResultLabel.text = parameterNode.imuSummary or ""

    # ------------------------------------------------------------------ recordings and sEMG

    def onLoadRecordingButton(self) -> None:
        if not self._offerMissingPackage():
            return
        parameterNode = self._parameterNode
        fs = parameterNode.sampleRate if parameterNode.sampleRate > 0 else None
        loaded, ok = self._run(
            _("MSDT Motion: cannot load the recording"),
            self.logic.loadRecording,
            self._path(self.ui.recordingPathLineEdit),
            fs,
        )
        if not ok:
            return
        self._recording, nodes = loaded
        parameterNode.recordingInfo = MSDTMotionLogic.recordingText(self._recording, nodes)
        parameterNode.emgSummary = ""
        self._updateGUIState()

    def onAnalyseEmgButton(self) -> None:
        if not self._offerMissingPackage():
            return
        parameterNode = self._parameterNode
        analysed, ok = self._run(
            _("MSDT Motion: cannot analyse the sEMG"),
            self.logic.analyseEmg,
            self._recording,
            MSDTMotionLogic.channelList(parameterNode.channels),
            parameterNode.windowS,
        )
        if not ok:
            return
        summary, charts = analysed
        parameterNode.emgSummary = MSDTMotionLogic.emgText(summary)
        if charts:
            MSDTMotionLogic.showChart(charts[0])

    def onAnalyseImuButton(self) -> None:
        if not self._offerMissingPackage():
            return
        parameterNode = self._parameterNode
        fs = parameterNode.sampleRate if parameterNode.sampleRate > 0 else None
        analysed, ok = self._run(
            _("MSDT Motion: cannot analyse the IMU recording"),
            self.logic.analyseImu,
            self._path(self.ui.imuPathLineEdit),
            fs,
        )
        if not ok:
            return
        summary, chart = analysed
        parameterNode.imuSummary = MSDTMotionLogic.imuText(summary)
        MSDTMotionLogic.showChart(chart)

    # ------------------------------------------------------------------ live serial stream

    def onConnectSerialToggled(self, checked: bool) -> None:
        if checked == self.logic.isSerialConnected():
            return
        if checked and not self._offerMissingPackage():
            self._showSerialState()
            return
        if checked:
            parameterNode = self._parameterNode
            _pump, ok = self._run(
                _("MSDT Motion: cannot open the serial port"),
                self.logic.connectSerial,
                parameterNode.serialPort,
                parameterNode.baudRate,
            )
            if ok:
                self._ticks = 0
                self._timer.start()
        else:
            self._timer.stop()
            self._run(_("MSDT Motion: disconnect failed"), self.logic.disconnectSerial)
        self._showSerialState()

    def _showSerialState(self) -> None:
        connected = self.logic.isSerialConnected()
        wasBlocked = self.ui.connectSerialButton.blockSignals(True)
        self.ui.connectSerialButton.checked = connected
        self.ui.connectSerialButton.text = _("Disconnect") if connected else _("Connect")
        self.ui.connectSerialButton.blockSignals(wasBlocked)
        self.ui.serialStatusLabel.text = MSDTMotionLogic.serialText(self.logic.serialStatistics())
        self._updateGUIState()

    def _onTimer(self) -> None:
        try:
            self.logic.pumpSerial()
        except Exception:  # never let an exception stop the timer loop silently
            logging.error(traceback.format_exc())
        self._ticks += 1
        if self._ticks % SERIAL_STATUS_EVERY_TICKS == 0:
            self.ui.serialStatusLabel.text = MSDTMotionLogic.serialText(self.logic.serialStatistics())


#
# MSDTMotionLogic
#


class MSDTMotionLogic(ScriptedLoadableModuleLogic):
    """Thin adapter between the module GUI (or a Python script in Slicer) and ``MSDTMotionLib``.

    No GUI calls here (but :meth:`showChart`), so the logic can be used from the Python console and the self-test.
    The serial reader receives on a background thread; :meth:`pumpSerial` must be called from the main thread (the
    widget does it with a timer) to copy what arrived into the table.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.reader = None
        self.pump = None
        self._lastStatistics = None

    def getParameterNode(self):
        return MSDTMotionParameterNode(super().getParameterNode())

    @staticmethod
    def missingPythonPackage():
        """The pip name of a third-party package MSDTMotionLib cannot import, or None when everything imports."""
        try:
            for name in ("importers", "emg", "imu", "motionworkflow", "plots", "serialstream"):
                importlib.import_module(f"MSDTMotionLib.{name}")
            for name in ("ezc3d", "h5py", "vqf", "serial"):
                importlib.import_module(name)
        except ModuleNotFoundError as error:
            topLevel = (error.name or "").split(".")[0]
            if topLevel in _PIP_NAMES:
                return _PIP_NAMES[topLevel]
            raise
        return None

    @staticmethod
    def channelList(text):
        """Channel names from a comma separated list; None (all channels) when empty."""
        names = [name.strip() for name in str(text or "").split(",") if name.strip()]
        return names or None

    @staticmethod
    def showChart(chart) -> None:
        """Show ``chart`` in the plot view of the layout (Slicer application only)."""
        if chart is None or not hasattr(slicer, "app") or slicer.app is None:
            return
        slicer.modules.plots.logic().ShowChartInLayout(chart)

    # ------------------------------------------------------------------ recordings

    def loadRecording(self, path, fs=None, scene=None):
        """Read a C3D/CSV/TXT recording (``fs`` Hz for tables without a time column; None: from the file) and add
        it to ``scene``; returns ``(recording, nodes)`` (``nodes`` from ``importers.recording_to_scene``)."""
        from MSDTLib.errors import MSDTError
        from MSDTMotionLib import importers

        if path is None or not str(path).strip():
            raise MSDTError(_("Choose a recording file (.c3d, .csv, .txt, .tsv or .dat)."))
        options = {"fs": float(fs)} if fs else {}
        recording = importers.read_recording(str(path).strip(), **options)
        scene = scene or slicer.mrmlScene
        nodes = importers.recording_to_scene(scene, recording, RECORDING_SCALE, RECORDING_STUDY)
        return recording, nodes

    @staticmethod
    def recordingText(recording, nodes=None) -> str:
        """One or two lines on a loaded recording: signals, sample rates, duration, markers."""
        signals = recording.signals
        rates = sorted({signal.fs_hz for signal in signals.values()})
        duration = max((signal.duration_s for signal in signals.values()), default=0.0)
        lines = [
            _("{name}: {count} signal(s) at {rates} Hz, {duration:.1f} s").format(
                name=recording.name,
                count=len(signals),
                rates=", ".join(f"{rate:g}" for rate in rates) or "-",
                duration=duration,
            )
        ]
        if recording.markers is not None and len(recording.marker_names):
            lines.append(
                _("{count} marker(s), {frames} frames at {rate:g} Hz").format(
                    count=len(recording.marker_names),
                    frames=len(recording.markers),
                    rate=float(recording.marker_rate_hz or 0.0),
                )
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ sEMG

    def analyseEmg(self, recording, channels=None, windowS=1.0, scene=None):
        """sEMG features of ``recording`` (``channels``: names, a comma separated string, or None for all);
        returns ``(summary, charts)``: the ``emg.analyse_recording`` dict and one MDF trend chart per channel
        that has at least two windows with a median frequency."""
        from MSDTLib.errors import MSDTError
        from MSDTMotionLib import emg, motionworkflow, plots

        if recording is None:
            raise MSDTError(_("Load a recording first."))
        if isinstance(channels, str):
            channels = self.channelList(channels)
        signals = motionworkflow.emg_signals(recording)
        if not signals:
            raise MSDTError(_("The recording '{name}' has no signal.").format(name=recording.name))
        summary = emg.analyse_recording(signals, channels, float(windowS))
        scene = scene or slicer.mrmlScene
        charts = []
        for name, result in summary["channels"].items():
            valid = [w for w in (result.get("windows") or []) if w.get("mdf_hz") is not None]
            if result.get("error") or len(valid) < 2:
                continue
            times = [w["t_s"] for w in valid]
            mdf = [w["mdf_hz"] for w in valid]
            # The trend is the least-squares line through the window MDFs: the fatigue slope of the summary.
            charts.append(
                plots.plot_trend(
                    scene, times, mdf, title=f"{name}: median frequency", y_title="MDF", units="Hz"
                )
            )
        return summary, charts

    @staticmethod
    def emgText(summary) -> str:
        """One line per channel: MDF, fatigue slope in Hz/s and %/min (or the reason it could not be analysed)."""
        if not summary or not summary.get("channels"):
            return _("No channel analysed.")
        lines = []
        for name, result in summary["channels"].items():
            if result.get("error"):
                lines.append(_("{name}: {error}").format(name=name, error=result["error"]))
                continue
            mdf, slope, percent = (
                result.get("mdf_hz"),
                result.get("mdf_slope_hz_per_s"),
                result.get("mdf_slope_pct_per_min"),
            )
            lines.append(
                _("{name}: MDF {mdf}, slope {slope}, {percent}").format(
                    name=name,
                    mdf=f"{mdf:.1f} Hz" if mdf is not None else _("n/a"),
                    slope=f"{slope:+.3f} Hz/s" if slope is not None else _("n/a"),
                    percent=f"{percent:+.1f} %/min" if percent is not None else _("n/a %/min"),
                )
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ IMU

    def analyseImu(self, path, fs=None, scene=None):
        """Orientation (VQF), error against the file's reference when it has one, and trunk angles of an IMU
        recording (BROAD HDF5, or a CSV/TXT table); returns ``(summary, chart)``: the ``imu.analyse_imu`` dict
        with ``trunk_angles`` added, and the chart of the trunk angles (their table in the scene)."""
        from MSDTLib.errors import MSDTError
        from MSDTLib.hierarchy import TwinHierarchy
        from MSDTMotionLib import importers, imu, motionworkflow, plots

        if path is None or not str(path).strip():
            raise MSDTError(_("Choose an IMU recording (.hdf5, .csv or .txt)."))
        recording = motionworkflow.read_imu(str(path).strip(), fs)
        reference = True if recording.ref_quat is not None else None
        summary = imu.analyse_imu(recording, reference)
        quaternions = imu.orientation_vqf(recording.gyr, recording.acc, recording.mag, recording.fs)
        angles = imu.trunk_angles(quaternions, recording.fs, recording.acc)
        summary["trunk_angles"] = {
            "range_of_motion": angles["range_of_motion"],
            "peak_angular_velocity_deg_s": angles["peak_angular_velocity_deg_s"],
        }
        scene = scene or slicer.mrmlScene
        names = list(imu.TRUNK_ANGLES)
        table = importers.table_from_arrays(
            scene,
            f"Trunk angles {recording.name}",
            {"time_s": angles["time_s"], **{name: angles[name] for name in names}},
            {"time_s": "s", **{name: "deg" for name in names}},
        )
        TwinHierarchy(scene).place(table, RECORDING_SCALE, f"IMU {recording.name}")
        chart = plots.plot_signals(
            scene, table, "time_s", names, title="Trunk angles", y_title="angle", units="deg"
        )
        return summary, chart

    @staticmethod
    def imuText(summary) -> str:
        """The error against the reference (VQF, when there is one) and the trunk range of motion."""
        if not summary:
            return _("No IMU recording analysed.")
        lines = [
            _("{name}: {duration:.1f} s at {fs:g} Hz, {mode}").format(
                name=summary.get("name") or _("IMU"),
                duration=float(summary.get("duration_s") or 0.0),
                fs=float(summary.get("fs_hz") or 0.0),
                mode=summary.get("mode", ""),
            )
        ]
        rmse = summary.get("rmse_deg")
        if rmse:
            vqf = rmse.get("vqf", rmse)
            lines.append(
                _("RMSE vs reference: total {total:.2f} deg, inclination {inclination:.2f} deg").format(
                    total=float(vqf["total"]), inclination=float(vqf["inclination"])
                )
            )
        else:
            lines.append(_("No reference orientation: no RMSE."))
        rom = (summary.get("trunk_angles") or {}).get("range_of_motion") or {}
        if rom:
            parts = []
            for key, label in (
                ("flexion", _("flexion")),
                ("lateral_bending", _("lateral bending")),
                ("axial_rotation", _("axial rotation")),
            ):
                value = (rom.get(key) or {}).get("range")
                parts.append(
                    f"{label} {float(value):.1f} deg"
                    if value is not None and value == value
                    else f"{label} n/a"
                )
            lines.append(_("Trunk range of motion: ") + ", ".join(parts))
        return "\n".join(lines)

    # ------------------------------------------------------------------ live serial stream

    def connectSerial(self, port, baud=DEFAULT_BAUD_RATE, scene=None, **readerOptions):
        """Start reading ``counter,v1,v2,...`` lines from ``port`` into a table (``SERIAL_TABLE_NAME``); returns
        the ``TablePump``. A running stream is stopped first."""
        from MSDTLib.errors import MSDTError
        from MSDTMotionLib import serialstream

        port = str(port or "").strip()
        if not port:
            raise MSDTError(_("Enter the serial port (e.g. /dev/ttyUSB0 or COM3)."))
        try:
            baud = int(baud)
        except (TypeError, ValueError):
            raise MSDTError(
                _("The baud rate must be a whole number (got {baud}).").format(baud=baud)
            ) from None
        if baud <= 0:
            raise MSDTError(_("The baud rate must be positive (got {baud}).").format(baud=baud))
        self.disconnectSerial()
        reader = serialstream.SerialStreamReader(port, baud, **readerOptions)
        self.pump = serialstream.TablePump(
            scene or slicer.mrmlScene, reader, SERIAL_TABLE_NAME, SERIAL_MAX_ROWS
        )
        self.reader = reader.start()
        return self.pump

    def disconnectSerial(self) -> None:
        """Stop the reader (copying what it still holds into the table); harmless when none runs."""
        reader, self.reader = self.reader, None
        if reader is None:
            return
        reader.stop()
        if self.pump is not None:
            self.pump.update(force=True)
        self._lastStatistics = reader.statistics()

    def isSerialConnected(self) -> bool:
        return self.reader is not None

    def pumpSerial(self) -> int:
        """Copy the samples received since the last call into the table (main thread); returns the new rows."""
        if self.reader is None or self.pump is None:
            return 0
        return self.pump.update()

    def serialStatistics(self):
        """``StreamStatistics`` of the running reader, or of the last one after a disconnect, or None."""
        return self.reader.statistics() if self.reader is not None else self._lastStatistics

    @staticmethod
    def serialText(statistics) -> str:
        """Two lines from ``StreamStatistics`` (or its dict): the state, then received, dropped, corrupt, rate."""
        if statistics is None:
            return _("Not connected.")
        get = (
            statistics.get
            if isinstance(statistics, dict)
            else lambda key, default=None: getattr(statistics, key, default)
        )
        status = str(get("status") or _("unknown state"))
        numbers = _("{received} received, {dropped} dropped, {corrupt} corrupt, {rate:.1f} Hz").format(
            received=int(get("received") or 0),
            dropped=int(get("dropped") or 0),
            corrupt=int(get("corrupt") or 0),
            rate=float(get("rate_hz") or 0.0),
        )
        overrun = int(get("overrun") or 0)
        if overrun:
            numbers += _(", {count} overrun").format(count=overrun)
        error = get("error")
        if error:
            numbers += _(" (last error: {error})").format(error=error)
        return status[:1].upper() + status[1:] + "\n" + numbers


#
# MSDTMotionTest
#


class MSDTMotionTest(ScriptedLoadableModuleTest):
    """Self-test, run by "Reload and Test" and by ctest (slicer_add_python_unittest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MSDTMotion_SyntheticFatigue()
        self.setUp()
        self.test_MSDTMotion_Texts()

    def test_MSDTMotion_SyntheticFatigue(self):
        """A synthetic sEMG whose spectrum slides down over time gives a negative MDF slope and a trend chart."""
        import numpy as np

        from MSDTMotionLib import importers

        self.delayDisplay("Analysing a synthetic fatiguing sEMG")
        fs, duration = 1000.0, 20.0
        rng = np.random.default_rng(0)
        n = int(fs * duration)
        t = np.arange(n) / fs
        # White noise through a band that moves from ~120 Hz to ~70 Hz: the median frequency falls.
        noise = rng.standard_normal(n)
        spectrum = np.fft.rfft(noise.reshape(20, -1), axis=1)
        freqs = np.fft.rfftfreq(n // 20, 1.0 / fs)
        for k in range(20):
            centre = 120.0 - 2.5 * k
            spectrum[k] *= np.exp(-(((freqs - centre) / 40.0) ** 2))
        x = np.fft.irfft(spectrum, n=n // 20, axis=1).reshape(-1)
        recording = importers.Recording(
            name="Synthetic", signals={"EMG": importers.Signal("EMG", x, fs, "V")}
        )
        summary, charts = MSDTMotionLogic().analyseEmg(recording, "EMG", 1.0)
        result = summary["channels"]["EMG"]
        self.assertIsNone(result.get("error"))
        self.assertLess(result["mdf_slope_hz_per_s"], 0.0)
        self.assertEqual(len(charts), 1)
        self.assertTrue(charts[0].IsA("vtkMRMLPlotChartNode"))
        self.assertEqual(len(t), n)
        self.delayDisplay(MSDTMotionLogic.emgText(summary))

    def test_MSDTMotion_Texts(self):
        self.delayDisplay("Status lines")
        self.assertEqual(MSDTMotionLogic.serialText(None), "Not connected.")
        self.assertEqual(
            MSDTMotionLogic.serialText(
                {"status": "streaming", "received": 100, "dropped": 2, "corrupt": 1, "rate_hz": 99.5}
            ),
            "Streaming\n100 received, 2 dropped, 1 corrupt, 99.5 Hz",
        )
        self.assertEqual(MSDTMotionLogic.channelList(" a, b ,,"), ["a", "b"])
        self.assertIsNone(MSDTMotionLogic.channelList(""))
        self.delayDisplay("Test passed")
