"""Loading images and label maps with the right geometry, DICOM, class tables and .mrb round trips."""

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from MSDTLib import io, labels
from MSDTLib.errors import MSDTError
from MSDTLib.grid import Grid
from MSDTLib.hierarchy import TwinHierarchy


def _label_centroid_ras(array, matrix, value):
    kji = np.argwhere(array == value).astype(float)
    return (kji[:, ::-1] @ matrix[:3, :3].T + matrix[:3, 3]).mean(axis=0)


def test_nifti_geometry_matches_nibabel_affine(scene, sample_dir):
    """nibabel's affine is the reference IJK-to-RAS for a NIfTI file (RAS-stored CT and LPS-stored MR)."""
    for name in ("example_ct.nii.gz", "example_mr_sm.nii.gz"):
        node = io.load_volume(scene, sample_dir / name)
        reference = nib.load(sample_dir / name)
        np.testing.assert_allclose(io.node_ijk_to_ras(node), reference.affine, atol=1e-3)
        voxels = slicer.util.arrayFromVolume(node)
        np.testing.assert_array_equal(voxels, np.asarray(reference.dataobj).transpose(2, 1, 0))


def test_nifti_stored_in_lps_lands_in_the_same_place(scene, sample_dir, tmp_path):
    """The same labels written with flipped axes (LPS order) map to the same RAS positions."""
    ras = nib.load(sample_dir / "spine_report" / "totalseg.nii.gz")
    lps_order = nib.orientations.axcodes2ornt(("L", "P", "S"))
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(ras.affine), lps_order)
    lps = ras.as_reoriented(transform)
    assert nib.aff2axcodes(lps.affine) == ("L", "P", "S")
    nib.save(lps, tmp_path / "labels_lps.nii.gz")
    node_ras = io.load_volume(scene, sample_dir / "spine_report" / "totalseg.nii.gz")
    node_lps = io.load_volume(scene, tmp_path / "labels_lps.nii.gz")
    for value in (27, 31):  # L5, L1
        a = _label_centroid_ras(slicer.util.arrayFromVolume(node_ras), io.node_ijk_to_ras(node_ras), value)
        b = _label_centroid_ras(slicer.util.arrayFromVolume(node_lps), io.node_ijk_to_ras(node_lps), value)
        np.testing.assert_allclose(a, b, atol=1e-3)
    # And resampling the LPS-stored label map onto the RAS image is exact (grids coincide physically).
    ct = io.load_volume(scene, sample_dir / "example_ct.nii.gz")
    np.testing.assert_array_equal(io.labels_on_volume_grid(tmp_path / "labels_lps.nii.gz", ct),
                                  slicer.util.arrayFromVolume(node_ras))


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_nrrd_and_mha_keep_values_and_geometry(scene, sample_dir, tmp_path, suffix):
    image = sitk.ReadImage(str(sample_dir / "example_mr_sm.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / f"mr{suffix}"))
    original = io.load_volume(scene, sample_dir / "example_mr_sm.nii.gz")
    copy = io.load_volume(scene, tmp_path / f"mr{suffix}")
    np.testing.assert_allclose(io.node_ijk_to_ras(copy), io.node_ijk_to_ras(original), atol=1e-4)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(copy), slicer.util.arrayFromVolume(original))


def _write_dicom_series(image: sitk.Image, folder) -> None:
    """Write a CT series, one file per slice, with the tags a scanner would set (geometry + rescale)."""
    folder.mkdir()
    image = sitk.Cast(image, sitk.sitkInt16)
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.42"
    tags = [("0008|0060", "CT"), ("0010|0010", "MSDT^Phantom"), ("0010|0020", "MSDT001"),
            ("0020|000e", series_uid), ("0020|000d", series_uid + ".1"), ("0008|1030", "Spine CT"),
            ("0020|0037", "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6],
                                                           direction[1], direction[4], direction[7]))),
            ("0028|1052", "0"), ("0028|1053", "1")]
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        for tag, value in tags:
            slice_image.SetMetaData(tag, value)
        origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_image.SetMetaData("0020|0032", "\\".join(f"{v:.4f}" for v in origin))
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)


