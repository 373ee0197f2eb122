"""Closed surfaces of segments: models on the scene, area and volume, watertightness, STL/OBJ export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import vtk

from .errors import MSDTError

CLOSED_SURFACE = "Closed surface"


def segment_polydata(segmentation_node, segment_name: str) -> vtk.vtkPolyData:
    """Closed surface (RAS, mm) of a segment, created from its binary labelmap when needed."""
    segment_id = segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(segment_name)
    if not segment_id:
        raise MSDTError(f"Segmentation '{segmentation_node.GetName()}' has no segment '{segment_name}'.")
    segmentation_node.CreateClosedSurfaceRepresentation()
    polydata = vtk.vtkPolyData()
    segmentation_node.GetClosedSurfaceRepresentation(segment_id, polydata)
    if polydata.GetNumberOfPoints() == 0:
        raise MSDTError(f"Segment '{segment_name}' gave an empty surface (is the segment empty?).")
    return clean_triangles(polydata)


def clean_triangles(polydata: vtk.vtkPolyData) -> vtk.vtkPolyData:
    """Triangles only, normals consistent and pointing outwards.

    Points are not merged: where two parts of a segment touch at a voxel edge, merging would make that edge
    non-manifold, and the surface would no longer be printable.
    """
    triangles = vtk.vtkTriangleFilter()
    triangles.SetInputData(polydata)
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(triangles.GetOutputPort())
    normals.ConsistencyOn()
    normals.AutoOrientNormalsOn()
    normals.SplittingOff()
    normals.Update()
    result = vtk.vtkPolyData()
    result.DeepCopy(normals.GetOutput())
    return result


def surface_area_cm2(polydata: vtk.vtkPolyData) -> float:
    mass = vtk.vtkMassProperties()
    mass.SetInputData(polydata)
    return float(mass.GetSurfaceArea()) / 100.0


def enclosed_volume_ml(polydata: vtk.vtkPolyData) -> float:
    mass = vtk.vtkMassProperties()
    mass.SetInputData(polydata)
    return float(mass.GetVolume()) / 1000.0


def open_edge_count(polydata: vtk.vtkPolyData) -> int:
    """Boundary plus non-manifold edges; 0 means watertight (printable)."""
    edges = vtk.vtkFeatureEdges()
    edges.SetInputData(polydata)
    edges.BoundaryEdgesOn()
    edges.NonManifoldEdgesOn()
    edges.FeatureEdgesOff()
    edges.ManifoldEdgesOff()
    edges.Update()
    return int(edges.GetOutput().GetNumberOfCells())


def euler_characteristic(polydata: vtk.vtkPolyData) -> int:
    """V - E + F of a triangle mesh: 2 for each closed surface without handles (no tunnels)."""
    edges = vtk.vtkExtractEdges()
    edges.SetInputData(polydata)
    edges.Update()
    return polydata.GetNumberOfPoints() - edges.GetOutput().GetNumberOfCells() + polydata.GetNumberOfPolys()


def model_from_polydata(scene, polydata: vtk.vtkPolyData, name: str, color=(0.9, 0.9, 0.9), opacity=1.0):
    """Model node showing ``polydata`` (RAS, mm)."""
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", name)
    model.SetAndObservePolyData(polydata)
    model.CreateDefaultDisplayNodes()
    display = model.GetDisplayNode()
    display.SetColor(*color)
    display.SetOpacity(opacity)
    return model


def polydata_in(polydata: vtk.vtkPolyData, coordinate_system: str) -> vtk.vtkPolyData:
    """``polydata`` (RAS) expressed in "RAS" or "LPS" (x and y negated: a rotation, orientation kept)."""
    system = coordinate_system.upper()
    if system == "RAS":
        return polydata
    if system != "LPS":
        raise MSDTError(f"Unknown coordinate system '{coordinate_system}'; expected RAS or LPS.")
    transform = vtk.vtkTransform()
    transform.Scale(-1.0, -1.0, 1.0)
    flip = vtk.vtkTransformPolyDataFilter()
    flip.SetInputData(polydata)
    flip.SetTransform(transform)
    flip.Update()
    return flip.GetOutput()


def write_surface(polydata: vtk.vtkPolyData, path: str | Path, coordinate_system: str = "RAS") -> Path:
    """Write a watertight surface (mm) to STL (binary) or OBJ; refuses surfaces with open edges."""
    path = Path(path)
    open_edges = open_edge_count(polydata)
    if open_edges:
        raise MSDTError(f"Surface for '{path.name}' is not watertight ({open_edges} open edges).")
    suffix = path.suffix.lower()
    if suffix == ".stl":
        writer = vtk.vtkSTLWriter()
        writer.SetFileTypeToBinary()
        writer.SetHeader(f"MSDT surface, mm, {coordinate_system.upper()}")
    elif suffix == ".obj":
        writer = vtk.vtkOBJWriter()
    else:
        raise MSDTError(f"Unsupported surface format '{suffix}'; use .stl or .obj.")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.SetFileName(str(path))
    writer.SetInputData(polydata_in(polydata, coordinate_system))
    if not writer.Write():
        raise MSDTError(f"Could not write '{path}'.")
    return path


def safe_file_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "segment"


def export_segments(segmentation_node, out_dir: str | Path, formats=("stl", "obj"), coordinate_system="RAS",
                    segment_names=None) -> list[Path]:
    """Write every (or the named) segment's closed surface to ``out_dir/<segment>.<format>``."""
    segmentation = segmentation_node.GetSegmentation()
    names = segment_names or [segmentation.GetNthSegment(i).GetName()
                              for i in range(segmentation.GetNumberOfSegments())]
    written = []
    for name in names:
        polydata = segment_polydata(segmentation_node, name)
        for extension in formats:
            written.append(write_surface(polydata, Path(out_dir) / f"{safe_file_stem(name)}.{extension.lower()}",
                                         coordinate_system))
    return written


def points_array(polydata: vtk.vtkPolyData) -> np.ndarray:
    """Point coordinates (N, 3) of a polydata."""
    from vtk.util.numpy_support import vtk_to_numpy

    return vtk_to_numpy(polydata.GetPoints().GetData()).astype(float)
