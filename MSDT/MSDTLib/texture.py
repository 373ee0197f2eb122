"""Texture mapping: grey levels of a CT/MR volume sampled onto bone and skin surfaces along the surface normal.

The MS-DT paper maps "grey-level values from the CT/MRI images onto the corresponding regions of the 3D bone
surface". Here every surface point gets one value (CT Hounsfield units, MR intensity: the image's own units)
reduced from samples taken along its outward normal at depths in ``depth_range_mm``:

* depth 0 is the surface itself, negative depths lie inside the surface (against the outward normal),
  positive depths outside; ``(-3, 0)`` therefore averages the outer 3 mm of the object;
* the image is interpolated trilinearly in voxel coordinates, so a linear intensity ramp is reproduced exactly;
* samples beyond the outermost voxel centres are ignored; a point whose samples all fall outside gets NaN.

Coordinates are RAS millimetres, arrays are indexed (k, j, i) like ``slicer.util.arrayFromVolume`` and the
IJK-to-RAS matrix is 4x4 (see :mod:`MSDTLib.grid`). Colour maps are Slicer's default colour tables, so a
textured model looks the same in the Slicer 3D view, in an offscreen PNG and in an exported PLY.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from scipy import ndimage, sparse  # noqa: E402
from scipy.sparse import csgraph  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from .errors import MSDTError  # noqa: E402

TEXTURE_ARRAY = "MSDT.Texture"
REDUCERS = ("mean", "max", "min")
ROBUST_PERCENTILES = (2.0, 98.0)
NAN_COLOR = (1.0, 0.0, 1.0)  # magenta: points with no sample inside the image

# Colour map name -> (vtkMRMLColorTableNode type, ID suffix of Slicer's default colour node).
COLORMAPS: dict[str, tuple[str, str]] = {
    "grey": ("Grey", "Grey"),
    "gray": ("Grey", "Grey"),
    "inverted_grey": ("InvGrey", "InvertedGrey"),
    "iron": ("Iron", "Iron"),
    "rainbow": ("Rainbow", "Rainbow"),
    "full_rainbow": ("FullRainbow", "FullRainbow"),
    "reverse_rainbow": ("ReverseRainbow", "ReverseRainbow"),
    "ocean": ("Ocean", "Ocean"),
    "desert": ("Desert", "Desert"),
}


@dataclass
class TextureStats:
    """What :func:`texture_model` put on a model: value statistics in image units (HU for CT).

    ``n_outside`` counts points with no sample inside the image (their value is NaN); ``mean``/``median``/
    ``min``/``max`` are over the other points (NaN when there are none). ``scalar_range`` is the displayed
    (low, high) window, ``depth_range_mm`` and ``step_mm`` the sampling along the normal (mm).
    """

    array_name: str
    n_points: int
    n_outside: int
    mean: float
    median: float
    min: float
    max: float
    scalar_range: tuple[float, float]
    colormap: str
    color_node_id: str
    reducer: str
    depth_range_mm: tuple[float, float]
    step_mm: float

    def as_dict(self) -> dict:
        """JSON-ready copy (NaN becomes None)."""
        return {key: (None if isinstance(value, float) and not np.isfinite(value) else value)
                for key, value in asdict(self).items()}


# ----------------------------------------------------------------------------------------------- checks


def _check_polydata(polydata) -> vtk.vtkPolyData:
    if not isinstance(polydata, vtk.vtkPolyData):
        raise MSDTError(f"surface must be a vtkPolyData, got {type(polydata).__name__}")
    if polydata.GetNumberOfPoints() == 0:
        raise MSDTError("surface is empty (no points): there is nothing to texture")
    return polydata


def _check_image(image_kji) -> np.ndarray:
    image = np.asarray(image_kji)
    if image.ndim != 3:
        raise MSDTError(f"image must be a 3D array indexed (k, j, i), got {image.ndim}D shape {image.shape}")
    if min(image.shape) < 2:
        raise MSDTError(f"image must have at least 2 voxels along each axis for interpolation, got {image.shape}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise MSDTError(f"image must hold numbers (grey levels), got dtype {image.dtype}")
    return image


def _check_matrix(ijk_to_ras) -> np.ndarray:
    matrix = np.asarray(ijk_to_ras, dtype=float)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise MSDTError(f"ijk_to_ras must be a finite 4x4 matrix, got shape {matrix.shape}")
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    if np.any(spacing <= 0) or abs(np.linalg.det(matrix[:3, :3])) < 1e-12 * float(np.prod(spacing)):
        raise MSDTError("ijk_to_ras is singular: its 3x3 part must have three independent non-zero columns")
    return matrix


def sample_depths(depth_range_mm=(-3.0, 0.0), step_mm: float = 0.5) -> np.ndarray:
    """Depths (mm, negative = inside) sampled for ``depth_range_mm`` = (deepest, shallowest).

    Both ends are always sampled; the interval is split into equal steps of at most ``step_mm``.
    """
    try:
        low, high = (float(d) for d in depth_range_mm)
    except (TypeError, ValueError) as exc:
        raise MSDTError(f"depth_range_mm must be two numbers (min, max) in mm, got {depth_range_mm!r}") from exc
    if not (np.isfinite(low) and np.isfinite(high)):
        raise MSDTError(f"depth_range_mm must be finite, got {depth_range_mm!r}")
    if low > high:
        raise MSDTError(f"depth_range_mm must be (min, max) with min <= max, got ({low:g}, {high:g}); "
                        "negative depths lie inside the surface, e.g. (-3, 0)")
    try:
        step = float(step_mm)
    except (TypeError, ValueError) as exc:
        raise MSDTError(f"step_mm must be a positive number of mm, got {step_mm!r}") from exc
    if not (np.isfinite(step) and step > 0):
        raise MSDTError(f"step_mm must be a positive number of mm, got {step_mm!r}")
    count = int(np.ceil((high - low) / step - 1e-9)) + 1
    if count > 10_000:
        raise MSDTError(f"depth range {high - low:g} mm at step {step:g} mm needs {count} samples per point; "
                        "use a larger step")
    return np.linspace(low, high, count)


def _check_reducer(reducer: str) -> str:
    if reducer not in REDUCERS:
        raise MSDTError(f"unknown reducer {reducer!r}; expected one of {', '.join(REDUCERS)}")
    return reducer


# ----------------------------------------------------------------------------------------------- normals


def _triangles(polydata: vtk.vtkPolyData) -> np.ndarray:
    """(M, 3) point ids of the surface's triangles (polygons and strips triangulated; points unchanged)."""
    if polydata.GetNumberOfPolys() + polydata.GetNumberOfStrips() == 0:
        return np.zeros((0, 3), dtype=np.int64)
    triangulate = vtk.vtkTriangleFilter()
    triangulate.SetInputData(polydata)
    triangulate.PassVertsOff()
    triangulate.PassLinesOff()
    triangulate.Update()
    polys = triangulate.GetOutput().GetPolys()
    connectivity = numpy_support.vtk_to_numpy(polys.GetConnectivityArray())
    return connectivity.reshape(-1, 3).astype(np.int64)


