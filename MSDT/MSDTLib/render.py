"""Offscreen pictures of the twin: 3D surface snapshots and 2D slices with label overlays, written as PNG.

Everything is plain VTK and numpy (no MRML display managers), so it runs headless. Coordinates are RAS
millimetres throughout (x to patient Right, y to Anterior, z to Superior); colours are RGB floats in 0-1.

Offscreen OpenGL needs ``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow`` set before vtk is first imported
(without it a render window segfaults on a machine with no display); this module sets it with ``setdefault``
so an explicit choice made earlier by the caller still wins.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np  # noqa: E402
import vtk  # noqa: E402
from scipy import ndimage  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from .errors import MSDTError  # noqa: E402

Color = tuple[float, float, float]


@dataclass
class Surface:
    """One surface to draw: ``polydata`` in RAS mm, ``color`` RGB 0-1, ``opacity`` 0 (invisible) to 1 (opaque).

    With ``scalars`` (the name of a one-component point array, e.g. a grey-level texture from
    :mod:`MSDTLib.texture`) the surface is coloured by that array instead of ``color``: ``scalar_range``
    (low, high) in the array's units is stretched over ``colormap`` (a name of ``texture.COLORMAPS``, e.g.
    "grey" or "iron", or a vtkScalarsToColors); by default the range is the 2nd-98th percentile of the values.
    """

    polydata: vtk.vtkPolyData
    color: Color
    opacity: float = 1.0
    name: str = ""
    scalars: str | None = None
    scalar_range: tuple[float, float] | None = None
    colormap: object = "grey"


@dataclass
class Point:
    """A landmark: ``xyz_ras`` in mm, ``color`` RGB 0-1, drawn as a sphere (3D) or dot (2D) of ``radius_mm``."""

    xyz_ras: Sequence[float]
    color: Color
    radius_mm: float = 3.0
    label: str = ""


# Camera placement per view, in RAS: (direction from the focal point to the camera, view-up).
VIEWS: dict[str, tuple[Color, Color]] = {
    "posterior": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),  # behind the patient, patient right on image right
    "anterior": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),  # facing the patient, patient right on image left
    "left": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),  # at patient left, anterior on image left
    "right": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),  # at patient right, anterior on image right
    "superior": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),  # above the head looking down, anterior up
    "inferior": ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),  # below the feet looking up, anterior up
}

# Slice orientations: (RAS axis normal to the plane, RAS direction shown up, RAS direction shown to the right).
ORIENTATIONS: dict[str, tuple[int, Color, Color]] = {
    "sagittal": (0, (0.0, 0.0, 1.0), (0.0, -1.0, 0.0)),  # superior up, anterior on the left
    "coronal": (1, (0.0, 0.0, 1.0), (-1.0, 0.0, 0.0)),  # superior up, patient right on the left
    "axial": (2, (0.0, 1.0, 0.0), (-1.0, 0.0, 0.0)),  # anterior up, patient right on the left
}


# ----------------------------------------------------------------------------------------------- helpers


def _check_color(color, what: str) -> Color:
    """Return ``color`` as three floats in 0-1, or raise MSDTError naming ``what``."""
    try:
        rgb = tuple(float(c) for c in color)
    except TypeError as exc:
        raise MSDTError(f"{what}: colour must be three numbers in 0-1, got {color!r}") from exc
    if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
        raise MSDTError(f"{what}: colour must be three numbers in 0-1, got {color!r}")
    return rgb  # type: ignore[return-value]


def _check_size(size) -> tuple[int, int]:
    """Return an image size (width, height) in pixels as two positive ints."""
    try:
        width, height = (int(s) for s in size)
    except (TypeError, ValueError) as exc:
        raise MSDTError(f"size must be (width, height) in pixels, got {size!r}") from exc
    if width <= 0 or height <= 0:
        raise MSDTError(f"size must be positive, got {size!r}")
    return width, height


def _as_point(point, index: int) -> Point:
    """Accept a ``Point`` or a bare RAS triple (drawn red); validate coordinates, colour and radius."""
    if not isinstance(point, Point):
        point = Point(tuple(point), (1.0, 0.0, 0.0))
    xyz = np.asarray(point.xyz_ras, dtype=float)
    if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
        raise MSDTError(f"point {index}: xyz_ras must be three finite RAS coordinates in mm, got {point.xyz_ras!r}")
    if not point.radius_mm > 0:
        raise MSDTError(f"point {index}: radius_mm must be positive, got {point.radius_mm!r}")
    return Point(tuple(xyz), _check_color(point.color, f"point {index}"), float(point.radius_mm), point.label)


def label_color(value: int) -> Color:
    """A deterministic, well-spread RGB colour (0-1) for label ``value`` (golden-ratio hue steps)."""
    hue = (int(value) * 0.618033988749895) % 1.0
    return colorsys.hsv_to_rgb(hue, 0.75, 1.0)


def _write_rgb_png(rgb: np.ndarray, path: Path) -> Path:
    """Write an (rows, columns, 3) uint8 array, row 0 at the top, as a PNG through vtkPNGWriter."""
    rows, columns = rgb.shape[:2]
    image = vtk.vtkImageData()
    image.SetDimensions(columns, rows, 1)
    # VTK images start at the bottom-left corner: flip so that row 0 ends up at the top of the picture.
    flat = np.ascontiguousarray(rgb[::-1]).reshape(-1, 3)
    scalars = numpy_support.numpy_to_vtk(flat, deep=1, array_type=vtk.VTK_UNSIGNED_CHAR)
    scalars.SetName("rgb")
    image.GetPointData().SetScalars(scalars)
    return _write_png(image, path)


def _write_png(image: vtk.vtkImageData, path: Path) -> Path:
    """Write a vtkImageData as PNG at ``path`` (parent folders created); raise MSDTError if writing fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(image)
    writer.Write()
    if writer.GetErrorCode() or not path.is_file():
        raise MSDTError(f"could not write PNG {path}")
    return path


