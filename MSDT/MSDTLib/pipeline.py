"""The Anatomy workflow: a CT or MR volume (and optionally a label map) becomes a labelled 3D twin of the
trunk on the scene: skin, bone, labelled structures, per-vertebra landmarks and their depth under the skin.

The Slicer module (``MSDT.py``) and the ``msdt segment`` command both call :func:`build_anatomy_twin`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer

from . import io, labels, landmarks, surfaces, tissue
from .app import scene_transaction
from .errors import MSDTError
from .grid import Grid
from .hierarchy import TwinHierarchy
from .tables import Column, table_from_rows

log = logging.getLogger("msdt")
Progress = Callable[[float, str], None]


def _log_progress(fraction: float, message: str) -> None:
    log.info("[%3d%%] %s", round(100 * fraction), message)


@dataclass
class AnatomyOptions:
    """Parameters of the Anatomy workflow (thresholds in HU for CT, image units for MR)."""

    modality: str = "ct"
    skin_threshold: float | None = None       # None: -500 HU (CT) or Otsu (MR)
    bone_threshold_hu: float = tissue.CT_BONE_THRESHOLD_HU
    label_names: str | Path | dict | None = None  # None: TotalSegmentator "total" (CT) / "total_mr" (MR)
    use_totalsegmentator: bool = False
    patient: str | None = None
    study: str | None = None


@dataclass
class AnatomyResult:
    """Nodes and numbers of one Anatomy run."""

    volume_node: object
    skin_segmentation: object
    skin_model_node: object
    skin: dict
    bone_segmentation: object | None = None
    bone: dict | None = None
    structures_segmentation: object | None = None
    structure_volumes_ml: dict = field(default_factory=dict)
    vertebrae: list = field(default_factory=list)
    landmarks_node: object | None = None
    skin_points_node: object | None = None
    table_node: object | None = None

    @property
    def segmentation_node(self):
        """The segmentation holding the labelled structures (vertebrae) when there is one, else the skin."""
        return self.structures_segmentation or self.skin_segmentation

    def segmentation_nodes(self) -> list:
        return [n for n in (self.skin_segmentation, self.bone_segmentation, self.structures_segmentation) if n]

    def summary(self) -> dict:
        """JSON-ready numbers: skin, bone, per-vertebra volume, landmarks and skin depths (mm, ml, cm²)."""
        def rounded(values):
            return [round(float(v), 2) for v in values]

        vertebrae = {}
        for vertebra in self.vertebrae:
            vertebrae[vertebra.level] = {
                "label": vertebra.label,
                "volume_ml": round(vertebra.volume_ml, 3),
                "voxel_count": vertebra.voxel_count,
                "truncated": vertebra.truncated,
                "centroid_ras": rounded(vertebra.points["centroid"]),
                "landmarks": {name: rounded(point) for name, point in vertebra.points.items()},
                "skin_depth_mm": {name: (None if np.isnan(d) else round(d, 2))
                                  for name, d in vertebra.skin_depth_mm.items()},
            }
        summary = {"modality": self.skin["modality"], "skin": self.skin, "vertebrae": vertebrae,
                   "structures_ml": {k: round(v, 3) for k, v in self.structure_volumes_ml.items()}}
        if self.bone is not None:
            summary["bone"] = self.bone
        return summary


# ------------------------------------------------------------------------------------------- inputs

def labels_for_volume(label_input, volume_node) -> np.ndarray:
    """Label array (k, j, i) on the volume grid from a file path or a label-map/scalar volume node."""
    if isinstance(label_input, (str, Path)):
        return io.labels_on_volume_grid(label_input, volume_node)
    image = io.image_from_volume_node(label_input)
    array = io.resample_labels_to_volume(image, volume_node)
    if not array.any():
        raise MSDTError(f"Label map '{label_input.GetName()}' does not overlap the image '{volume_node.GetName()}'.")
    return array


def class_table_of(label_input, options: AnatomyOptions) -> dict[int, str]:
    """Names of the label values: from the options, else a label node's colour table, else TotalSegmentator."""
    if options.label_names is None and not isinstance(label_input, (str, Path)):
        display = label_input.GetDisplayNode()
        color_node = display.GetColorNode() if display else None
        # Slicer's default tables (Labels, GenericAnatomyColors, ...) are singletons and name nothing here.
        if color_node is not None and color_node.GetNumberOfColors() > 1 and not color_node.GetSingletonTag():
            return {i: color_node.GetColorName(i) for i in range(1, color_node.GetNumberOfColors())}
    return labels.load_class_table(options.label_names, options.modality)


