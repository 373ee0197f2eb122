"""`msdt register` end to end on the real sample CT skin: files in, summary/transform/scene out."""

import json

import numpy as np
import pytest
import vtk

from MSDTFusionLib import pointclouds, registerworkflow
from MSDTFusionLib.registration_bench import ct_twin_inputs, make_trials
from MSDTLib import cli, io


@pytest.fixture(scope="module")
def camera_files(ct_twin, tmp_path_factory):
    """Skin surface (.vtp), a camera cloud in an unknown pose (.ply), landmarks in both frames (.json)."""
    _, result = ct_twin
    polydata, points, normals, centroids, names, _ = ct_twin_inputs(result=result)
    folder = tmp_path_factory.mktemp("register")
    writer = vtk.vtkXMLPolyDataWriter()
    writer.SetFileName(str(folder / "skin.vtp"))
    writer.SetInputData(polydata)
    writer.Write()
    trial = make_trials(points, normals, 1, seed=7)[0]
    pointclouds.write_point_cloud(folder / "camera.ply", trial.moving)
    truth = trial.truth  # camera -> RAS
    camera_centroids = (centroids - truth[:3, 3]) @ np.linalg.inv(truth[:3, :3]).T
    for name, pts, system in (("fixed", centroids, "RAS"), ("moving", camera_centroids, "RAS")):
        markups = {"markups": [{"type": "Fiducial", "coordinateSystem": system, "controlPoints": [
            {"label": label, "position": p.tolist()} for label, p in zip(names, pts, strict=True)]}]}
        (folder / f"{name}.mrk.json").write_text(json.dumps(markups))
    return folder, truth


def test_register_writes_summary_transform_and_scene(camera_files, capsys):
    folder, truth = camera_files
    out = folder / "out"
    code = cli.main(["register", "--fixed", str(folder / "skin.vtp"), "--moving", str(folder / "camera.ply"),
                     "--fixed-landmarks", str(folder / "fixed.mrk.json"),
                     "--moving-landmarks", str(folder / "moving.mrk.json"), "--out", str(out)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["converged"] and summary["reliable"] and summary["overlap"] > 0.8
    matrix = np.array(summary["matrix"])
    assert np.abs(matrix[:3, 3] - truth[:3, 3]).max() < 1.0  # mm
    assert np.abs(matrix[:3, :3] - truth[:3, :3]).max() < 0.01
    assert summary["tre_mm"]["max_mm"] < 2.0 and summary["tre_mm"]["count"] == 8
    assert {"rms_mm", "inlier_fraction", "uncertainty", "seconds"} <= set(summary)

    # transform.h5 is what Slicer would load: read it back through MRML's own storage node.
    import slicer

    from MSDTLib.app import new_scene

    scene = new_scene()
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "loaded")
    storage = slicer.vtkMRMLTransformStorageNode()
    storage.SetFileName(str(out / "transform.h5"))
    assert storage.ReadData(node)
    loaded = vtk.vtkMatrix4x4()
    node.GetMatrixTransformToParent(loaded)
    np.testing.assert_allclose([[loaded.GetElement(r, c) for c in range(4)] for r in range(4)], matrix, atol=1e-4)

    reloaded = io.load_mrb(out / "scene.mrb")
    cloud = reloaded.GetFirstNodeByName("Camera point cloud")
    assert cloud.GetParentTransformNode().GetName() == "CameraToMRI"
    assert cloud.GetPolyData().GetNumberOfPoints() == len(pointclouds.read_point_cloud(folder / "camera.ply"))


def test_register_from_the_ct_image(camera_files, sample_dir, capsys):
    """--fixed may be the image itself: the skin comes from the anatomy step."""
    folder, truth = camera_files
    out = folder / "from_image"
    assert cli.main(["register", "--fixed", str(sample_dir / "example_ct.nii.gz"), "--moving",
                     str(folder / "camera.ply"), "--out", str(out)]) == 0
    matrix = np.array(json.loads(capsys.readouterr().out)["matrix"])
    assert np.abs(matrix[:3, :3] - truth[:3, :3]).max() < 0.01 and np.abs(matrix[:3, 3] - truth[:3, 3]).max() < 1.5


@pytest.mark.parametrize("case", ["empty", "nan", "missing", "half landmarks"])
def test_register_bad_input_exits_2(camera_files, tmp_path, capsys, case):
    folder, _ = camera_files
    moving = folder / "camera.ply"
    extra = []
    if case == "empty":
        moving = tmp_path / "empty.xyz"
        moving.write_text("")
    elif case == "nan":
        moving = tmp_path / "nan.npy"
        np.save(moving, np.full((100, 3), np.nan))
    elif case == "missing":
        moving = tmp_path / "nope.ply"
    else:
        extra = ["--fixed-landmarks", str(folder / "fixed.mrk.json")]
    out = tmp_path / "out"
    code = cli.main(["register", "--fixed", str(folder / "skin.vtp"), "--moving", str(moving), *extra,
                     "--out", str(out)])
    assert code == 2 and "error" in capsys.readouterr().err and not out.exists()


def test_landmark_files(tmp_path):
    (tmp_path / "a.fcsv").write_text("# Markups fiducial file version = 4.11\n# CoordinateSystem = LPS\n"
                                     "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
                                     "vtkMRMLMarkupsFiducialNode_0,1,2,3,0,0,0,1,1,1,0,L1,,\n")
    landmarks = registerworkflow.read_landmarks(tmp_path / "a.fcsv")
    assert landmarks.names == ["L1"]
    np.testing.assert_allclose(landmarks.points, [[-1, -2, 3]])