# ----------------------------------------------------------------------------------------------- 3D


def _surface_actor(surface: Surface, index: int) -> vtk.vtkActor | None:
    """Actor with smooth (Gouraud) shading from computed point normals; None for an empty polydata."""
    polydata = surface.polydata
    if not isinstance(polydata, vtk.vtkPolyData):
        raise MSDTError(f"surface {index} ({surface.name!r}): polydata must be a vtkPolyData, "
                        f"got {type(polydata).__name__}")
    if polydata.GetNumberOfPoints() == 0:
        return None
    opacity = float(surface.opacity)
    if not 0.0 <= opacity <= 1.0:
        raise MSDTError(f"surface {index} ({surface.name!r}): opacity must be in 0-1, got {surface.opacity!r}")
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputData(polydata)
    normals.SplittingOff()  # one normal per point: smooth shading across sharp-ish marching-cubes edges
    normals.ConsistencyOn()
    normals.AutoOrientNormalsOff()
    normals.Update()
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(normals.GetOutput())
    if surface.scalars is None:
        mapper.ScalarVisibilityOff()  # colour comes from the Surface, not from any scalars on the polydata
    else:
        _color_by_scalars(mapper, polydata, surface, index)
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    prop = actor.GetProperty()
    prop.SetColor(*_check_color(surface.color, f"surface {index} ({surface.name!r})"))
    prop.SetOpacity(opacity)
    prop.SetInterpolationToGouraud()
    prop.SetSpecular(0.2)
    prop.SetSpecularPower(20.0)
    if opacity < 1.0:
        prop.BackfaceCullingOff()
    return actor


def _color_by_scalars(mapper: vtk.vtkPolyDataMapper, polydata: vtk.vtkPolyData, surface: Surface, index: int) -> None:
    """Colour ``mapper`` by the point array ``surface.scalars`` through ``surface.colormap``."""
    from .texture import lookup_table, robust_range  # MRML colour tables; only needed for scalar colouring

    what = f"surface {index} ({surface.name!r})"
    array = polydata.GetPointData().GetArray(surface.scalars)
    if array is None:
        point_data = polydata.GetPointData()
        names = [point_data.GetArrayName(i) for i in range(point_data.GetNumberOfArrays())]
        raise MSDTError(f"{what}: no point array {surface.scalars!r} to colour by; arrays: {names}")
    if array.GetNumberOfComponents() != 1:
        raise MSDTError(f"{what}: point array {surface.scalars!r} has {array.GetNumberOfComponents()} components;"
                        " scalar colouring needs one")
    if surface.scalar_range is None:
        scalar_range = robust_range(numpy_support.vtk_to_numpy(array))
    else:
        scalar_range = surface.scalar_range
    try:
        table = lookup_table(surface.colormap, scalar_range)
    except MSDTError as error:
        raise MSDTError(f"{what}: {error}") from None
    mapper.ScalarVisibilityOn()
    mapper.SetScalarModeToUsePointFieldData()
    mapper.SelectColorArray(surface.scalars)
    mapper.SetColorModeToMapScalars()
    mapper.SetLookupTable(table)
    mapper.UseLookupTableScalarRangeOn()
    mapper.InterpolateScalarsBeforeMappingOn()  # colours follow the values across each triangle