def _check_volume(volume_node) -> np.ndarray:
    if volume_node is None or volume_node.GetImageData() is None:
        raise MSDTError("No input volume: choose a CT or MR volume first.")
    array = slicer.util.arrayFromVolume(volume_node)
    if array.ndim != 3 or min(array.shape) < 2:
        raise MSDTError(f"Volume '{volume_node.GetName()}' is not a 3D volume (shape {array.shape}).")
    if not np.isfinite(array).all():
        raise MSDTError(f"Volume '{volume_node.GetName()}' holds NaN or infinite voxels.")
    if array.min() == array.max():
        raise MSDTError(f"Volume '{volume_node.GetName()}' is constant ({array.min():g}); nothing to segment.")
    return array


# ------------------------------------------------------------------------------------------- steps

def _mask_segment(scene, mask: np.ndarray, volume_node, name: str, segment: str):
    segmentation = io.new_segmentation(scene, volume_node, name)
    return io.add_segments_from_labels(segmentation, mask.astype(np.uint8), volume_node, {1: segment})


def _skin_step(scene, array, grid, volume_node, options):
    body = tissue.body_mask(array, grid, options.modality, options.skin_threshold)
    segmentation = _mask_segment(scene, body.mask, volume_node, "Skin", "skin")
    polydata = surfaces.segment_polydata(segmentation, "skin")
    model = surfaces.model_from_polydata(scene, polydata, "Skin surface", labels.segment_color("skin"), 0.35)
    cap_area = _fov_cap_area_cm2(polydata, grid)
    skin = {
        "modality": options.modality,
        "threshold": round(body.threshold, 2),
        "threshold_unit": "HU" if options.modality == "ct" else "image units (Otsu)",
        "volume_ml": round(float(body.mask.sum()) * grid.voxel_volume_mm3 / 1000.0, 2),
        "area_cm2": round(surfaces.surface_area_cm2(polydata), 2),
        "fov_cap_area_cm2": round(cap_area, 2),
        "surface_volume_ml": round(surfaces.enclosed_volume_ml(polydata), 2),
        "components": 1,
    }
    return body.mask, segmentation, model, skin


def _fov_cap_area_cm2(polydata, grid: Grid) -> float:
    """Area of the flat caps where the body leaves the field of view (top and bottom slices), cm²."""
    import vtk

    axis_ras = grid.ijk_to_ras[:3, 2 - grid.axis_along(2)]
    axis_ras = axis_ras / np.linalg.norm(axis_ras)
    ends = [grid.ras_from_kji(np.array([[0, 0, 0]]))[0], grid.ras_from_kji(np.array([grid.shape]) - 1)[0]]
    heights = sorted(float(p @ axis_ras) for p in ends)
    tolerance = 0.75 * float(grid.spacing[2 - grid.axis_along(2)])
    quality = vtk.vtkMeshQuality()
    quality.SetInputData(polydata)
    quality.SetTriangleQualityMeasureToArea()
    quality.Update()
    from vtk.util.numpy_support import vtk_to_numpy

    areas = vtk_to_numpy(quality.GetOutput().GetCellData().GetArray("Quality"))
    centers = vtk.vtkCellCenters()
    centers.SetInputData(polydata)
    centers.Update()
    height = surfaces.points_array(centers.GetOutput()) @ axis_ras
    on_cap = (height <= heights[0] + tolerance) | (height >= heights[1] - tolerance)
    return float(areas[on_cap].sum()) / 100.0


def _bone_step(scene, array, grid, volume_node, options, body):
    """Bone segmentation and its volume; a CT without cortical bone gives (None, {"error": ...})."""
    try:
        bone = tissue.bone_mask(array, grid, options.bone_threshold_hu, within=body)
    except MSDTError as error:
        log.warning("Bone: %s", error)
        return None, {"threshold_hu": options.bone_threshold_hu, "volume_ml": None, "error": str(error)}
    segmentation = _mask_segment(scene, bone.mask, volume_node, "Bone", "bone")
    summary = {"threshold_hu": bone.threshold,
               "volume_ml": round(float(bone.mask.sum()) * grid.voxel_volume_mm3 / 1000.0, 2)}
    return segmentation, summary


def _landmark_nodes(scene, vertebrae):
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Vertebra landmarks")
    skin_points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Skin above landmarks")
    for node in (points, skin_points):
        node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().SetTextScale(1.5)
    skin_points.GetDisplayNode().SetSelectedColor(0.9, 0.6, 0.2)
    for vertebra in vertebrae:
        for name, point in vertebra.points.items():
            index = points.AddControlPoint(*[float(c) for c in point], f"{vertebra.level}_{name}")
            depth = vertebra.skin_depth_mm.get(name, float("nan"))
            points.SetNthControlPointDescription(index, f"skin depth {depth:.1f} mm (posterior)")
            points.SetNthControlPointLocked(index, True)
            if name in vertebra.skin_points:
                skin_index = skin_points.AddControlPoint(*[float(c) for c in vertebra.skin_points[name]],
                                                         f"{vertebra.level}_{name}_skin")
                skin_points.SetNthControlPointLocked(skin_index, True)
    return points, skin_points


