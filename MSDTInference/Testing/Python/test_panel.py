"""Risk panel pictures and report (MSDTInferenceLib.panel)."""

import re

import matplotlib.image as mpimg
import numpy as np
import pytest

from MSDTInferenceLib import panel
from MSDTLib.errors import MSDTError

NAMES = ["L4-L5.height_middle_mm", "L1.hu_mean", "spine.lordosis_deg", "emg.left ES.mdf_slope_pct_per_min",
         "clinical.age", "imu.flexion_range_deg"]
MATRIX = np.array([
    [1.0, 0.1, 0.45, 0.0, -0.6, 0.2],
    [0.1, 1.0, 0.0, 0.05, -0.35, 0.0],
    [0.45, 0.0, 1.0, 0.0, 0.0, 0.31],
    [0.0, 0.05, 0.0, 1.0, 0.0, -0.29],
    [-0.6, -0.35, 0.0, 0.0, 1.0, -0.5],
    [0.2, 0.0, 0.31, -0.29, -0.5, 1.0],
])
CONTRIBUTIONS = {"L4-L5.height_middle_mm": 0.8, "L1.hu_mean": -0.3, "clinical.age": 0.25,
                 "imu.flexion_range_deg": -0.6, "spine.lordosis_deg": 0.05}


def test_chord_html_has_one_path_per_chord(tmp_path):
    expected = sum(abs(MATRIX[i, j]) >= 0.3 for i in range(6) for j in range(i + 1, 6))
    assert expected == 5
    path = panel.chord_diagram_html(NAMES, MATRIX, CONTRIBUTIONS, tmp_path / "chord.html", min_abs_r=0.3)
    text = path.read_text()
    assert text.count('class="chord"') == expected
    assert len(re.findall(r"<path\b", text)) == expected + len(NAMES)  # chords + one arc per feature
    for name in NAMES:
        assert name.replace("&", "&amp;") in text
    assert "<svg" in text and "<script" not in text and "http://" not in text.replace("http://www.w3.org", "")
    assert panel.contribution_color(0.8, 0.8) == panel.POSITIVE and panel.contribution_color(-0.8, 0.8) == panel.NEGATIVE
    higher = panel.chord_diagram_svg(NAMES, MATRIX, CONTRIBUTIONS, min_abs_r=0.5)
    assert higher.count('class="chord"') == 2
    with pytest.raises(MSDTError):
        panel.chord_diagram_html(NAMES, MATRIX[:3, :3], CONTRIBUTIONS, tmp_path / "bad.html")


def _image(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path)


def test_pngs(tmp_path):
    chord = _image(panel.chord_diagram_png(NAMES, MATRIX, CONTRIBUTIONS, tmp_path / "chord.png"))
    assert chord.shape[1] == 700 and chord.shape[0] > 400 and chord[..., :3].std() > 0.01
    bars = _image(panel.contributions_png(CONTRIBUTIONS, tmp_path / "contributions.png"))
    assert bars.shape[1] == 700 and bars.shape[0] > 200
    red = (bars[..., 0] > 0.7) & (bars[..., 1] < 0.3) & (bars[..., 2] < 0.3)
    blue = (bars[..., 2] > 0.6) & (bars[..., 0] < 0.2)
    assert red.sum() > 100 and blue.sum() > 100
    gauge = _image(panel.risk_gauge_png(0.32, (0.2, 0.45), tmp_path / "gauge.png"))
    assert gauge.shape[:2] == (240, 400)
    with pytest.raises(MSDTError):
        panel.risk_gauge_png(1.3, None, tmp_path / "bad.png")
    with pytest.raises(MSDTError):
        panel.contributions_png({}, tmp_path / "empty.png")


def test_risk_report(tmp_path):
    pictures = {"Gauge": panel.risk_gauge_png(0.32, (0.2, 0.45), tmp_path / "gauge.png"),
                "Associations": panel.chord_diagram_html(NAMES, MATRIX, CONTRIBUTIONS, tmp_path / "chord.html")}
    result = {"risk": 0.32, "interval": [0.2, 0.45], "model": "logistic", "contributions": CONTRIBUTIONS,
              "next_exams": ["MRI of L4-L5"]}
    text = panel.risk_report_html(tmp_path / "report.html", "P001", result, pictures).read_text()
    assert "P001" in text and "32.0%" in text and "MRI of L4-L5" in text and "logistic" in text
    assert "data:image/png;base64," in text and text.count('class="chord"') == 5
    assert "L4-L5.height_middle_mm" in text
