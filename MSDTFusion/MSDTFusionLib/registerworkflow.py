"""Markerless registration as a workflow: files in, MRML nodes and files out (the ``msdt register`` command and
the Fusion module call :func:`register_files` / :func:`registration_nodes`).

The transform node ``CameraToMRI`` maps the camera (moving) frame to the image (fixed) frame: its matrix is the
moving-to-fixed RAS matrix, and the camera cloud placed under it lands on the skin. It is written as an ITK
``.h5`` transform exactly as Slicer saves transforms (resampling convention, LPS), through MRML's own
transform storage node.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import vtk
from vtk.util.numpy_support import numpy_to_vtk

from MSDTLib.errors import MSDTError

from . import pointclouds, registration, tre

SURFACE_SUFFIXES = (".vtk", ".vtp", ".stl", ".ply", ".obj")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Landmarks:
    names: list[str]
    points: np.ndarray  # (N, 3) RAS mm


def read_surface(path: str | Path) -> vtk.vtkPolyData:
    """A surface mesh file (VTK/VTP/STL/PLY/OBJ, RAS mm) as polydata; errors name the problem."""
    path = Path(path)
    if not path.is_file():
        raise MSDTError(f"Surface '{path}' does not exist.")
    readers = {".vtk": vtk.vtkPolyDataReader, ".vtp": vtk.vtkXMLPolyDataReader, ".stl": vtk.vtkSTLReader,
               ".ply": vtk.vtkPLYReader, ".obj": vtk.vtkOBJReader}
    reader = readers[path.suffix.lower()]()
    reader.SetFileName(str(path))
    reader.Update()
    polydata = reader.GetOutput()
    if polydata is None or polydata.GetNumberOfPoints() == 0 or polydata.GetNumberOfPolys() == 0:
        raise MSDTError(f"'{path}' holds no surface (no triangles).")
    return polydata


def read_landmarks(path: str | Path) -> Landmarks:
    """Named points (RAS mm) from a Slicer markups file (.mrk.json or .fcsv, LPS or RAS) or any point file
    :func:`pointclouds.read_point_cloud` reads (names P1, P2, ...)."""
    path = Path(path)
    if not path.is_file():
        raise MSDTError(f"Landmark file '{path}' does not exist.")
    if path.name.lower().endswith(".json"):
        return _markups_json(path)
    if path.suffix.lower() == ".fcsv":
        return _fcsv(path)
    points = pointclouds.read_point_cloud(path)
    return Landmarks([f"P{i + 1}" for i in range(len(points))], points)


def _markups_json(path: Path) -> Landmarks:
    try:
        markup = json.loads(path.read_text())["markups"][0]
        names = [p.get("label") or f"P{i + 1}" for i, p in enumerate(markup["controlPoints"])]
        points = np.array([p["position"] for p in markup["controlPoints"]], dtype=float)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise MSDTError(f"'{path}' is not a Slicer markups file with control points: {error}") from None
    if markup.get("coordinateSystem", "LPS") == "LPS" and len(points):
        points = points @ LPS_TO_RAS
    return Landmarks(names, points)


def _fcsv(path: Path) -> Landmarks:
    names, rows, lps = [], [], True
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            if "CoordinateSystem" in line:
                lps = "RAS" not in line and "= 0" not in line
            continue
        fields = line.split(",")
        if len(fields) >= 4:
            rows.append([float(v) for v in fields[1:4]])
            names.append(fields[11] if len(fields) > 11 and fields[11] else f"P{len(names) + 1}")
    if not rows:
        raise MSDTError(f"'{path}' holds no fiducial rows.")
    points = np.array(rows)
    return Landmarks(names, points @ LPS_TO_RAS if lps else points)


def paired(moving: Landmarks, fixed: Landmarks) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pair landmarks by name when the names match, else by order (same count required)."""
    common = [name for name in moving.names if name in fixed.names]
    if common and len(common) == len(moving.names):
        index = {name: i for i, name in enumerate(fixed.names)}
        return common, moving.points, fixed.points[[index[n] for n in common]]
    if len(moving.points) != len(fixed.points):
        raise MSDTError(f"{len(moving.points)} moving and {len(fixed.points)} fixed landmarks cannot be paired "
                        "(names differ and counts differ).")
    return moving.names, moving.points, fixed.points


