"""The Anatomy twin on real CT/MR: volumes against voxel counts and TotalSegmentator's spine report,
anatomical order of landmarks, skin and bone against explainable references, atomic failure."""

import json

import nibabel as nib
import numpy as np
import pytest
import slicer
from scipy import ndimage

from MSDTLib import io, landmarks, pipeline, surfaces, tissue, totalseg
from MSDTLib.errors import MSDTError
from MSDTLib.grid import Grid
from MSDTLib.morphology import fill_holes_slicewise


def _voxel_volumes_ml(path, values):
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000.0
    return {value: float((data == value).sum()) * voxel_ml for value in values}


def test_vertebra_volumes_agree_with_voxel_counts(ct_twin, sample_dir):
    _, twin = ct_twin
    summary = twin.summary()["vertebrae"]
    levels = {33: "T11", 32: "T12", 31: "L1", 30: "L2", 29: "L3", 28: "L4", 27: "L5", 26: "S1"}
    expected = _voxel_volumes_ml(sample_dir / "spine_report" / "totalseg.nii.gz", levels)
    assert list(summary) == list(levels.values())  # cranial to caudal
    for value, level in levels.items():
        assert summary[level]["volume_ml"] == pytest.approx(expected[value], abs=1e-3)


def test_vertebral_body_volumes_match_the_spine_report(scene, sample_dir):
    """Body labels (totalseg_vertebrae_pp_refined) give TotalSegmentator's reported volumes (L1 35.61 ml ...)."""
    report = json.loads((sample_dir / "spine_report" / "spine_report.json").read_text())["results"]
    ct = io.load_volume(scene, sample_dir / "example_ct.nii.gz")
    options = pipeline.AnatomyOptions(label_names=sample_dir / "spine_report" / "vertebrae_body_names.json")
    twin = pipeline.build_anatomy_twin(scene, ct, sample_dir / "spine_report" / "totalseg_vertebrae_pp_refined.nii.gz",
                                       options, progress=lambda *_: None)
    vertebrae = twin.summary()["vertebrae"]
    for level in ("L1", "L2", "L3", "L4", "L5"):
        assert vertebrae[level]["volume_ml"] == pytest.approx(report[f"vertebrae_{level}_volume_ml"], abs=0.01)
    assert vertebrae["L1"]["volume_ml"] == pytest.approx(35.61, abs=0.01)


def test_landmarks_are_anatomically_ordered(ct_twin):
    _, twin = ct_twin
    vertebrae = twin.summary()["vertebrae"]
    complete = [level for level, v in vertebrae.items() if not v["truncated"]]
    assert {"L1", "L2", "L3", "L4", "L5"} <= set(complete)
    for level in complete:
        points = {name: np.array(p) for name, p in vertebrae[level]["landmarks"].items()}
        centroid = points["centroid"]
        assert points["spinous"][1] < centroid[1] - 20  # spinous tip well posterior (RAS y = anterior)
        assert points["transverse_left"][0] < centroid[0] - 15 < centroid[0] + 15 < points["transverse_right"][0]
        assert abs(points["spinous"][0] - centroid[0]) < 10  # on the midline
        depth = vertebrae[level]["skin_depth_mm"]
        assert 0 < depth["spinous"] < depth["transverse_left"] < depth["centroid"]
        assert 0 < depth["spinous"] < depth["transverse_right"] < depth["centroid"]
    superior = [vertebrae[level]["centroid_ras"][2] for level in vertebrae]
    assert superior == sorted(superior, reverse=True)  # T11 above ... above S1
    assert vertebrae["L1"]["centroid_ras"][2] > vertebrae["L5"]["centroid_ras"][2] + 100