def outward_normals(polydata: vtk.vtkPolyData) -> np.ndarray:
    """Unit point normals (N, 3) pointing out of the surface.

    Existing point normals are used when the polydata has them, otherwise they are computed with
    vtkPolyDataNormals (consistent ordering, no splitting, so one normal per input point). Each connected
    piece of the surface is then checked with the divergence theorem: the flux of the normals through the
    piece, sum over triangles of area * n . (centroid - piece centre), equals 3 x enclosed volume and is
    positive for outward normals; a piece with negative flux has its normals flipped. This makes the
    result independent of triangle winding and of the normals a previous filter left behind. For open
    surfaces (no enclosed volume) the check is a heuristic. Points used by no polygon keep their given
    normal, or (0, 0, 0) when none was given (they are then sampled at the point only).
    """
    _check_polydata(polydata)
    given = polydata.GetPointData().GetNormals()
    if given is not None and given.GetNumberOfComponents() == 3:
        normals = numpy_support.vtk_to_numpy(given).astype(float).copy()
    elif polydata.GetNumberOfPolys() + polydata.GetNumberOfStrips() == 0:
        raise MSDTError("surface has neither polygons nor point normals: the normal direction is unknown")
    else:
        compute = vtk.vtkPolyDataNormals()
        compute.SetInputData(polydata)
        compute.SplittingOff()
        compute.ConsistencyOn()
        compute.AutoOrientNormalsOff()  # orientation is decided below, per connected piece
        compute.NonManifoldTraversalOn()
        compute.ComputePointNormalsOn()
        compute.ComputeCellNormalsOff()
        compute.Update()
        normals = numpy_support.vtk_to_numpy(compute.GetOutput().GetPointData().GetNormals()).astype(float)
        normals = normals.copy()
    normals[~np.all(np.isfinite(normals), axis=1)] = 0.0
    length = np.linalg.norm(normals, axis=1)
    normals[length > 0] /= length[length > 0, None]

    triangles = _triangles(polydata)
    if len(triangles) == 0:
        return normals
    points = numpy_support.vtk_to_numpy(polydata.GetPoints().GetData()).astype(float)
    n_points = len(points)
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]]])
    adjacency = sparse.coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])),
                                  shape=(n_points, n_points))
    _, piece_of_point = csgraph.connected_components(adjacency, directed=False)
    piece = piece_of_point[triangles[:, 0]]
    corners = points[triangles]  # (M, 3 corners, 3 xyz)
    areas = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    centroids = corners.mean(axis=1)
    mean_normals = normals[triangles].mean(axis=1)
    n_pieces = int(piece.max()) + 1
    piece_area = np.bincount(piece, weights=areas, minlength=n_pieces)
    safe_area = np.where(piece_area > 0, piece_area, 1.0)
    centres = np.stack([np.bincount(piece, weights=areas * centroids[:, c], minlength=n_pieces)
                        for c in range(3)], axis=1) / safe_area[:, None]
    flux = np.bincount(piece, weights=areas * np.einsum("ij,ij->i", mean_normals, centroids - centres[piece]),
                       minlength=n_pieces)
    extent = float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))
    inward = flux < -1e-9 * piece_area * max(extent, 1e-12)
    if inward.any():
        flip = np.zeros(n_points, dtype=bool)
        flip[triangles[inward[piece]].ravel()] = True
        normals[flip] *= -1.0
    return normals


