"""Offscreen rendering: pictures are read back and checked for where things land, not just that a file exists."""

import os

# Must precede any vtk import: without an EGL window VTK segfaults on a machine with no display.
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from MSDTLib import render  # noqa: E402
from MSDTLib.render import Point, Surface  # noqa: E402

SIZE = (300, 300)


def read_png(path) -> np.ndarray:
    """PNG as (rows, columns, 3) uint8 with row 0 at the top of the picture."""
    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    columns, rows, _ = image.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return scalars.reshape(rows, columns, -1)[::-1, :, :3]


def sphere(center, radius) -> vtk.vtkPolyData:
    source = vtk.vtkSphereSource()
    source.SetCenter(*center)
    source.SetRadius(radius)
    source.SetThetaResolution(48)
    source.SetPhiResolution(32)
    source.Update()
    return source.GetOutput()


def colour_mask(rgb: np.ndarray, channel: int, low: int = 60) -> np.ndarray:
    """Pixels where ``channel`` clearly dominates (a shaded pure red, green or blue object)."""
    values = rgb.astype(int)
    others = [c for c in range(3) if c != channel]
    return (values[..., channel] > 80) & np.all(values[..., others] < values[..., [channel]] - low, axis=-1)


def centroid(mask: np.ndarray, min_pixels: int = 20) -> tuple[float, float]:
    rows, columns = np.nonzero(mask)
    assert rows.size >= min_pixels, "object not visible"
    return rows.mean(), columns.mean()


RED_INFERIOR = Surface(sphere((0, 0, 0), 50), (1.0, 0.0, 0.0), name="red")
GREEN_SUPERIOR = Surface(sphere((0, 0, 120), 50), (0.0, 1.0, 0.0), name="green")


def test_posterior_view_puts_superior_up_and_background_white(tmp_path):
    out = render.render_surfaces([RED_INFERIOR, GREEN_SUPERIOR], tmp_path / "posterior.png", size=SIZE)
    assert out == tmp_path / "posterior.png"
    rgb = read_png(out)
    assert rgb.shape == (SIZE[1], SIZE[0], 3)
    red_row, _ = centroid(colour_mask(rgb, 0))
    green_row, _ = centroid(colour_mask(rgb, 1))
    assert red_row > SIZE[1] / 2 > green_row
    for corner in (rgb[0, 0], rgb[0, -1], rgb[-1, 0], rgb[-1, -1]):
        assert tuple(corner) == (255, 255, 255)


def test_posterior_view_shows_patient_right_on_image_right(tmp_path):
    right = Surface(sphere((80, 0, 0), 30), (1.0, 0.0, 0.0))
    left = Surface(sphere((-80, 0, 0), 30), (0.0, 0.0, 1.0))
    rgb = read_png(render.render_surfaces([right, left], tmp_path / "p.png", size=SIZE))
    assert centroid(colour_mask(rgb, 0))[1] > SIZE[0] / 2 > centroid(colour_mask(rgb, 2))[1]
    rgb = read_png(render.render_surfaces([right, left], tmp_path / "a.png", view="anterior", size=SIZE))
    assert centroid(colour_mask(rgb, 0))[1] < SIZE[0] / 2 < centroid(colour_mask(rgb, 2))[1]


def test_left_and_right_views_place_anterior_correctly(tmp_path):
    anterior = Surface(sphere((0, 80, 0), 30), (1.0, 0.0, 0.0))
    posterior = Surface(sphere((0, -80, 0), 30), (0.0, 1.0, 0.0))
    # Camera at patient left (-x) looking towards +x with superior up: anterior is on the image left.
    rgb = read_png(render.render_surfaces([anterior, posterior], tmp_path / "l.png", view="left", size=SIZE))
    assert centroid(colour_mask(rgb, 0))[1] < SIZE[0] / 2 < centroid(colour_mask(rgb, 1))[1]
    rgb = read_png(render.render_surfaces([anterior, posterior], tmp_path / "r.png", view="right", size=SIZE))
    assert centroid(colour_mask(rgb, 0))[1] > SIZE[0] / 2 > centroid(colour_mask(rgb, 1))[1]
    # From above, anterior is up.
    rgb = read_png(render.render_surfaces([anterior, posterior], tmp_path / "s.png", view="superior", size=SIZE))
    assert centroid(colour_mask(rgb, 0))[0] < SIZE[1] / 2 < centroid(colour_mask(rgb, 1))[0]