def _measurement_table(scene, skin: dict, bone: dict | None, vertebrae) -> object:
    """Table node, one row per structure, columns with units (as Segment Statistics lays them out)."""
    columns = [Column("structure", kind=str), Column("volume", "ml"), Column("area", "cm2"),
               Column("centroid_R", "mm"), Column("centroid_A", "mm"), Column("centroid_S", "mm")]
    columns += [Column(f"skin_depth_{name}", "mm", "posterior, landmark to skin") for name in landmarks.LANDMARK_NAMES]
    rows = [{"structure": "skin", "volume": skin["volume_ml"], "area": skin["area_cm2"]}]
    if bone is not None:
        rows.append({"structure": "bone", "volume": bone["volume_ml"]})
    for vertebra in vertebrae:
        row = {"structure": vertebra.level, "volume": vertebra.volume_ml}
        row.update(zip(("centroid_R", "centroid_A", "centroid_S"), vertebra.points["centroid"], strict=True))
        row.update({f"skin_depth_{n}": d for n, d in vertebra.skin_depth_mm.items()})
        rows.append(row)
    return table_from_rows(scene, "Anatomy measurements", columns, rows)


def _vertebra_levels(class_table: dict[int, str]) -> dict[int, str]:
    return {value: level for value, name in class_table.items() if (level := labels.vertebra_level(name))}


# ------------------------------------------------------------------------------------------- workflow

def build_anatomy_twin(scene, volume_node, label_node=None, options: AnatomyOptions | None = None,
                       progress: Progress | None = None) -> AnatomyResult:
    """Skin, bone (CT), labelled structures and vertebra landmarks of ``volume_node`` on ``scene``.

    ``label_node`` is a label-map volume node or a path to a label-map file (any grid: it is resampled onto
    the volume). On error nothing is left behind on the scene.
    """
    options = options or AnatomyOptions()
    progress = progress or _log_progress
    if options.modality not in ("ct", "mr"):
        raise MSDTError(f"Unknown modality '{options.modality}'; expected 'ct' or 'mr'.")
    array = _check_volume(volume_node)
    grid = Grid.of_node(volume_node)
    patient = options.patient or volume_node.GetAttribute("DICOM.PatientName") or "Patient"
    study = options.study or f"{options.modality.upper()} {volume_node.GetName()}"
    hierarchy = TwinHierarchy(scene, patient)

    with scene_transaction(scene):
        if options.use_totalsegmentator and label_node is None:
            from .totalseg import segment_with_totalsegmentator

            progress(0.05, "Running TotalSegmentator")
            label_node = segment_with_totalsegmentator(volume_node, options.modality)
        label_array = class_table = None
        if label_node is not None:
            progress(0.05, "Resampling the label map onto the image grid")
            class_table = class_table_of(label_node, options)
            label_array = labels_for_volume(label_node, volume_node)

        hierarchy.place(volume_node, "macro", study)
        with hierarchy.collect("macro", study):
            progress(0.15, "Segmenting the skin")
            body, skin_segmentation, skin_model, skin = _skin_step(scene, array, grid, volume_node, options)
        result = AnatomyResult(volume_node, skin_segmentation, skin_model, skin)

        with hierarchy.collect("meso", study):
            if options.modality == "ct":
                progress(0.35, "Segmenting bone by Hounsfield units")
                result.bone_segmentation, result.bone = _bone_step(scene, array, grid, volume_node, options, body)
            if label_array is not None:
                progress(0.55, "Importing labelled structures")
                result.structures_segmentation = io.segmentation_from_labels(
                    scene, label_array, volume_node, class_table, "Structures")
                counts = np.bincount(label_array.ravel())
                result.structure_volumes_ml = {
                    class_table.get(v, f"label_{v}"): counts[v] * grid.voxel_volume_mm3 / 1000.0
                    for v in np.flatnonzero(counts) if v}
                progress(0.75, "Placing vertebra landmarks")
                result.vertebrae = landmarks.vertebra_landmarks(label_array, grid, _vertebra_levels(class_table),
                                                                body)
                for vertebra in result.vertebrae:
                    kji = np.argwhere(label_array == vertebra.label)
                    vertebra.truncated = grid.touches_ends(kji)
                if result.vertebrae:
                    result.landmarks_node, result.skin_points_node = _landmark_nodes(scene, result.vertebrae)
            result.table_node = _measurement_table(scene, skin, result.bone, result.vertebrae)
        progress(1.0, "Anatomy twin ready")
    return result


def load_inputs(scene, image_path, label_path=None, options: AnatomyOptions | None = None):
    """Read the image (file or DICOM folder) and check the label map file exists; returns the volume node."""
    if label_path is not None and not Path(label_path).exists():
        raise MSDTError(f"Label map '{label_path}' does not exist.")
    return io.load_volume(scene, image_path)


__all__ = ["AnatomyOptions", "AnatomyResult", "build_anatomy_twin", "labels_for_volume", "load_inputs"]