# ----------------------------------------------------------------------------------------------- sampling


def sample_along_normals(polydata: vtk.vtkPolyData, image_kji: np.ndarray, ijk_to_ras: np.ndarray,
                         depth_range_mm=(-3.0, 0.0), step_mm: float = 0.5, reducer: str = "mean") -> np.ndarray:
    """Image grey level under each surface point, sampled along the outward normal (one float per point).

    ``polydata`` is a surface in RAS mm (the frame ``ijk_to_ras`` maps to); ``image_kji`` a 3D array indexed
    (k, j, i); ``ijk_to_ras`` its 4x4 IJK-to-RAS matrix. Samples are taken at depths from
    ``depth_range_mm[0]`` to ``depth_range_mm[1]`` (mm; 0 = on the surface, negative = inside, against the
    outward normal) in equal steps of at most ``step_mm``, each by trilinear interpolation of the voxel
    values (so a value between two voxel centres is their distance-weighted mean). ``reducer`` combines
    the samples of a point: "mean" (e.g. average HU of the outer shell), "max" (e.g. peak cortical HU) or
    "min". Samples outside the image (beyond the outermost voxel centres) or on NaN voxels are ignored;
    a point with no valid sample gets NaN, so ``np.isnan(values).sum()`` counts the points outside.
    Values are in image units (HU for CT). See :func:`outward_normals` for the normal direction.
    """
    _check_polydata(polydata)
    image = _check_image(image_kji)
    matrix = _check_matrix(ijk_to_ras)
    depths = sample_depths(depth_range_mm, step_mm)
    _check_reducer(reducer)

    points = numpy_support.vtk_to_numpy(polydata.GetPoints().GetData()).astype(float)
    normals = outward_normals(polydata) if np.any(depths != 0) else np.zeros_like(points)
    ras_to_ijk = np.linalg.inv(matrix)
    points_kji = (points @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3])[:, ::-1].T  # (3, N) fractional k, j, i
    normals_kji = (normals @ ras_to_ijk[:3, :3].T)[:, ::-1].T  # voxels per mm of depth
    upper = np.asarray(image.shape, dtype=float)[:, None] - 1.0
    tolerance = 1e-6  # voxels: points exactly on the outermost voxel centres count as inside

    n_points = points.shape[0]
    count = np.zeros(n_points)
    total = np.zeros(n_points)
    best = np.full(n_points, -np.inf if reducer == "max" else np.inf)
    for depth in depths:
        kji = points_kji + depth * normals_kji
        inside = np.all((kji >= -tolerance) & (kji <= upper + tolerance), axis=0)
        if not inside.any():
            continue
        values = ndimage.map_coordinates(image, kji[:, inside], output=np.float64, order=1, mode="nearest")
        valid = np.isfinite(values)
        index = np.flatnonzero(inside)[valid]
        values = values[valid]
        count[index] += 1
        if reducer == "mean":
            total[index] += values
        elif reducer == "max":
            best[index] = np.maximum(best[index], values)
        else:
            best[index] = np.minimum(best[index], values)
    result = np.full(n_points, np.nan)
    sampled = count > 0
    result[sampled] = total[sampled] / count[sampled] if reducer == "mean" else best[sampled]
    return result


