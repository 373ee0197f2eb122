"""Texture mapping: grey levels sampled along surface normals, checked against analytic ramps and real CT HU."""

import os

# Must precede any vtk import: without an EGL window VTK segfaults on a machine with no display.
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from MSDTLib import io, render, surfaces, texture  # noqa: E402
from MSDTLib.errors import MSDTError  # noqa: E402

# Ramp I = A + B * x_RAS (mm) on an oblique, LPS-stored grid with anisotropic voxels.
A, B = 1000.0, 2.0
SIZE_IJK = (60, 50, 40)
SPACING = (1.5, 1.2, 2.0)
ORIGIN_LPS = (30.0, 20.0, -40.0)
ANGLE = np.deg2rad(20.0)
DIRECTION = np.array([[np.cos(ANGLE), -np.sin(ANGLE), 0.0], [np.sin(ANGLE), np.cos(ANGLE), 0.0], [0.0, 0.0, 1.0]])
CENTER = np.array([-60.0, -60.0, 0.0])  # RAS, well inside the grid
RADIUS = 12.0


def ramp_image() -> sitk.Image:
    """SimpleITK image (LPS geometry) whose voxels hold A + B * x_RAS of their centre."""
    reference = sitk.Image(SIZE_IJK, sitk.sitkFloat64)
    reference.SetSpacing(SPACING)
    reference.SetOrigin(ORIGIN_LPS)
    reference.SetDirection(DIRECTION.ravel().tolist())
    matrix = io.ijk_to_ras_matrix(reference)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=float) for n in SIZE_IJK[::-1]], indexing="ij")
    x_ras = matrix[0, 0] * i + matrix[0, 1] * j + matrix[0, 2] * k + matrix[0, 3]
    image = sitk.GetImageFromArray(A + B * x_ras)
    image.CopyInformation(reference)
    return image


@pytest.fixture
def ramp(scene):
    """(scene, volume node, (k, j, i) array, IJK-to-RAS) of the ramp, through io.volume_node_from_image."""
    node = io.volume_node_from_image(scene, ramp_image(), "ramp")
    return scene, node, slicer.util.arrayFromVolume(node), io.node_ijk_to_ras(node)


def sphere(center=CENTER, radius=RADIUS, resolution=64) -> vtk.vtkPolyData:
    source = vtk.vtkSphereSource()
    source.SetCenter(*center)
    source.SetRadius(radius)
    source.SetThetaResolution(resolution)
    source.SetPhiResolution(resolution)
    source.Update()
    return source.GetOutput()