def test_landmark_point_draws_a_dot_of_its_colour_at_its_place(tmp_path):
    grey = Surface(sphere((0, 0, 0), 50), (0.7, 0.7, 0.7))
    # Behind the sphere (posterior, facing the camera) and to patient right.
    point = Point((30, -60, 0), (0.0, 0.0, 1.0), radius_mm=6.0, label="L1")
    rgb = read_png(render.render_surfaces([grey], tmp_path / "pt.png", points=[point], size=SIZE))
    blue = colour_mask(rgb, 2)
    assert blue.sum() > 20
    row, column = centroid(blue)
    assert column > SIZE[0] / 2
    assert abs(row - SIZE[1] / 2) < SIZE[1] * 0.1
    no_point = read_png(render.render_surfaces([grey], tmp_path / "nopt.png", size=SIZE))
    assert colour_mask(no_point, 2).sum() == 0


def test_translucent_skin_shows_the_object_inside(tmp_path):
    skin = Surface(sphere((0, 0, 0), 120), (0.9, 0.8, 0.7), opacity=0.3, name="skin")
    spine = Surface(sphere((0, 0, 0), 40), (1.0, 0.0, 0.0), name="spine")
    rgb = read_png(render.render_surfaces([skin, spine], tmp_path / "skin.png", size=SIZE, title="skin"))
    r, g, b = rgb[SIZE[1] // 2, SIZE[0] // 2].astype(int)
    assert r > g + 60 and r > b + 60, (r, g, b)
    opaque = Surface(skin.polydata, skin.color, opacity=1.0)
    r, g, b = read_png(render.render_surfaces([opaque, spine], tmp_path / "opaque.png", size=SIZE))[
        SIZE[1] // 2, SIZE[0] // 2].astype(int)
    assert r - g < 40, "an opaque skin must hide the inside"


def test_render_surfaces_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown view"):
        render.render_surfaces([RED_INFERIOR], tmp_path / "x.png", view="lateral")
    with pytest.raises(ValueError, match="nothing to render"):
        render.render_surfaces([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="vtkPolyData"):
        render.render_surfaces([Surface("not polydata", (1, 0, 0))], tmp_path / "x.png")
    with pytest.raises(ValueError, match="colour"):
        render.render_surfaces([Surface(RED_INFERIOR.polydata, (255, 0, 0))], tmp_path / "x.png")
    with pytest.raises(ValueError, match="size"):
        render.render_surfaces([RED_INFERIOR], tmp_path / "x.png", size=(0, 10))


# ----------------------------------------------------------------------------------------------- slices

# LPS-stored volume (i to patient Left, j to Posterior, k to Superior) with 1 x 1 x 3 mm voxels.
SHAPE_KJI = (20, 40, 30)
LPS = np.diag([-1.0, -1.0, 3.0, 1.0])
LPS[:3, 3] = (10.0, 20.0, -30.0)


def synthetic():
    volume = np.zeros(SHAPE_KJI, dtype=np.int16)
    volume[5:15, 10:30, 8:22] = 1000  # bright box
    labels = np.zeros(SHAPE_KJI, dtype=np.uint8)
    labels[15:19, 15:25, 10:20] = 1  # superior (high k)
    labels[6:10, 2:8, 10:20] = 2  # anterior (low j, since j runs to posterior)
    return volume, labels


def test_sagittal_slice_orientation_aspect_and_overlay(tmp_path):
    volume, labels = synthetic()
    out = render.render_slice(volume, LPS, tmp_path / "sag.png", labels=labels,
                              label_colors={1: (1.0, 0.0, 0.0), 2: (0.0, 1.0, 0.0)}, orientation="sagittal")
    rgb = read_png(out)
    # Square pixels at the 1 mm in-plane spacing: 40 mm A-P wide, 20 x 3 = 60 mm S-I tall.
    assert rgb.shape == (60, 40, 3)
    red = colour_mask(rgb, 0, low=40)
    green = colour_mask(rgb, 1, low=40)
    red_row, _ = centroid(red)
    _, green_column = centroid(green)
    assert red_row < 30, "superior label must be in the upper half"
    assert green_column < 20, "anterior label must be on the left"
    # Label 1 covers k 15..18 -> rows 3..14 (k increases upwards), j 15..24 -> columns 15..24.
    inside = rgb[8, 20].astype(int)
    assert inside[0] > 100 and inside[1] < 30 and inside[2] < 30
    assert not red[40:, :].any(), "nothing red in the inferior part"


def test_overlay_blends_with_opacity_and_outline_is_opaque(tmp_path):
    volume, labels = synthetic()
    volume[:] = 1000  # uniform white under the labels
    rgb = read_png(render.render_slice(volume, LPS, tmp_path / "o.png", labels=labels, window=(500, 200),
                                       label_colors={1: (1.0, 0.0, 0.0)}, opacity=0.5))
    inside = rgb[8, 20].astype(int)
    assert inside[0] == 255 and abs(inside[1] - 128) <= 2 and abs(inside[2] - 128) <= 2
    edge = rgb[3, 20].astype(int)  # top row of label 1 (k = 18)
    assert tuple(edge) == (255, 0, 0)
    assert tuple(rgb[-1, -1]) == (255, 255, 255)  # window (500, 200): 1000 is white


def test_missing_label_colours_are_deterministic_and_distinct(tmp_path):
    volume, labels = synthetic()
    a = read_png(render.render_slice(volume, LPS, tmp_path / "a.png", labels=labels))
    b = read_png(render.render_slice(volume, LPS, tmp_path / "b.png", labels=labels))
    assert np.array_equal(a, b)
    assert render.label_color(1) != render.label_color(2)
    assert tuple(a[8, 20]) != tuple(a[35, 5])


def test_axial_and_coronal_put_patient_right_on_the_left(tmp_path):
    volume = np.zeros(SHAPE_KJI, dtype=np.int16)
    labels = np.zeros(SHAPE_KJI, dtype=np.uint8)
    labels[8:12, 5:10, 0:6] = 1  # low i: patient right (i runs to the left); low j: anterior
    labels[8:12, 30:35, 24:30] = 2  # high i: patient left; high j: posterior
    colors = {1: (1.0, 0.0, 0.0), 2: (0.0, 1.0, 0.0)}
    rgb = read_png(render.render_slice(volume, LPS, tmp_path / "ax.png", labels=labels, label_colors=colors,
                                       orientation="axial"))
    assert rgb.shape == (40, 30, 3)  # rows A-P (j), columns R-L (i), both 1 mm
    red_row, red_column = centroid(colour_mask(rgb, 0, low=40))
    green_row, green_column = centroid(colour_mask(rgb, 1, low=40))
    assert red_column < green_column, "patient right on the image left"
    assert red_row < green_row, "anterior up"
    rgb = read_png(render.render_slice(volume, LPS, tmp_path / "cor.png", labels=labels, label_colors=colors,
                                       orientation="coronal", index=7))
    assert rgb.shape == (60, 30, 3)
    _, red_column = centroid(colour_mask(rgb, 0, low=40))
    assert red_column < 15


def test_permuted_axes_choose_the_right_plane(tmp_path):
    # i runs Anterior, j Superior (2 mm), k Right: the sagittal plane is a k slice, superior is along j.
    matrix = np.zeros((4, 4))
    matrix[:3, :3] = [[0, 0, 1], [1, 0, 0], [0, 2, 0]]
    matrix[3, 3] = 1
    volume = np.zeros((10, 30, 20), dtype=np.float32)  # (k, j, i)
    labels = np.zeros(volume.shape, dtype=np.int32)
    labels[:, 25:29, 8:12] = 1  # high j: superior
    labels[:, 10:14, 16:20] = 2  # high i: anterior
    rgb = read_png(render.render_slice(volume, matrix, tmp_path / "perm.png", labels=labels,
                                       label_colors={1: (1, 0, 0), 2: (0, 1, 0)}))
    assert rgb.shape == (60, 20, 3)  # 30 x 2 mm tall, 20 x 1 mm wide
    assert centroid(colour_mask(rgb, 0, low=40))[0] < 30
    assert centroid(colour_mask(rgb, 1, low=40))[1] < 10


def test_oblique_matrix_still_orients_the_slice(tmp_path):
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([-1.0, -1.0, 3.0])
    volume, labels = synthetic()
    rgb = read_png(render.render_slice(volume, matrix, tmp_path / "obl.png", labels=labels,
                                       label_colors={1: (1, 0, 0), 2: (0, 1, 0)}))
    assert rgb.shape == (60, 40, 3)
    assert centroid(colour_mask(rgb, 0, low=40))[0] < 30
    assert centroid(colour_mask(rgb, 1, low=40))[1] < 20


def test_points_near_the_slice_are_drawn_and_far_ones_are_not(tmp_path):
    volume, _ = synthetic()
    index = 15
    near = Point(tuple((LPS @ [index + 1, 20, 10, 1])[:3]), (0.0, 0.0, 1.0), radius_mm=2.0)
    far = Point(tuple((LPS @ [index + 5, 5, 3, 1])[:3]), (0.0, 1.0, 0.0), radius_mm=2.0)
    rgb = read_png(render.render_slice(volume, LPS, tmp_path / "pts.png", index=index, points=[near, far]))
    blue = colour_mask(rgb, 2)
    row, column = centroid(blue, min_pixels=9)  # a 2 mm dot at 1 mm pixels
    # j = 20 -> column 20; k = 10 -> row (19 - 10) * 3 + 1 = 28.
    assert abs(column - 20) <= 1 and abs(row - 28) <= 1
    assert not colour_mask(rgb, 1).any()


def test_default_window_and_index(tmp_path):
    volume, labels = synthetic()
    rgb = read_png(render.render_slice(volume, LPS, tmp_path / "w.png"))
    # Middle slice i = 15 cuts the box: box white, outside black with the 1-99 % default window.
    assert tuple(rgb[30, 20]) == (255, 255, 255)
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    # Default index with labels is the middle of the labelled i-extent (2..4 -> 3): the label shows.
    only = np.zeros_like(labels)
    only[15:19, 15:25, 2:5] = 1
    rgb = read_png(render.render_slice(volume, LPS, tmp_path / "l.png", labels=only, label_colors={1: (1, 0, 0)}))
    assert colour_mask(rgb, 0, low=40).any()


def test_render_slice_rejects_bad_input(tmp_path):
    volume, labels = synthetic()
    with pytest.raises(ValueError, match="3D"):
        render.render_slice(volume[0], LPS, tmp_path / "x.png")
    with pytest.raises(ValueError, match="orientation"):
        render.render_slice(volume, LPS, tmp_path / "x.png", orientation="oblique")
    with pytest.raises(ValueError, match="4x4"):
        render.render_slice(volume, np.eye(3), tmp_path / "x.png")
    with pytest.raises(ValueError, match="singular"):
        render.render_slice(volume, np.diag([1.0, 1.0, 0.0, 1.0]), tmp_path / "x.png")
    with pytest.raises(ValueError, match="labels shape"):
        render.render_slice(volume, LPS, tmp_path / "x.png", labels=labels[:, :, :5])
    with pytest.raises(ValueError, match="index"):
        render.render_slice(volume, LPS, tmp_path / "x.png", index=30)
    with pytest.raises(ValueError, match="window width"):
        render.render_slice(volume, LPS, tmp_path / "x.png", window=(0, 0))
    with pytest.raises(ValueError, match="opacity"):
        render.render_slice(volume, LPS, tmp_path / "x.png", labels=labels, opacity=2)