def add_texture(polydata: vtk.vtkPolyData, values, name: str = TEXTURE_ARRAY, active: bool = True) -> vtk.vtkDataArray:
    """Attach ``values`` (one per point, image units) to ``polydata`` as a float32 point array ``name``.

    An existing array of that name is replaced; with ``active`` it becomes the active point scalars (what
    Slicer and VTK colour by default). Returns the VTK array.
    """
    _check_polydata(polydata)
    if not isinstance(name, str) or not name:
        raise MSDTError(f"texture array name must be a non-empty string, got {name!r}")
    array = np.asarray(values, dtype=float)
    if array.shape != (polydata.GetNumberOfPoints(),):
        raise MSDTError(f"texture needs one value per point: {polydata.GetNumberOfPoints()} points, "
                        f"got values of shape {array.shape}")
    scalars = numpy_support.numpy_to_vtk(array.astype(np.float32), deep=1, array_type=vtk.VTK_FLOAT)
    scalars.SetName(name)
    point_data = polydata.GetPointData()
    point_data.RemoveArray(name)
    point_data.AddArray(scalars)
    if active:
        point_data.SetActiveScalars(name)
    polydata.Modified()
    return scalars


def texture_values(polydata: vtk.vtkPolyData, name: str = TEXTURE_ARRAY) -> np.ndarray:
    """The point array ``name`` of ``polydata`` as a float numpy array (copy)."""
    array = polydata.GetPointData().GetArray(name) if isinstance(polydata, vtk.vtkPolyData) else None
    if array is None:
        raise MSDTError(f"surface has no point array {name!r}")
    if array.GetNumberOfComponents() != 1:
        raise MSDTError(f"point array {name!r} has {array.GetNumberOfComponents()} components; expected 1")
    return numpy_support.vtk_to_numpy(array).astype(float)


# ----------------------------------------------------------------------------------------------- colours


def robust_range(values, percentiles=ROBUST_PERCENTILES) -> tuple[float, float]:
    """Display window (low, high) from the given percentiles of the finite values (default 2nd-98th).

    Outliers (a few points in air or metal) then do not wash out the contrast. A constant texture gets a
    window of width 1 around its value; no finite value gives (0, 1).
    """
    array = np.asarray(values, dtype=float).ravel()
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, percentiles))
    if not high > low:
        return low - 0.5, low + 0.5
    return low, high


def _check_range(scalar_range) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in scalar_range)
    except (TypeError, ValueError) as exc:
        raise MSDTError(f"scalar_range must be (low, high), got {scalar_range!r}") from exc
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise MSDTError(f"scalar_range must be finite with low < high, got {scalar_range!r}")
    return low, high


def lookup_table(colormap="grey", scalar_range=(0.0, 1.0)) -> vtk.vtkScalarsToColors:
    """A lookup table mapping ``scalar_range`` (low, high) onto a colour map; values outside are clamped.

    ``colormap`` is a name of :data:`COLORMAPS` (Slicer's default colour tables: "grey" black to white,
    "iron" red to yellow, "rainbow", ...) or a vtkScalarsToColors, which is copied. NaN maps to
    :data:`NAN_COLOR` for named maps.
    """
    low, high = _check_range(scalar_range)
    if isinstance(colormap, vtk.vtkScalarsToColors):
        table = colormap.NewInstance()
        table.DeepCopy(colormap)
        table.SetRange(low, high)
        return table
    key = colormap.lower() if isinstance(colormap, str) else colormap
    if key not in COLORMAPS:
        raise MSDTError(f"unknown colormap {colormap!r}; expected one of {', '.join(COLORMAPS)} "
                        "or a vtkScalarsToColors")
    node = slicer.vtkMRMLColorTableNode()
    getattr(node, f"SetTypeTo{COLORMAPS[key][0]}")()
    table = vtk.vtkLookupTable()
    table.DeepCopy(node.GetLookupTable())
    table.SetTableRange(low, high)
    table.SetNanColor(*NAN_COLOR, 1.0)
    table.UseBelowRangeColorOff()
    table.UseAboveRangeColorOff()
    table.BuildSpecialColors()  # the NaN/out-of-range slots after the table; without this they hold garbage
    return table