def _point_actors(point: Point) -> list[vtk.vtkProp]:
    """A shaded sphere of ``point.radius_mm`` at the point, plus its label as camera-facing text if any."""
    sphere = vtk.vtkSphereSource()
    sphere.SetCenter(*point.xyz_ras)
    sphere.SetRadius(point.radius_mm)
    sphere.SetThetaResolution(24)
    sphere.SetPhiResolution(16)
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputConnection(sphere.GetOutputPort())
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*point.color)
    actor.GetProperty().SetInterpolationToGouraud()
    actors: list[vtk.vtkProp] = [actor]
    if point.label:
        text = vtk.vtkBillboardTextActor3D()
        text.SetInput(point.label)
        x, y, z = point.xyz_ras
        text.SetPosition(x, y, z + 1.5 * point.radius_mm)
        text.GetTextProperty().SetColor(*point.color)
        text.GetTextProperty().SetFontSize(16)
        text.GetTextProperty().BoldOn()
        text.GetTextProperty().SetJustificationToCentered()
        actors.append(text)
    return actors


def _union_bounds(bounds_list: list[tuple[float, ...]]) -> tuple[float, ...]:
    """Smallest (xmin, xmax, ymin, ymax, zmin, zmax) box in mm holding every box of ``bounds_list``."""
    array = np.asarray(bounds_list, dtype=float)
    return (array[:, 0].min(), array[:, 1].max(), array[:, 2].min(), array[:, 3].max(),
            array[:, 4].min(), array[:, 5].max())


