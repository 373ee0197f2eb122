"""Plot chart nodes over recording tables, PNG export and the HTML report."""

import struct

import numpy as np
import pytest

from MSDTLib.errors import MSDTError
from MSDTLib.hierarchy import TwinHierarchy
from MSDTMotionLib import importers, plots


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def signal_table(scene):
    t = np.arange(1000) / 500.0
    recording = importers.Recording(name="EMG trial", signals={
        "emg1": importers.Signal("emg1", np.sin(2 * np.pi * 3 * t), 500.0, "mV"),
        "emg2": importers.Signal("emg2", np.cos(2 * np.pi * 3 * t), 500.0, "mV"),
    })
    return importers.recording_to_scene(scene, recording, study="EMG")["signals"]


def test_plot_signals_creates_series_in_hierarchy(scene, signal_table, tmp_path):
    chart = plots.plot_signals(scene, signal_table, "time_s", ["emg1", "emg2"], title="Raw EMG",
                               y_title="EMG", units="mV")
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == 2
    series = chart.GetNthPlotSeriesNode(1)
    assert series.GetYColumnName() == "emg2" and series.GetXColumnName() == "time_s"
    assert series.GetPlotType() == series.PlotTypeScatter and series.GetMarkerStyle() == series.MarkerStyleNone
    assert series.GetTableNode() is signal_table
    assert chart.GetYAxisTitle() == "EMG (mV)" and chart.GetXAxisTitle() == "time_s (s)"
    assert TwinHierarchy(scene).path_of(chart) == ["Patient", "macro", "EMG", "Raw EMG"]
    png = plots.save_chart_png(chart, tmp_path / "raw.png", width_px=640, height_px=360)
    assert png.stat().st_size > 5000 and png_size(png) == (640, 360)
    with pytest.raises(MSDTError, match="no column"):
        plots.plot_signals(scene, signal_table, "time_s", ["missing"])


def test_plot_trend_fits_and_exports(scene, signal_table, tmp_path):
    times = np.arange(10.0)
    values = 80 - 1.5 * times + np.array([0.3, -0.2, 0.1, 0, -0.1, 0.2, -0.3, 0.1, 0, -0.1])
    chart = plots.plot_trend(scene, times, values, title="MDF", y_title="MDF", units="Hz",
                             reference_node=signal_table)
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    assert float(chart.GetAttribute("MSDT.TrendSlope")) == pytest.approx(-1.5, abs=0.1)
    table = chart.GetNthPlotSeriesNode(1).GetTableNode()
    np.testing.assert_allclose(importers.table_column(table, "trend"),
                               importers.table_column(table, "value"), atol=0.5)
    assert TwinHierarchy(scene).path_of(chart)[:3] == ["Patient", "macro", "EMG"]
    fixed = plots.plot_trend(scene, times, values, fit=(-2.0, 81.0), title="MDF fixed")
    assert float(fixed.GetAttribute("MSDT.TrendSlope")) == -2.0
    png = plots.save_chart_png(chart, tmp_path / "mdf.png")
    assert png_size(png) == (800, 450)


def test_arrays_png_and_html_report(scene, signal_table, tmp_path):
    x = np.linspace(0, 1, 200)
    png = plots.save_chart_png((x, {"a": np.sin(x), "b": np.cos(x)}), tmp_path / "figs" / "arrays.png",
                               width_px=300, height_px=200)
    assert png_size(png) == (300, 200)
    page = plots.html_report(tmp_path / "report.html", "Motion <report>", [
        {"heading": "Signals", "text": "Raw & filtered", "images": [png], "tables": [signal_table]},
        {"heading": "Features", "tables": [[{"muscle": "Biceps", "MDF (Hz)": 81.234}]]},
    ])
    text = page.read_text()
    assert "Motion &lt;report&gt;" in text and "src='figs/arrays.png'" in text
    assert "emg1 (mV)" in text and "50 of 1000 rows shown" in text and "81.23" in text
    embedded = plots.html_report(tmp_path / "embedded.html", "R", [{"images": [png]}], embed_images=True)
    assert "data:image/png;base64," in embedded.read_text()