def point_cloud_polydata(points: np.ndarray) -> vtk.vtkPolyData:
    """Points as a vertex polydata (for a model node)."""
    vtk_points = vtk.vtkPoints()
    vtk_points.SetData(numpy_to_vtk(np.ascontiguousarray(points, dtype=float), deep=True))
    polydata = vtk.vtkPolyData()
    polydata.SetPoints(vtk_points)
    vertices = vtk.vtkCellArray()
    for index in range(len(points)):
        vertices.InsertNextCell(1)
        vertices.InsertCellPoint(index)
    polydata.SetVerts(vertices)
    return polydata


def transform_node(scene, matrix: np.ndarray, name: str = "CameraToMRI"):
    """Linear transform node whose to-parent matrix is ``matrix`` (moving -> fixed, RAS)."""
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    vtk_matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            vtk_matrix.SetElement(row, column, float(matrix[row, column]))
    node.SetMatrixTransformToParent(vtk_matrix)
    return node


def write_transform(node, path: str | Path) -> Path:
    """Write a transform node as Slicer does (ITK .h5/.tfm: resampling convention, LPS)."""
    import slicer

    path = Path(path)
    storage = slicer.vtkMRMLTransformStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise MSDTError(f"Could not write the transform to '{path}'.")
    return path


def registration_nodes(scene, fixed_polydata, moving_points, result) -> dict:
    """Fixed skin model, camera cloud model under the ``CameraToMRI`` transform, and the transform node."""
    from MSDTLib.surfaces import model_from_polydata

    fixed_model = model_from_polydata(scene, fixed_polydata, "Skin surface (fixed)", (0.94, 0.78, 0.66), 0.5)
    cloud = model_from_polydata(scene, point_cloud_polydata(moving_points), "Camera point cloud", (0.1, 0.5, 0.9))
    cloud.GetDisplayNode().SetPointSize(3)
    transform = transform_node(scene, result.matrix)
    cloud.SetAndObserveTransformNodeID(transform.GetID())
    for key in ("rms_mm", "inlier_fraction", "overlap"):
        transform.SetAttribute(f"MSDT.{key}", f"{getattr(result, key):.4f}")
    transform.SetAttribute("MSDT.converged", str(bool(result.converged)))
    return {"fixed": fixed_model, "moving": cloud, "transform": transform}


def fixed_surface_of(path: Path, modality: str = "ct"):
    """Skin polydata from a surface file, or from an image through the anatomy twin's skin step."""
    if path.suffix.lower() in SURFACE_SUFFIXES:
        return read_surface(path)
    from MSDTLib import io, pipeline
    from MSDTLib.app import new_scene

    scene = new_scene()
    volume = io.load_volume(scene, path)
    twin = pipeline.build_anatomy_twin(scene, volume, options=pipeline.AnatomyOptions(modality=modality),
                                       progress=lambda *_: None)
    return twin.skin_model_node.GetPolyData()


def register_files(fixed: Path, moving: Path, out: Path, fixed_landmarks=None, moving_landmarks=None,
                   modality: str = "ct") -> dict:
    """``msdt register``: summary.json, transform.h5 and scene.mrb in ``out`` (staged: nothing on failure)."""
    from MSDTLib import io
    from MSDTLib.app import new_scene
    from MSDTLib.outputs import staged_output

    start = time.perf_counter()
    fixed_polydata = fixed_surface_of(Path(fixed), modality)
    moving_points = pointclouds.read_point_cloud(moving)
    landmarks = None
    if (fixed_landmarks is None) != (moving_landmarks is None):
        raise MSDTError("Give both --fixed-landmarks and --moving-landmarks, or neither.")
    if fixed_landmarks is not None:
        landmarks = paired(read_landmarks(moving_landmarks), read_landmarks(fixed_landmarks))
    result = registration.register_cloud_to_surface(moving_points, fixed_polydata)
    summary = result.summary()
    if landmarks is not None:
        names, moving_pts, fixed_pts = landmarks
        errors = tre.target_registration_error(result.matrix, moving_pts, fixed_pts, names)
        summary["tre_mm"] = {k: v for k, v in errors.items() if k not in ("vectors_mm", "errors_mm", "names")}
    with staged_output(out) as staging:
        scene = new_scene()
        nodes = registration_nodes(scene, fixed_polydata, moving_points, result)
        written = [write_transform(nodes["transform"], staging / "transform.h5"),
                   io.save_mrb(scene, staging / "scene.mrb")]
        summary["seconds_total"] = round(time.perf_counter() - start, 3)
        summary["files"] = sorted(p.name for p in written) + ["summary.json"]
        (staging / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