def radial(polydata, center=CENTER, radius=RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 3) and exact outward unit normals of a sphere surface."""
    points = surfaces.points_array(polydata)
    return points, (points - np.asarray(center)) / radius


def without_normals(polydata, reverse_winding=False) -> vtk.vtkPolyData:
    copy = vtk.vtkPolyData()
    copy.DeepCopy(polydata)
    copy.GetPointData().SetNormals(None)
    if reverse_winding:
        reverse = vtk.vtkReverseSense()
        reverse.SetInputData(copy)
        reverse.ReverseCellsOn()
        reverse.Update()
        copy = reverse.GetOutput()
    return copy


# ----------------------------------------------------------------------------------------------- exact


def test_value_on_the_surface_is_the_ramp_at_each_point(ramp):
    _, _, image, matrix = ramp
    polydata = sphere()
    points, _ = radial(polydata)
    values = texture.sample_along_normals(polydata, image, matrix, depth_range_mm=(0.0, 0.0))
    expected = A + B * points[:, 0]
    assert values.shape == (polydata.GetNumberOfPoints(),)
    assert not np.isnan(values).any()
    assert np.max(np.abs(values - expected) / np.abs(expected)) < 1e-6  # trilinear is exact for a ramp


def test_mean_over_depth_is_the_ramp_at_mid_depth(ramp):
    _, _, image, matrix = ramp
    polydata = sphere()
    points, normals = radial(polydata)
    values = texture.sample_along_normals(polydata, image, matrix, depth_range_mm=(-4.0, 0.0), step_mm=0.5,
                                          reducer="mean")
    # Mean of A + B (x + d n_x) over d evenly spaced in [-4, 0] is its value at d = -2.
    expected = A + B * (points[:, 0] - 2.0 * normals[:, 0])
    assert np.max(np.abs(values - expected) / np.abs(expected)) < 1e-6
    # Computed normals (no normals array, reversed triangle winding) still point outwards: same answer
    # to within the discretisation of the vertex normals.
    for reverse in (False, True):
        recomputed = texture.sample_along_normals(without_normals(polydata, reverse), image, matrix, (-4.0, 0.0))
        assert np.max(np.abs(recomputed - expected) / np.abs(expected)) < 1e-4


def test_max_and_min_pick_the_extremes_along_the_normal(ramp):
    _, _, image, matrix = ramp
    polydata = sphere()
    points, normals = radial(polydata)
    depth = -4.0
    # Along d in [-4, 0] the ramp A + B (x + d n_x) is extreme at one of the two ends.
    at_surface = A + B * points[:, 0]
    at_depth = A + B * (points[:, 0] + depth * normals[:, 0])
    maximum = texture.sample_along_normals(polydata, image, matrix, (depth, 0.0), reducer="max")
    minimum = texture.sample_along_normals(polydata, image, matrix, (depth, 0.0), reducer="min")
    np.testing.assert_allclose(maximum, np.maximum(at_surface, at_depth), rtol=1e-6)
    np.testing.assert_allclose(minimum, np.minimum(at_surface, at_depth), rtol=1e-6)
    # On the +x side (n_x > 0) going inwards lowers x: the max is on the surface, the min 4 mm deep.
    right = normals[:, 0] > 0.5
    np.testing.assert_allclose(maximum[right], at_surface[right], rtol=1e-6)
    np.testing.assert_allclose(minimum[right], at_depth[right], rtol=1e-6)


def test_outward_normals_are_fixed_whatever_the_input():
    polydata = sphere(resolution=32)
    points, exact = radial(polydata)
    inward = vtk.vtkReverseSense()  # flips both the winding and the stored normals
    inward.SetInputData(polydata)
    inward.ReverseCellsOn()
    inward.ReverseNormalsOn()
    inward.Update()
    for candidate in (polydata, inward.GetOutput(), without_normals(polydata),
                      without_normals(polydata, reverse_winding=True)):
        normals = texture.outward_normals(candidate)
        assert np.all(np.einsum("ij,ij->i", normals, exact) > 0.99)
    # Two separate spheres, one of them inside-out: each piece is oriented on its own.
    second = vtk.vtkReverseSense()
    second.SetInputData(without_normals(sphere(CENTER + [40.0, 0.0, 0.0], 8.0, 24)))
    second.ReverseCellsOn()
    append = vtk.vtkAppendPolyData()
    append.AddInputData(without_normals(polydata))
    append.AddInputConnection(second.GetOutputPort())
    append.Update()
    both = append.GetOutput()
    normals = texture.outward_normals(both)
    both_points = surfaces.points_array(both)
    centers = np.where(np.arange(len(both_points))[:, None] < len(points), CENTER, CENTER + [40.0, 0.0, 0.0])
    assert np.all(np.einsum("ij,ij->i", normals, both_points - centers) > 0)


def test_points_outside_the_image_are_nan_and_counted(scene):
    # Axis-aligned RAS grid, x from 0 to 39 mm; a sphere centred on the last voxel plane x = 39 mm.
    image = np.broadcast_to(A + B * np.arange(40.0), (30, 35, 40)).copy()
    matrix = np.eye(4)
    matrix[:3, 3] = (0.0, -10.0, -10.0)
    center = np.array([39.0, 7.0, 5.0])
    polydata = sphere(center, 6.0, 48)
    points, normals = radial(polydata, center, 6.0)
    for depth_range in ((0.0, 0.0), (-4.0, 0.0)):
        values = texture.sample_along_normals(polydata, image, matrix, depth_range)
        # For n_x > 0 every sample x = 39 + (6 + d) n_x lies beyond the last voxel centre.
        outside = points[:, 0] > 39.0 + 1e-6
        np.testing.assert_array_equal(np.isnan(values), outside)
        assert 0 < outside.sum() < len(points)
    # Partly outside samples are ignored, not clamped: the mean uses the inside ones only.
    values = texture.sample_along_normals(polydata, image, matrix, (-4.0, 4.0), step_mm=1.0)
    left = normals[:, 0] < -0.5
    np.testing.assert_allclose(values[left], A + B * points[left, 0], rtol=1e-9)  # symmetric range: mid = 0


def test_texture_model_sets_scalars_display_and_stats(ramp):
    scene, volume, _, _ = ramp
    polydata = sphere()
    points, _ = radial(polydata)
    model = surfaces.model_from_polydata(scene, polydata, "ball")
    stats = texture.texture_model(scene, model, volume, depth_range_mm=(0.0, 0.0), colormap="iron")
    expected = A + B * points[:, 0]
    values = texture.texture_values(model.GetPolyData())
    np.testing.assert_allclose(values, expected, rtol=1e-6)  # float32 storage
    assert stats.array_name == texture.TEXTURE_ARRAY
    assert (stats.n_points, stats.n_outside) == (len(points), 0)
    assert stats.mean == pytest.approx(values.mean(), rel=1e-6)
    assert stats.min == pytest.approx(expected.min(), rel=1e-6)
    assert stats.max == pytest.approx(expected.max(), rel=1e-6)
    assert stats.scalar_range == pytest.approx(tuple(np.percentile(values, [2, 98])), rel=1e-6)
    display = model.GetDisplayNode()
    assert display.GetScalarVisibility()
    assert display.GetActiveScalarName() == texture.TEXTURE_ARRAY
    assert display.GetColorNodeID() == "vtkMRMLColorTableNodeIron" == stats.color_node_id
    assert display.GetScalarRangeFlag() == slicer.vtkMRMLDisplayNode.UseManualScalarRange
    assert display.GetScalarRange() == pytest.approx(stats.scalar_range)
    assert model.GetPolyData().GetPointData().GetScalars().GetName() == texture.TEXTURE_ARRAY

    # A linear transform on the model moves its surface in the world: the samples follow it.
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 5.0)
    transform.SetMatrixTransformToParent(shift)
    model.SetAndObserveTransformNodeID(transform.GetID())
    stats = texture.texture_model(scene, model, volume, (0.0, 0.0), name="shifted", scalar_range=(700, 900))
    np.testing.assert_allclose(texture.texture_values(model.GetPolyData(), "shifted"), expected + 5.0 * B, rtol=1e-6)
    assert stats.scalar_range == (700.0, 900.0)
    assert model.GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeGrey"


def test_texture_model_refuses_a_surface_outside_the_volume(ramp):
    scene, volume, _, _ = ramp
    model = surfaces.model_from_polydata(scene, sphere((500.0, 0.0, 0.0), 10.0, 16), "far away")
    with pytest.raises(MSDTError, match="does not overlap"):
        texture.texture_model(scene, model, volume)
    assert model.GetPolyData().GetPointData().GetArray(texture.TEXTURE_ARRAY) is None  # left as it was
    with pytest.raises(MSDTError, match="unknown colormap"):
        texture.texture_model(scene, model, volume, colormap="viridis-ish")


# ----------------------------------------------------------------------------------------------- real CT


def _stats(values):
    finite = values[np.isfinite(values)]
    return float(np.median(finite)), int(np.isnan(values).sum())


def test_bone_and_vertebra_surfaces_sample_bone_hu_on_real_ct(ct_twin):
    scene, result = ct_twin
    image = slicer.util.arrayFromVolume(result.volume_node)
    matrix = io.node_ijk_to_ras(result.volume_node)
    for polydata, floor in ((surfaces.segment_polydata(result.bone_segmentation, "bone"), 200.0),
                            (surfaces.segment_polydata(result.structures_segmentation, "vertebrae_L1"), 180.0)):
        inside = texture.sample_along_normals(polydata, image, matrix, (-2.0, 0.0), reducer="max")
        outside = texture.sample_along_normals(polydata, image, matrix, (1.0, 3.0), reducer="mean")
        median_inside, _ = _stats(inside)
        median_outside, _ = _stats(outside)
        # 3 mm voxels blur the cortex: its peak under the surface is bone (> 180-200 HU), above the
        # 120 HU bone threshold, while just outside lies soft tissue.
        assert median_inside > floor, median_inside
        assert median_outside < 120.0, median_outside
        both = np.isfinite(inside) & np.isfinite(outside)
        assert np.mean(inside[both] > outside[both]) > 0.9


def test_skin_surface_samples_the_threshold_and_soft_tissue_on_real_ct(scene, sample_dir, ct_twin):
    _, result = ct_twin
    volume = io.load_volume(scene, sample_dir / "example_ct.nii.gz")  # own scene: the shared twin stays as is
    skin = vtk.vtkPolyData()
    skin.DeepCopy(result.skin_model_node.GetPolyData())
    model = surfaces.model_from_polydata(scene, skin, "skin")
    stats = texture.texture_model(scene, model, volume, depth_range_mm=(-3.0, -1.0), reducer="mean")
    assert -200.0 < stats.median < 100.0, stats  # fat and muscle under the skin
    assert stats.n_outside == 0
    assert stats.n_points == skin.GetNumberOfPoints()
    # On the surface itself the CT crosses the -500 HU skin threshold that made it.
    median_on, outside_on = _stats(texture.sample_along_normals(skin, slicer.util.arrayFromVolume(volume),
                                                                io.node_ijk_to_ras(volume), (0.0, 0.0)))
    assert abs(median_on - result.skin["threshold"]) < 60.0, median_on
    assert outside_on > 0  # the field-of-view caps lie half a slice beyond the last voxel centres


# ----------------------------------------------------------------------------------------------- writers


def textured_sphere():
    polydata = sphere(resolution=32)
    points, _ = radial(polydata)
    values = A + B * points[:, 0]
    values[0] = np.nan
    texture.add_texture(polydata, values)
    return polydata, values


def test_vtp_round_trip_keeps_values_and_lps_flips_x_and_y(tmp_path):
    polydata, values = textured_sphere()
    for system, flip in (("RAS", (1, 1, 1)), ("LPS", (-1, -1, 1))):
        path = texture.write_textured(polydata, tmp_path / f"ball_{system}.vtp", coordinate_system=system)
        reader = vtk.vtkXMLPolyDataReader()
        reader.SetFileName(str(path))
        reader.Update()
        back = reader.GetOutput()
        np.testing.assert_array_equal(texture.texture_values(back), values.astype(np.float32))
        np.testing.assert_allclose(surfaces.points_array(back), surfaces.points_array(polydata) * flip, atol=1e-5)
        assert back.GetPointData().GetArray(texture.TEXTURE_ARRAY).GetDataType() == vtk.VTK_FLOAT


def test_ply_has_vertex_colours_monotonic_in_the_texture(tmp_path):
    polydata, values = textured_sphere()
    path = texture.write_textured(polydata, tmp_path / "ball.ply", scalar_range=(870.0, 890.0))
    reader = vtk.vtkPLYReader()
    reader.SetFileName(str(path))
    reader.Update()
    back = reader.GetOutput()
    assert back.GetNumberOfPoints() == polydata.GetNumberOfPoints()
    assert back.GetNumberOfPolys() == polydata.GetNumberOfPolys()
    colors = back.GetPointData().GetScalars()
    assert colors.GetDataType() == vtk.VTK_UNSIGNED_CHAR and colors.GetNumberOfComponents() >= 3
    rgb = numpy_support.vtk_to_numpy(colors)[:, :3].astype(int)
    assert tuple(rgb[0]) == (255, 0, 255)  # NaN
    finite = np.isfinite(values)
    grey, order = rgb[finite], np.argsort(values[finite])
    assert np.all(grey[:, 0] == grey[:, 1]) and np.all(grey[:, 1] == grey[:, 2])
    assert np.all(np.diff(grey[order, 0]) >= 0)
    # Values 856-904: clamped to black below 870 and to white above 890.
    assert grey[values[finite] <= 870.0, 0].max() == 0 and grey[values[finite] >= 890.0, 0].min() == 255
    np.testing.assert_allclose(surfaces.points_array(back), surfaces.points_array(polydata), atol=1e-5)


# ----------------------------------------------------------------------------------------------- render


def test_render_shows_the_ramp_left_to_right(tmp_path):
    polydata, _ = textured_sphere()
    size = (300, 300)
    textured = render.Surface(polydata, (1.0, 1.0, 1.0), scalars=texture.TEXTURE_ARRAY, colormap="grey")
    path = render.render_surfaces([textured], tmp_path / "ramp.png", size=size, background=(0.0, 0.0, 1.0))
    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    columns, rows, _ = reader.GetOutput().GetDimensions()
    rgb = numpy_support.vtk_to_numpy(reader.GetOutput().GetPointData().GetScalars()).reshape(rows, columns, -1)
    rgb = rgb[::-1, :, :3].astype(int)
    on_sphere = ~((rgb[..., 2] > 200) & (rgb[..., 0] < 40) & (rgb[..., 1] < 40))
    band = rgb[rows // 2 - 20: rows // 2 + 20]
    mask = on_sphere[rows // 2 - 20: rows // 2 + 20]
    used = np.flatnonzero(mask.sum(axis=0) == mask.shape[0])
    assert used.size > columns // 3
    brightness = np.array([band[:, c, 0].mean() for c in used])
    # Posterior view: patient right (+x, the bright end of the ramp) is on the image right.
    third = used.size // 3
    assert brightness[-third:].mean() > brightness[:third].mean() + 80
    assert np.corrcoef(used, brightness)[0, 1] > 0.9
    # The colour map is used: "iron" runs red to yellow, so the same sphere has (almost) no blue.
    iron = render.Surface(polydata, (1.0, 1.0, 1.0), scalars=texture.TEXTURE_ARRAY, colormap="iron")
    path = render.render_surfaces([iron], tmp_path / "iron.png", size=size, background=(0.0, 0.0, 1.0))
    reader.SetFileName(str(path))
    reader.Update()
    rgb = numpy_support.vtk_to_numpy(reader.GetOutput().GetPointData().GetScalars()).reshape(rows, columns, -1)
    sphere_pixels = rgb[::-1, :, :3].astype(int)[rows // 2 - 20: rows // 2 + 20][mask]
    assert np.median(sphere_pixels[:, 0]) > 150 and np.median(sphere_pixels[:, 2]) < 60


def test_render_scalar_colouring_rejects_bad_input(tmp_path):
    polydata, _ = textured_sphere()
    with pytest.raises(MSDTError, match="no point array 'missing'"):
        render.render_surfaces([render.Surface(polydata, (1, 1, 1), scalars="missing")], tmp_path / "x.png")
    with pytest.raises(MSDTError, match="unknown colormap"):
        render.render_surfaces([render.Surface(polydata, (1, 1, 1), scalars=texture.TEXTURE_ARRAY, colormap="jet2")],
                               tmp_path / "x.png")
    with pytest.raises(MSDTError, match="scalar_range"):
        render.render_surfaces([render.Surface(polydata, (1, 1, 1), scalars=texture.TEXTURE_ARRAY,
                                               scalar_range=(5, 5))], tmp_path / "x.png")


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_input_raises_msdt_error_with_a_clear_message(ramp, tmp_path):
    _, _, image, matrix = ramp
    polydata = sphere(resolution=16)
    with pytest.raises(MSDTError, match="empty"):
        texture.sample_along_normals(vtk.vtkPolyData(), image, matrix)
    with pytest.raises(MSDTError, match="3D array"):
        texture.sample_along_normals(polydata, image[0], matrix)
    with pytest.raises(MSDTError, match="min <= max"):
        texture.sample_along_normals(polydata, image, matrix, depth_range_mm=(0.0, -3.0))
    with pytest.raises(MSDTError, match="unknown reducer 'median'"):
        texture.sample_along_normals(polydata, image, matrix, reducer="median")
    with pytest.raises(MSDTError, match="step_mm"):
        texture.sample_along_normals(polydata, image, matrix, step_mm=0.0)
    with pytest.raises(MSDTError, match="4x4"):
        texture.sample_along_normals(polydata, image, np.eye(3))
    with pytest.raises(MSDTError, match="one value per point"):
        texture.add_texture(polydata, [1.0, 2.0])
    with pytest.raises(MSDTError, match="no point array"):
        texture.write_textured(polydata, tmp_path / "x.ply")
    texture.add_texture(polydata, np.zeros(polydata.GetNumberOfPoints()))
    with pytest.raises(MSDTError, match="use .vtp or .ply"):
        texture.write_textured(polydata, tmp_path / "x.stl")
    with pytest.raises(MSDTError, match="RAS or LPS"):
        texture.write_textured(polydata, tmp_path / "x.vtp", coordinate_system="XYZ")