def colors_rgb(values, colormap="grey", scalar_range=None) -> np.ndarray:
    """(N, 3) uint8 RGB colours of ``values`` through ``colormap`` over ``scalar_range`` (default robust)."""
    array = np.asarray(values, dtype=float).ravel()
    table = lookup_table(colormap, robust_range(array) if scalar_range is None else scalar_range)
    mapped = table.MapScalars(numpy_support.numpy_to_vtk(array, deep=1), vtk.VTK_COLOR_MODE_MAP_SCALARS, -1)
    return numpy_support.vtk_to_numpy(mapped)[:, :3].astype(np.uint8).copy()


# ----------------------------------------------------------------------------------------------- MRML


def _to_world(node) -> np.ndarray:
    """4x4 matrix from ``node``'s coordinates to world RAS (identity without a parent transform)."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    matrix = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(parent, None, matrix):
        raise MSDTError(f"'{node.GetName()}' is under a non-linear transform; harden it before texturing")
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _color_node(scene, colormap: str):
    """Slicer's default colour node for ``colormap`` (added to the scene if the colour logic did not)."""
    key = colormap.lower() if isinstance(colormap, str) else colormap
    if key not in COLORMAPS:
        raise MSDTError(f"unknown colormap {colormap!r}; expected one of {', '.join(COLORMAPS)}")
    table_type, suffix = COLORMAPS[key]
    node = scene.GetNodeByID(f"vtkMRMLColorTableNode{suffix}")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", suffix)
        getattr(node, f"SetTypeTo{table_type}")()
    return node


def texture_model(scene, model_node, volume_node, depth_range_mm=(-3.0, 0.0), step_mm: float = 0.5,
                  reducer: str = "mean", name: str | None = None, colormap: str = "grey",
                  scalar_range=None) -> TextureStats:
    """Texture a model node with the grey levels of a volume node and show them in Slicer's views.

    Samples ``volume_node`` along the outward normals of ``model_node``'s surface (see
    :func:`sample_along_normals`; linear parent transforms of either node are taken into account), stores
    the values as point scalars ``name`` (default :data:`TEXTURE_ARRAY`) and sets the display node to show
    them: scalar visibility on, that array active, the colour node of ``colormap`` and a manual
    ``scalar_range`` (default: 2nd-98th percentile of the values, in image units). Points whose samples all
    fall outside the image get NaN. Raises MSDTError, leaving the model as it was, when the inputs are
    unusable or no surface point samples the image. Returns :class:`TextureStats`.
    """
    if model_node is None or not model_node.IsA("vtkMRMLModelNode"):
        raise MSDTError("texture_model needs a model node (vtkMRMLModelNode)")
    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.GetImageData() is None:
        raise MSDTError("texture_model needs a scalar volume node with image data")
    polydata = model_node.GetPolyData()
    if polydata is None or polydata.GetNumberOfPoints() == 0:
        raise MSDTError(f"model '{model_node.GetName()}' has no surface points to texture")
    color_node = _color_node(scene, colormap)
    from .io import node_ijk_to_ras

    image = slicer.util.arrayFromVolume(volume_node)
    ijk_to_model = np.linalg.inv(_to_world(model_node)) @ _to_world(volume_node) @ node_ijk_to_ras(volume_node)
    values = sample_along_normals(polydata, image, ijk_to_model, depth_range_mm, step_mm, reducer)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise MSDTError(f"model '{model_node.GetName()}' does not overlap volume '{volume_node.GetName()}': "
                        "no surface point has a sample inside the image")
    window = robust_range(finite) if scalar_range is None else _check_range(scalar_range)
    array_name = name or TEXTURE_ARRAY

    add_texture(polydata, values, array_name)
    model_node.SetActivePointScalars(array_name, vtk.vtkDataSetAttributes.SCALARS)
    display = model_node.GetDisplayNode()
    if display is None:
        model_node.CreateDefaultDisplayNodes()
        display = model_node.GetDisplayNode()
    display.SetActiveScalar(array_name, vtk.vtkAssignAttribute.POINT_DATA)
    display.SetAndObserveColorNodeID(color_node.GetID())
    display.SetScalarRangeFlag(slicer.vtkMRMLDisplayNode.UseManualScalarRange)
    display.SetScalarRange(*window)
    display.SetScalarVisibility(True)
    model_node.Modified()

    depths = sample_depths(depth_range_mm, step_mm)
    return TextureStats(array_name=array_name, n_points=int(values.size), n_outside=int(values.size - finite.size),
                        mean=float(finite.mean()), median=float(np.median(finite)), min=float(finite.min()),
                        max=float(finite.max()), scalar_range=window, colormap=colormap,
                        color_node_id=color_node.GetID(), reducer=reducer,
                        depth_range_mm=(float(depths[0]), float(depths[-1])),
                        step_mm=float(depths[1] - depths[0]) if depths.size > 1 else 0.0)