def test_dicom_series_gives_the_same_geometry_as_nifti(scene, sample_dir, tmp_path):
    nifti = sample_dir / "example_ct_sm.nii.gz"
    _write_dicom_series(sitk.ReadImage(str(nifti)), tmp_path / "dicom")
    from_nifti = io.load_volume(scene, nifti)
    from_dicom = io.load_volume(scene, tmp_path / "dicom")
    np.testing.assert_allclose(io.node_ijk_to_ras(from_dicom), io.node_ijk_to_ras(from_nifti), atol=1e-3)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(from_dicom), slicer.util.arrayFromVolume(from_nifti))
    assert from_dicom.GetAttribute("DICOM.PatientName") == "MSDT^Phantom"
    # The label map made for the NIfTI lands on the DICOM volume unchanged.
    labels_dicom = io.labels_on_volume_grid(sample_dir / "example_seg.nii.gz", from_dicom)
    labels_nifti = io.labels_on_volume_grid(sample_dir / "example_seg.nii.gz", from_nifti)
    np.testing.assert_array_equal(labels_dicom, labels_nifti)


def test_label_map_on_another_grid_is_resampled_exactly(scene, sample_dir, tmp_path):
    """A label map cropped to a sub-grid (shifted origin) lands voxel-for-voxel on the full image."""
    full = sitk.ReadImage(str(sample_dir / "spine_report" / "totalseg.nii.gz"))
    cropped = full[10:110, 5:95, 20:100]
    sitk.WriteImage(cropped, str(tmp_path / "cropped.nrrd"))
    ct = io.load_volume(scene, sample_dir / "example_ct.nii.gz")
    resampled = io.labels_on_volume_grid(tmp_path / "cropped.nrrd", ct)
    expected = np.zeros_like(resampled)
    expected[20:100, 5:95, 10:110] = sitk.GetArrayFromImage(cropped)
    np.testing.assert_array_equal(resampled, expected)


def test_label_map_becomes_named_coloured_segments(scene, sample_dir):
    ct = io.load_volume(scene, sample_dir / "example_ct_sm.nii.gz")
    segmentation = io.load_labelmap(scene, sample_dir / "example_seg.nii.gz", ct)
    names = io.segment_names(segmentation)
    assert {"vertebrae_L1", "vertebrae_T12", "liver", "spinal_cord", "autochthon_left"} <= set(names)
    raw = np.asarray(nib.load(sample_dir / "example_seg.nii.gz").dataobj)
    assert len(names) == len(np.unique(raw)) - 1
    segment = segmentation.GetSegmentation().GetSegment(
        segmentation.GetSegmentation().GetSegmentIdBySegmentName("vertebrae_L1"))
    np.testing.assert_allclose(segment.GetColor(), labels.segment_color("vertebrae_L1"), atol=1 / 255)
    mask = io.segment_array(segmentation, "vertebrae_L1", ct)
    assert mask.sum() == (raw == 31).sum()


def test_mr_label_map_uses_total_mr_names(scene, sample_dir):
    mr = io.load_volume(scene, sample_dir / "example_mr_sm.nii.gz")
    segmentation = io.load_labelmap(scene, sample_dir / "example_seg_mr.nii.gz", mr, modality="mr")
    names = set(io.segment_names(segmentation))
    assert {"vertebrae", "intervertebral_discs", "spinal_cord", "autochthon_left", "autochthon_right"} <= names


def test_class_tables_and_files(tmp_path):
    total = labels.CLASS_TABLES["total"]
    assert len(total) == 117 and total[26] == "vertebrae_S1" and total[31] == "vertebrae_L1"
    assert total[50] == "vertebrae_C1" and total[79] == "spinal_cord" and total[117] == "costal_cartilages"
    assert labels.CLASS_TABLES["total_mr"][19] == "vertebrae" and labels.CLASS_TABLES["total_mr"][50] == "brain"
    (tmp_path / "names.json").write_text(json.dumps({"1": "vertebrae_L1", "2": "vertebrae_L2"}))
    assert labels.load_class_table(tmp_path / "names.json") == {1: "vertebrae_L1", 2: "vertebrae_L2"}
    (tmp_path / "names.txt").write_text("# value name r g b a\n0 background 0 0 0 0\n5 disc 1 2 3 255\n")
    assert labels.load_class_table(tmp_path / "names.txt") == {0: "background", 5: "disc"}
    with pytest.raises(MSDTError, match="neither a built-in table"):
        labels.load_class_table(tmp_path / "missing.json")
    assert labels.vertebra_level("vertebrae_T12") == "T12" and labels.vertebra_level("liver") is None


