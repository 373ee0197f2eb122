"""`msdt segment` and `msdt demo` end to end: files, JSON on stdout, exit code 2 and nothing written on bad input."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import vtk

from MSDTLib import cli, io, surfaces
from MSDTLib.app import new_scene


@pytest.fixture(scope="module")
def segment_run(tmp_path_factory, sample_dir):
    out = tmp_path_factory.mktemp("cli") / "twin"
    code = cli.main(["segment", str(sample_dir / "example_ct.nii.gz"), "--labels",
                     str(sample_dir / "spine_report" / "totalseg.nii.gz"), "--formats", "stl,obj", "--out", str(out)])
    return code, out


def test_segment_writes_scene_surfaces_summary_and_report(segment_run, capsys):
    code, out = segment_run
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["skin"]) >= {"volume_ml", "area_cm2"}
    l1 = summary["vertebrae"]["L1"]
    assert set(l1) >= {"volume_ml", "centroid_ras", "landmarks", "skin_depth_mm"}
    assert set(l1["landmarks"]) == {"centroid", "spinous", "transverse_left", "transverse_right"}
    for name in summary["files"]:
        assert (out / name).is_file(), name
    for structure in ("skin", "bone", "vertebrae_L1", "vertebrae_S1"):
        assert f"surfaces/{structure}.stl" in summary["files"] and f"surfaces/{structure}.obj" in summary["files"]
    assert {"scene.mrb", "report.html", "view_posterior.png"} <= set(summary["files"])
    report = (out / "report.html").read_text()
    assert "view_posterior.png" in report and "L1" in report
    assert not list(out.parent.glob(".msdt-staging-*"))


def test_exported_stl_is_watertight_and_matches_the_label_volume(segment_run):
    _, out = segment_run
    summary = json.loads((out / "summary.json").read_text())
    reader = vtk.vtkSTLReader()
    reader.SetFileName(str(out / "surfaces" / "vertebrae_L3.stl"))
    reader.Update()
    mesh = reader.GetOutput()
    assert mesh.GetNumberOfPolys() > 500
    # Smoothed surfaces of 3 mm voxels enclose a little less than the voxels; within 10 % of the label volume.
    assert surfaces.enclosed_volume_ml(mesh) == pytest.approx(summary["vertebrae"]["L3"]["volume_ml"], rel=0.10)
    bounds = np.array(mesh.GetBounds()).reshape(3, 2)
    centroid = summary["vertebrae"]["L3"]["centroid_ras"]
    assert np.all((bounds[:, 0] < centroid) & (centroid < bounds[:, 1]))  # RAS millimetres, same place
    clean = vtk.vtkCleanPolyData()
    clean.SetInputData(mesh)
    clean.Update()
    assert surfaces.open_edge_count(clean.GetOutput()) == 0


def test_lps_export_negates_x_and_y(tmp_path, sample_dir):
    scene = new_scene()
    ct = io.load_volume(scene, sample_dir / "example_ct_sm.nii.gz")
    segmentation = io.load_labelmap(scene, sample_dir / "example_seg.nii.gz", ct)
    ras = surfaces.export_segments(segmentation, tmp_path / "ras", ("stl",), "RAS", ["vertebrae_L1"])[0]
    lps = surfaces.export_segments(segmentation, tmp_path / "lps", ("stl",), "LPS", ["vertebrae_L1"])[0]
    points = []
    for path in (ras, lps):
        reader = vtk.vtkSTLReader()
        reader.SetFileName(str(path))
        reader.Update()
        points.append(surfaces.points_array(reader.GetOutput()))
    np.testing.assert_allclose(points[1], points[0] * np.array([-1, -1, 1]), atol=1e-4)


def test_mrb_from_the_cli_reloads(segment_run):
    _, out = segment_run
    scene = io.load_mrb(out / "scene.mrb")
    names = io.segment_names(scene.GetFirstNodeByName("Structures"))
    assert "vertebrae_L1" in names and scene.GetFirstNodeByName("Vertebra landmarks").GetNumberOfControlPoints() == 32


def _bad_inputs(tmp_path, sample_dir):
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image([16, 16, 16], sitk.sitkInt16), str(flat))
    flat2d = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.Image([16, 16], sitk.sitkInt16) + 5, str(flat2d))
    far = sitk.ReadImage(str(sample_dir / "spine_report" / "totalseg.nii.gz"))
    far.SetOrigin([2000.0, 2000.0, 2000.0])
    sitk.WriteImage(far, str(tmp_path / "far.nii.gz"))
    ct = str(sample_dir / "example_ct_sm.nii.gz")
    return {
        "missing": ([str(tmp_path / "nope.nii.gz")], "does not exist"),
        "non-image": ([str(text)], "not an image"),
        "constant": ([str(flat)], "constant"),
        "2d": ([str(flat2d)], "2D image"),
        "disjoint labels": ([ct, "--labels", str(tmp_path / "far.nii.gz")], "does not overlap"),
        "missing labels": ([ct, "--labels", str(tmp_path / "nope_labels.nii.gz")], "does not exist"),
    }


@pytest.mark.parametrize("case", ["missing", "non-image", "constant", "2d", "disjoint labels", "missing labels"])
def test_bad_input_exits_2_with_a_named_problem_and_writes_nothing(tmp_path, sample_dir, capsys, case):
    arguments, message = _bad_inputs(tmp_path, sample_dir)[case]
    out = tmp_path / "out"
    assert cli.main(["segment", *arguments, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
    assert not out.exists() and not list(tmp_path.glob(".msdt-staging-*"))


def test_console_script_prints_json_on_stdout(tmp_path, sample_dir):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "MSDTLib.cli", "segment", str(sample_dir / "example_mr_sm.nii.gz"),
                             "--modality", "mr", "--labels", str(sample_dir / "example_seg_mr.nii.gz"), "--no-report",
                             "--out", str(tmp_path / "mr")], capture_output=True, text=True, check=True,
                            env={**__import__("os").environ, "PYTHONPATH": str(cli.SAMPLE_DIR.parents[2] / "MSDT")})
    summary = json.loads(result.stdout)
    assert summary["modality"] == "mr" and summary["skin"]["volume_ml"] > 1000
    assert "Anatomy twin ready" in result.stderr


def test_demo_with_a_relative_output_folder(tmp_path, monkeypatch, capsys):
    """`make demo` passes a relative --out; the report lands there and its path is printed."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--out", "build/demo"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (tmp_path / "build" / "demo" / "report.html").is_file()
    assert "surfaces/vertebrae_L1.obj" in summary["files"] and summary["vertebrae"]["L5"]["volume_ml"] > 30
    assert (tmp_path / "build" / "demo" / "spine" / "report.html").is_file()
    assert summary["spine"]["lordosis_deg"] > 30