# ----------------------------------------------------------------------------------------------- files


def write_textured(polydata: vtk.vtkPolyData, path: str | Path, array_name: str = TEXTURE_ARRAY,
                   colormap="grey", scalar_range=None, coordinate_system: str = "RAS") -> Path:
    """Write a textured surface (mm) as ``.vtp`` (values kept) or ``.ply`` (per-vertex RGB colours).

    ``.vtp`` (VTK XML, binary) keeps every point array, the float texture ``array_name`` included, for
    ParaView or Slicer. ``.ply`` (binary) has per-vertex colours "red", "green", "blue" (uchar) made from
    ``array_name`` through ``colormap`` over ``scalar_range`` (default: 2nd-98th percentile), so it opens
    coloured in MeshLab or Blender; NaN values are :data:`NAN_COLOR`. ``coordinate_system`` "RAS" (Slicer)
    or "LPS" (DICOM/ITK: x and y negated). Returns the path.
    """
    from .surfaces import polydata_in

    _check_polydata(polydata)
    path = Path(path)
    values = texture_values(polydata, array_name)
    suffix = path.suffix.lower()
    if suffix not in (".vtp", ".ply"):
        raise MSDTError(f"unsupported textured surface format '{suffix}'; use .vtp or .ply")
    output = vtk.vtkPolyData()
    output.ShallowCopy(polydata_in(polydata, coordinate_system))
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".vtp":
        writer = vtk.vtkXMLPolyDataWriter()
        writer.SetDataModeToBinary()
    else:
        window = robust_range(values) if scalar_range is None else _check_range(scalar_range)
        rgb = numpy_support.numpy_to_vtk(colors_rgb(values, colormap, window), deep=1,
                                         array_type=vtk.VTK_UNSIGNED_CHAR)
        rgb.SetName("RGB")
        output.GetPointData().AddArray(rgb)
        triangulate = vtk.vtkTriangleFilter()  # PLY faces: polygons only, strips become triangles
        triangulate.SetInputData(output)
        triangulate.PassVertsOff()
        triangulate.PassLinesOff()
        triangulate.Update()
        output = triangulate.GetOutput()
        writer = vtk.vtkPLYWriter()
        writer.SetFileTypeToBinary()
        writer.SetArrayName("RGB")
        writer.SetColorModeToDefault()
        name = colormap if isinstance(colormap, str) else type(colormap).__name__
        writer.AddComment(f"MSDT texture {array_name}: mm, {coordinate_system.upper()}, colormap {name}, "
                          f"range {window[0]:g} to {window[1]:g}")
    writer.SetFileName(str(path))
    writer.SetInputData(output)
    if not writer.Write() or not path.is_file():
        raise MSDTError(f"could not write '{path}'")
    return path


__all__ = ["COLORMAPS", "TEXTURE_ARRAY", "TextureStats", "add_texture", "colors_rgb", "lookup_table",
           "outward_normals", "robust_range", "sample_along_normals", "sample_depths", "texture_model",
           "texture_values", "write_textured"]