@pytest.mark.parametrize("problem", ["missing", "text", "constant", "2d"])
def test_bad_images_are_refused_with_a_clear_error(scene, tmp_path, problem):
    path = tmp_path / "input.nii.gz"
    expected = {"missing": "does not exist", "text": "not an image", "constant": "constant", "2d": "2D image"}
    if problem == "text":
        path = tmp_path / "notes.nii.gz"
        path.write_text("this is not an image")
    elif problem == "constant":
        sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkInt16), str(path))
    elif problem == "2d":
        sitk.WriteImage(sitk.Image([8, 8], sitk.sitkInt16) + 1, str(path))
    before = scene.GetNumberOfNodes()
    with pytest.raises(MSDTError, match=expected[problem]):
        io.load_volume(scene, path)
    assert scene.GetNumberOfNodes() == before


def test_label_map_outside_the_image_is_refused(scene, sample_dir, tmp_path):
    labels_image = sitk.ReadImage(str(sample_dir / "spine_report" / "totalseg.nii.gz"))
    labels_image.SetOrigin([o + 2000.0 for o in labels_image.GetOrigin()])
    sitk.WriteImage(labels_image, str(tmp_path / "far.nii.gz"))
    ct = io.load_volume(scene, sample_dir / "example_ct.nii.gz")
    with pytest.raises(MSDTError, match="does not overlap"):
        io.labels_on_volume_grid(tmp_path / "far.nii.gz", ct)


def test_mrb_round_trip_keeps_voxels_geometry_segments_landmarks_and_hierarchy(ct_twin, tmp_path):
    scene, twin = ct_twin
    path = io.save_mrb(scene, tmp_path / "twin.mrb")
    reloaded = io.load_mrb(path)

    volume = reloaded.GetFirstNodeByName(twin.volume_node.GetName())
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), slicer.util.arrayFromVolume(twin.volume_node))
    np.testing.assert_allclose(io.node_ijk_to_ras(volume), io.node_ijk_to_ras(twin.volume_node), atol=1e-6)

    structures = reloaded.GetFirstNodeByName("Structures")
    assert io.segment_names(structures) == io.segment_names(twin.structures_segmentation)
    np.testing.assert_array_equal(io.segment_array(structures, "vertebrae_L1", volume),
                                  io.segment_array(twin.structures_segmentation, "vertebrae_L1", twin.volume_node))

    points = reloaded.GetFirstNodeByName("Vertebra landmarks")
    assert points.GetNumberOfControlPoints() == twin.landmarks_node.GetNumberOfControlPoints() > 0
    for index in range(points.GetNumberOfControlPoints()):
        assert points.GetNthControlPointLabel(index) == twin.landmarks_node.GetNthControlPointLabel(index)
        np.testing.assert_allclose(points.GetNthControlPointPosition(index),
                                   twin.landmarks_node.GetNthControlPointPosition(index), atol=1e-4)

    hierarchy = TwinHierarchy(reloaded, "Patient")
    original = TwinHierarchy(scene, "Patient")
    for name in ("Skin surface", "Vertebra landmarks", "Structures", "Anatomy measurements", volume.GetName()):
        assert hierarchy.path_of(reloaded.GetFirstNodeByName(name)) == original.path_of(scene.GetFirstNodeByName(name))
    assert original.path_of(twin.skin_model_node)[:3] == ["Patient", "macro", "CT example_ct"]
    assert original.path_of(twin.landmarks_node)[:3] == ["Patient", "meso", "CT example_ct"]


def test_grid_round_trips_points(sample_dir, scene):
    node = io.load_volume(scene, sample_dir / "example_mr_sm.nii.gz")
    grid = Grid.of_node(node)
    kji = np.array([[3.0, 10.5, 20.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(grid.kji_from_ras(grid.ras_from_kji(kji)), kji, atol=1e-9)
    assert grid.axis_along(2) == 0 and grid.voxel_volume_mm3 == pytest.approx(27.0, rel=1e-4)