def render_surfaces(surfaces: Sequence[Surface], path: str | Path, points: Sequence[Point] = (),
                    view: str = "posterior", size: tuple[int, int] = (900, 900),
                    background: Color = (1.0, 1.0, 1.0), title: str | None = None) -> Path:
    """Render surfaces (RAS mm) and landmark spheres offscreen from a standard view and write a PNG.

    ``view`` is one of ``VIEWS``: "posterior" puts the camera behind the patient (at -A) looking anteriorly with
    superior up, so patient right is on the image right; "anterior", "left", "right" likewise with superior up;
    "superior"/"inferior" look along the S axis with anterior up. The camera is fitted to the bounds of all
    non-empty surfaces (or of the points when there are no surfaces). Semi-transparent surfaces are
    composited with depth peeling, so a skin at opacity 0.3 still shows the spine inside. ``size`` is
    (width, height) in pixels, ``background`` an RGB colour 0-1, ``title`` optional text in the top-left
    corner. Returns the PNG path.
    """
    if view not in VIEWS:
        raise MSDTError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    width, height = _check_size(size)
    background = _check_color(background, "background")
    path = Path(path)

    renderer = vtk.vtkRenderer()
    renderer.SetBackground(*background)
    bounds: list[tuple[float, ...]] = []
    for index, surface in enumerate(surfaces):
        if not isinstance(surface, Surface):
            raise MSDTError(f"surface {index}: expected a render.Surface, got {type(surface).__name__}")
        actor = _surface_actor(surface, index)
        if actor is not None:
            renderer.AddActor(actor)
            bounds.append(actor.GetBounds())
    checked_points = [_as_point(point, index) for index, point in enumerate(points)]
    for point in checked_points:
        for actor in _point_actors(point):
            renderer.AddActor(actor)
    if not bounds:
        if not checked_points:
            raise MSDTError("nothing to render: no non-empty surface and no point")
        bounds = [(p.xyz_ras[0] - p.radius_mm, p.xyz_ras[0] + p.radius_mm, p.xyz_ras[1] - p.radius_mm,
                   p.xyz_ras[1] + p.radius_mm, p.xyz_ras[2] - p.radius_mm, p.xyz_ras[2] + p.radius_mm)
                  for p in checked_points]
    box = _union_bounds(bounds)

    if title:
        text = vtk.vtkTextActor()
        text.SetInput(title)
        prop = text.GetTextProperty()
        prop.SetFontSize(max(12, height // 40))
        prop.SetColor(*((0.0, 0.0, 0.0) if sum(background) > 1.5 else (1.0, 1.0, 1.0)))
        prop.SetVerticalJustificationToTop()
        text.SetPosition(10, height - 10)
        renderer.AddViewProp(text)

    light_kit = vtk.vtkLightKit()
    light_kit.AddLightsToRenderer(renderer)

    # Depth peeling: correct ordering of translucent surfaces (needs alpha bit planes, no multisampling).
    renderer.SetUseDepthPeeling(1)
    renderer.SetMaximumNumberOfPeels(50)
    renderer.SetOcclusionRatio(0.0)

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetAlphaBitPlanes(1)
    window.SetMultiSamples(0)
    window.SetSize(width, height)
    window.AddRenderer(renderer)
    try:
        camera = renderer.GetActiveCamera()
        to_camera, view_up = VIEWS[view]
        center = np.array([(box[0] + box[1]) / 2, (box[2] + box[3]) / 2, (box[4] + box[5]) / 2])
        camera.SetFocalPoint(*center)
        camera.SetPosition(*(center + np.asarray(to_camera)))
        camera.SetViewUp(*view_up)
        renderer.ResetCamera(*box)  # keeps the direction, moves the camera back until the box fits
        renderer.ResetCameraClippingRange(*box)
        window.Render()

        grabber = vtk.vtkWindowToImageFilter()
        grabber.SetInput(window)
        grabber.SetInputBufferTypeToRGB()
        grabber.ReadFrontBufferOff()
        grabber.Update()
        image = vtk.vtkImageData()
        image.DeepCopy(grabber.GetOutput())
    finally:
        window.Finalize()  # release the offscreen context now rather than at garbage collection
    return _write_png(image, path)


# ----------------------------------------------------------------------------------------------- 2D


def _plane_axes(directions: np.ndarray, orientation: str) -> tuple[int, int, int, bool, bool]:
    """Pick IJK axes for a slice: (normal, vertical, horizontal, flip vertical, flip horizontal).

    ``directions`` holds the unit RAS direction of IJK axis c in column c. The normal is the IJK axis closest to
    the RAS axis normal to the plane; of the other two, the assignment that best matches the display's up and
    right directions is chosen. A flip means increasing index runs against the display direction (for the
    vertical axis: image rows run top to bottom, so an axis pointing up is flipped).
    """
    ras_normal, up, right = ORIENTATIONS[orientation]
    normal = int(np.argmax(np.abs(directions[ras_normal, :])))
    a, b = (c for c in range(3) if c != normal)
    up_vec, right_vec = np.asarray(up), np.asarray(right)
    score_ab = abs(up_vec @ directions[:, a]) + abs(right_vec @ directions[:, b])
    score_ba = abs(up_vec @ directions[:, b]) + abs(right_vec @ directions[:, a])
    vertical, horizontal = (a, b) if score_ab >= score_ba else (b, a)
    flip_vertical = bool(up_vec @ directions[:, vertical] > 0)
    flip_horizontal = bool(right_vec @ directions[:, horizontal] < 0)
    return normal, vertical, horizontal, flip_vertical, flip_horizontal


def _window_to_gray(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map intensities to 0-255 floats: ``center - width/2`` is black, ``center + width/2`` white."""
    low = center - width / 2.0
    return np.clip((values.astype(float) - low) / width, 0.0, 1.0) * 255.0


def _default_window(volume: np.ndarray) -> tuple[float, float]:
    """(center, width) covering the 1st to 99th percentile of the finite voxel values.

    Large volumes are sampled with a regular stride (at most about two million voxels) to keep this fast.
    """
    flat = volume.reshape(-1)
    flat = flat[:: max(1, flat.size // 2_000_000)]
    finite = flat[np.isfinite(flat)] if np.issubdtype(flat.dtype, np.floating) else flat
    if finite.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(finite, [1.0, 99.0])
    if high <= low:  # flat image: any positive width gives a uniform grey level
        return float(low), 1.0
    return float(low + high) / 2.0, float(high - low)


def _disk(rgb: np.ndarray, row: float, column: float, radius_px: float, color: Color) -> None:
    """Paint a filled dot of ``radius_px`` with a 1-pixel dark ring into ``rgb`` (0-255 floats) in place."""
    rows, columns = rgb.shape[:2]
    rr, cc = np.ogrid[:rows, :columns]
    distance = np.hypot(rr - row, cc - column)
    rgb[distance <= radius_px + 1.0] = 0.0
    rgb[distance <= radius_px] = np.asarray(color) * 255.0


def render_slice(volume: np.ndarray, ijk_to_ras: np.ndarray, path: str | Path, labels: np.ndarray | None = None,
                 label_colors: Mapping[int, Color] | None = None, orientation: str = "sagittal",
                 index: int | None = None, window: tuple[float, float] | None = None, opacity: float = 0.45,
                 points: Sequence[Point] = (), pixel_size_mm: float | None = None) -> Path:
    """Write one voxel plane of ``volume`` as a radiological-convention PNG, labels overlaid, points marked.

    ``volume`` is indexed (k, j, i) like SimpleITK / ``slicer.util.arrayFromVolume``; ``ijk_to_ras`` is the 4x4
    matrix taking (i, j, k, 1) to RAS mm (voxel spacing = column norms of its 3x3 part). The slice is the
    voxel plane whose normal IJK axis is closest to the patient axis of ``orientation``: "sagittal" (normal
    R-L, shown superior up and anterior on the left), "coronal" (normal A-P, superior up, patient right on the
    left) or "axial" (normal S-I, anterior up, patient right on the left). For oblique volumes the picture is
    that nearest voxel plane, not a resampled true anatomical plane. ``index`` is the voxel index along that
    axis; by default the middle of the labelled extent (non-zero ``labels``), else the middle slice.

    The plane is resampled to square pixels of ``pixel_size_mm`` (default: the finer in-plane spacing) with
    linear interpolation for the image and nearest neighbour for labels. ``window`` = (center, width) in image
    units (e.g. (400, 1800) for CT bone); default 1st-99th percentile of the whole volume. ``labels`` (same
    shape as ``volume``, integer, 0 = background) are blended at ``opacity`` (0-1) in ``label_colors`` (RGB
    0-1 per label value; missing values get ``label_color(value)``) with outlines at full opacity. ``points``
    (``Point`` or RAS triples in mm) within 1.5 voxels of the plane are drawn as dots of their radius.
    Returns the PNG path.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise MSDTError(f"volume must be a 3D array indexed (k, j, i), got shape {volume.shape}")
    if min(volume.shape) == 0:
        raise MSDTError(f"volume is empty, shape {volume.shape}")
    if not (np.issubdtype(volume.dtype, np.number) or volume.dtype == bool):
        raise MSDTError(f"volume must be numeric, got dtype {volume.dtype}")
    matrix = np.asarray(ijk_to_ras, dtype=float)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise MSDTError(f"ijk_to_ras must be a finite 4x4 matrix, got shape {matrix.shape}")
    linear = matrix[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)  # mm per voxel along i, j, k
    if np.any(spacing <= 0) or abs(np.linalg.det(linear)) < 1e-12 * float(np.prod(spacing)):
        raise MSDTError("ijk_to_ras is singular: its 3x3 part must have three independent non-zero columns")
    if orientation not in ORIENTATIONS:
        raise MSDTError(f"unknown orientation {orientation!r}; expected one of {', '.join(ORIENTATIONS)}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != volume.shape:
            raise MSDTError(f"labels shape {labels.shape} differs from volume shape {volume.shape}")
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
            raise MSDTError(f"labels must be an integer array, got dtype {labels.dtype}")
    if not 0.0 <= float(opacity) <= 1.0:
        raise MSDTError(f"opacity must be in 0-1, got {opacity!r}")
    if window is None:
        center, width = _default_window(volume)
    else:
        try:
            center, width = (float(w) for w in window)
        except (TypeError, ValueError) as exc:
            raise MSDTError(f"window must be (center, width), got {window!r}") from exc
        if not width > 0:
            raise MSDTError(f"window width must be positive, got {width}")

    normal, vertical, horizontal, flip_v, flip_h = _plane_axes(linear / spacing, orientation)
    volume_ijk = volume.transpose(2, 1, 0)  # index [i, j, k]
    labels_ijk = labels.transpose(2, 1, 0) if labels is not None else None
    size_n = volume_ijk.shape[normal]
    if index is None:
        index = size_n // 2
        if labels_ijk is not None:
            other = tuple(c for c in range(3) if c != normal)
            occupied = np.flatnonzero(np.any(labels_ijk != 0, axis=other))
            if occupied.size:
                index = int(occupied[0] + occupied[-1]) // 2
    index = int(index)
    if not 0 <= index < size_n:
        raise MSDTError(f"slice index {index} outside 0..{size_n - 1} for {orientation} (IJK axis {'ijk'[normal]})")

    def plane(array_ijk: np.ndarray) -> np.ndarray:
        """The slice as (vertical, horizontal) with display flips applied."""
        cut = np.take(array_ijk, index, axis=normal)  # remaining axes keep their IJK order
        if vertical > horizontal:
            cut = cut.T
        if flip_v:
            cut = cut[::-1, :]
        if flip_h:
            cut = cut[:, ::-1]
        return cut

    image2d = plane(volume_ijk).astype(float)
    labels2d = plane(labels_ijk) if labels_ijk is not None else None

    spacing_v, spacing_h = spacing[vertical], spacing[horizontal]
    pixel = float(pixel_size_mm) if pixel_size_mm is not None else float(min(spacing_v, spacing_h))
    if not pixel > 0:
        raise MSDTError(f"pixel_size_mm must be positive, got {pixel_size_mm!r}")
    rows_in, columns_in = image2d.shape
    rows = max(1, int(round(rows_in * spacing_v / pixel)))
    columns = max(1, int(round(columns_in * spacing_h / pixel)))

    def to_source_v(out: np.ndarray | float):
        """Output row (pixel centres) -> fractional input row."""
        return (np.asarray(out) + 0.5) * pixel / spacing_v - 0.5

    def to_source_h(out: np.ndarray | float):
        """Output column (pixel centres) -> fractional input column."""
        return (np.asarray(out) + 0.5) * pixel / spacing_h - 0.5

    grid_v, grid_h = np.meshgrid(to_source_v(np.arange(rows)), to_source_h(np.arange(columns)), indexing="ij")
    coordinates = np.stack([grid_v, grid_h])
    gray = _window_to_gray(ndimage.map_coordinates(image2d, coordinates, order=1, mode="nearest"), center, width)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)

    if labels2d is not None:
        resampled = ndimage.map_coordinates(labels2d.astype(np.int64), coordinates, order=0, mode="nearest")
        colors = dict(label_colors or {})
        for value in np.unique(resampled):
            if value == 0:
                continue
            color = _check_color(colors[value], f"label {value}") if value in colors else label_color(value)
            mask = resampled == value
            color255 = np.asarray(color) * 255.0
            rgb[mask] = (1.0 - opacity) * rgb[mask] + opacity * color255
            outline = mask & ~ndimage.binary_erosion(mask, border_value=1)
            rgb[outline] = color255

    inverse = np.linalg.inv(matrix)
    for number, point in enumerate(points):
        point = _as_point(point, number)
        ijk = (inverse @ np.append(point.xyz_ras, 1.0))[:3]
        if abs(ijk[normal] - index) > 1.5:
            continue
        source_v, source_h = ijk[vertical], ijk[horizontal]
        if flip_v:
            source_v = volume_ijk.shape[vertical] - 1 - source_v
        if flip_h:
            source_h = volume_ijk.shape[horizontal] - 1 - source_h
        # inverse of to_source_*: input index -> output pixel coordinate
        row = (source_v + 0.5) * spacing_v / pixel - 0.5
        column = (source_h + 0.5) * spacing_h / pixel - 0.5
        _disk(rgb, row, column, max(1.5, point.radius_mm / pixel), point.color)

    return _write_rgb_png(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), Path(path))