def test_landmarks_are_named_markups_with_skin_points(ct_twin):
    _, twin = ct_twin
    node = twin.landmarks_node
    names = [node.GetNthControlPointLabel(i) for i in range(node.GetNumberOfControlPoints())]
    assert {"L1_centroid", "L1_spinous", "L1_transverse_left", "L1_transverse_right"} <= set(names)
    l1 = twin.summary()["vertebrae"]["L1"]
    index = names.index("L1_spinous")
    np.testing.assert_allclose(node.GetNthControlPointPosition(index), l1["landmarks"]["spinous"], atol=0.01)
    # The skin point lies exactly the reported depth behind the landmark.
    skin = twin.skin_points_node
    skin_index = [skin.GetNthControlPointLabel(i) for i in range(skin.GetNumberOfControlPoints())].index(
        "L1_spinous_skin")
    distance = np.linalg.norm(np.array(skin.GetNthControlPointPosition(skin_index)) - l1["landmarks"]["spinous"])
    assert distance == pytest.approx(l1["skin_depth_mm"]["spinous"], abs=0.01)


def test_measurement_table_has_units(ct_twin):
    _, twin = ct_twin
    table = twin.table_node
    assert table.GetColumnUnitLabel("volume") == "ml" and table.GetColumnUnitLabel("skin_depth_spinous") == "mm"
    rows = {table.GetCellText(r, 0): r for r in range(table.GetNumberOfRows())}
    assert float(table.GetCellText(rows["L1"], 1)) == pytest.approx(twin.summary()["vertebrae"]["L1"]["volume_ml"],
                                                                   abs=1e-3)


def _partial_volume_body_ml(image, mask, grid):
    """Reference body volume: interior voxels count fully, boundary voxels by their tissue fraction
    (HU - air) / (subcutaneous tissue - air), the physical amount of non-air matter at the skin."""
    interior = ndimage.binary_erosion(mask, iterations=2)
    band = ndimage.binary_dilation(mask, iterations=2) & ~interior
    layer = ndimage.binary_erosion(mask, iterations=1) & ~ndimage.binary_erosion(mask, iterations=3)
    air = np.median(image[~ndimage.binary_dilation(mask, iterations=3)])
    tissue_value = np.median(image[layer])
    fraction = np.clip((image - air) / (tissue_value - air), 0, 1)
    return (interior.sum() + fraction[band].sum()) * grid.voxel_volume_mm3 / 1000.0


def _assert_one_component_without_holes(mask, grid):
    assert ndimage.label(mask)[1] == 1
    np.testing.assert_array_equal(ndimage.binary_fill_holes(mask), mask)  # no enclosed cavity
    np.testing.assert_array_equal(fill_holes_slicewise(mask, grid.axis_along(2)), mask)  # no hole in any slice


@pytest.mark.parametrize("name", ["example_ct.nii.gz", "example_ct_sm.nii.gz"])
def test_ct_skin_is_one_closed_body_with_the_partial_volume_reference_volume(scene, sample_dir, name):
    volume = io.load_volume(scene, sample_dir / name)
    grid = Grid.of_node(volume)
    image = slicer.util.arrayFromVolume(volume).astype(float)
    body = tissue.body_mask(image, grid, "ct")
    _assert_one_component_without_holes(body.mask, grid)
    volume_ml = body.mask.sum() * grid.voxel_volume_mm3 / 1000.0
    assert volume_ml == pytest.approx(_partial_volume_body_ml(image, body.mask, grid), rel=0.02)
    if name != "example_ct_sm.nii.gz":
        return
    # Lungs and gas-filled bowel (TotalSegmentator labels of this crop) lie entirely inside the body.
    air_organs = np.isin(io.labels_on_volume_grid(sample_dir / "example_seg.nii.gz", volume), [10, 11, 13, 14, 18, 20])
    assert air_organs.any() and (body.mask & air_organs).sum() == air_organs.sum()
    assert (image[air_organs] < -500).sum() > 1000  # ... and they do hold air that the threshold alone would drop


def test_ct_skin_envelops_totalsegmentator_tissue_types(scene, sample_dir):
    """Independent reference: fat + muscle + organs of TotalSegmentator, filled per slice. The skin envelope
    contains it and is larger only by a skin shell 1-5 mm thick (dermis and the boundary voxels)."""
    volume = io.load_volume(scene, sample_dir / "example_ct_sm.nii.gz")
    grid = Grid.of_node(volume)
    twin = pipeline.build_anatomy_twin(scene, volume, sample_dir / "example_seg.nii.gz", progress=lambda *_: None)
    reference = io.labels_on_volume_grid(sample_dir / "example_seg.nii.gz", volume) > 0
    for tissue_name in ("subcutaneous_fat", "torso_fat", "skeletal_muscle"):
        path = sample_dir / "example_seg_tissue_types" / f"{tissue_name}.nii.gz"
        reference |= io.labels_on_volume_grid(path, volume) > 0
    reference = fill_holes_slicewise(reference, grid.axis_along(2))
    skin = io.segment_array(twin.skin_segmentation, "skin", volume)
    assert (skin & reference).sum() / reference.sum() > 0.995
    reference_ml = reference.sum() * grid.voxel_volume_mm3 / 1000.0
    assert 1.0 < twin.skin["volume_ml"] / reference_ml < 1.08
    side_area_mm2 = (twin.skin["area_cm2"] - twin.skin["fov_cap_area_cm2"]) * 100.0
    shell_mm = (twin.skin["volume_ml"] - reference_ml) * 1000.0 / side_area_mm2
    assert 1.0 < shell_mm < 5.0
    polydata = twin.skin_model_node.GetPolyData()
    assert surfaces.open_edge_count(polydata) == 0
    assert surfaces.enclosed_volume_ml(polydata) == pytest.approx(twin.skin["volume_ml"], rel=0.01)


def test_mr_skin_is_stable_and_contains_every_labelled_structure(scene, sample_dir):
    volume = io.load_volume(scene, sample_dir / "example_mr_sm.nii.gz")
    grid = Grid.of_node(volume)
    image = slicer.util.arrayFromVolume(volume).astype(float)
    body = tissue.body_mask(image, grid, "mr")
    _assert_one_component_without_holes(body.mask, grid)
    structures = io.labels_on_volume_grid(sample_dir / "example_seg_mr.nii.gz", volume) > 0
    assert (body.mask & structures).sum() == structures.sum()
    volume_ml = body.mask.sum() * grid.voxel_volume_mm3 / 1000.0
    # A real air/skin edge: halving the automatic threshold or raising it by a quarter moves the volume by
    # under 3 % (far above it the threshold starts cutting into the darker skin and fat layers).
    for factor in (0.5, 1.25):
        other = tissue.body_mask(image, grid, "mr", body.threshold * factor).mask
        assert other.sum() * grid.voxel_volume_mm3 / 1000.0 == pytest.approx(volume_ml, rel=0.03)
    background = np.median(image[~ndimage.binary_dilation(body.mask, iterations=3)])
    assert background < body.threshold < np.median(image[body.mask])


def test_mr_twin_runs_with_total_mr_labels(scene, sample_dir):
    volume = io.load_volume(scene, sample_dir / "example_mr_sm.nii.gz")
    twin = pipeline.build_anatomy_twin(scene, volume, sample_dir / "example_seg_mr.nii.gz",
                                       pipeline.AnatomyOptions(modality="mr"), progress=lambda *_: None)
    summary = twin.summary()
    assert summary["skin"]["threshold_unit"].startswith("image units")
    assert "bone" not in summary and twin.bone_segmentation is None  # no HU in MR
    assert summary["structures_ml"]["vertebrae"] > 10 and summary["vertebrae"] == {}


def test_ct_bone_holds_the_vertebrae(ct_twin, sample_dir):
    _, twin = ct_twin
    bone = io.segment_array(twin.bone_segmentation, "bone", twin.volume_node)
    vertebrae = io.labels_on_volume_grid(sample_dir / "spine_report" / "totalseg.nii.gz", twin.volume_node) > 0
    assert (bone & vertebrae).sum() / vertebrae.sum() > 0.85  # 3 mm voxels: thin cortex is partial volume
    hu = slicer.util.arrayFromVolume(twin.volume_node)
    assert np.median(hu[bone]) > 150 and ndimage.label(bone)[1] < 200


def test_failure_leaves_the_scene_untouched(scene, sample_dir, monkeypatch):
    volume = io.load_volume(scene, sample_dir / "example_ct_sm.nii.gz")
    before = scene.GetNumberOfNodes()

    def broken(*args, **kwargs):
        raise MSDTError("landmark step failed")

    monkeypatch.setattr(landmarks, "vertebra_landmarks", broken)
    with pytest.raises(MSDTError, match="landmark step failed"):
        pipeline.build_anatomy_twin(scene, volume, sample_dir / "example_seg.nii.gz", progress=lambda *_: None)
    assert scene.GetNumberOfNodes() == before
    assert scene.GetFirstNodeByName("Skin") is None and scene.GetFirstNodeByName("Structures") is None
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume)[0, 0, :3],
                                  np.asarray(nib.load(sample_dir / "example_ct_sm.nii.gz").dataobj)[:3, 0, 0])


def test_constant_and_nan_volumes_are_refused(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "flat")
    slicer.util.updateVolumeFromArray(node, np.zeros((5, 5, 5), np.float32))
    with pytest.raises(MSDTError, match="constant"):
        pipeline.build_anatomy_twin(scene, node)
    slicer.util.updateVolumeFromArray(node, np.full((5, 5, 5), np.nan, np.float32))
    with pytest.raises(MSDTError, match="NaN"):
        pipeline.build_anatomy_twin(scene, node)


def test_totalsegmentator_missing_package_or_weights_is_explained(monkeypatch, tmp_path):
    monkeypatch.setattr(totalseg.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MSDTError, match=r"msdt\[ml\]"):
        totalseg.check_available("ct")
    monkeypatch.setattr(totalseg.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path))
    with pytest.raises(MSDTError, match="Dataset297.*missing"):
        totalseg.check_available("ct")
    (tmp_path / "nnunet" / "results" / "Dataset852_TotalMR_fast").mkdir(parents=True)
    assert totalseg.check_available("mr") == ("total_mr", 852)


def test_every_data_node_sits_under_patient_scale_study(ct_twin):
    from MSDTLib.hierarchy import SCALES, TwinHierarchy, belongs_in_hierarchy

    scene, _ = ct_twin
    hierarchy = TwinHierarchy(scene, "Patient")
    data_nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())
                  if belongs_in_hierarchy(scene.GetNthNode(i))]
    assert len(data_nodes) >= 8
    for node in data_nodes:
        path = hierarchy.path_of(node)
        assert len(path) == 4 and path[0] == "Patient" and path[1] in SCALES, (node.GetName(), path)


def test_ct_without_cortical_bone_keeps_the_skin_and_names_the_problem(scene):
    """A soft-tissue cylinder in air: no voxel reaches cortical HU, the skin is still built."""
    import SimpleITK as sitk

    k, j, i = np.mgrid[0:20, 0:40, 0:40]
    image = np.where((j - 20) ** 2 + (i - 20) ** 2 < 15**2, 40, -1000).astype(np.int16)
    image[:, 0:2, :] = 250  # a table-like plate outside the body, below cortical HU
    volume = io.volume_node_from_image(scene, sitk.GetImageFromArray(image), "soft")
    twin = pipeline.build_anatomy_twin(scene, volume, progress=lambda *_: None)
    summary = twin.summary()
    assert "300 HU" in summary["bone"]["error"] and summary["bone"]["volume_ml"] is None
    assert twin.bone_segmentation is None
    assert summary["skin"]["volume_ml"] == pytest.approx((image[:, 2:, :] == 40).sum() / 1000.0, rel=1e-6)
