"""Reading images into MRML volume nodes, label maps into segmentations, and saving/loading ``.mrb`` scenes.

Geometry: SimpleITK works in LPS, MRML in RAS. A voxel (i, j, k) of a SimpleITK image lies at
``origin + D @ diag(spacing) @ (i, j, k)`` in LPS; flipping the first two axes gives the IJK-to-RAS matrix.
NIfTI files are read by SimpleITK, which applies their qform/sform, so files stored in RAS or LPS order both
land in the same physical place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from . import labels as label_tables
from .app import new_scene
from .errors import MSDTError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


# ----------------------------------------------------------------------------------------------- reading

def read_image(path: str | Path) -> sitk.Image:
    """Read a 3D image file (NIfTI, NRRD, MHA/MHD) or a DICOM series folder; errors name the problem."""
    path = Path(path)
    if not path.exists():
        raise MSDTError(f"Image '{path}' does not exist.")
    if path.is_dir():
        image = _read_dicom_folder(path)
    else:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError:
            raise MSDTError(f"'{path}' is not an image MSDT can read (NIfTI, NRRD, MHA or a DICOM folder).") \
                from None
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise MSDTError(f"'{path}' is a {image.GetDimension()}D image of size {image.GetSize()}; "
                        "MSDT needs a 3D volume with at least 2 voxels along each axis.")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise MSDTError(f"'{path}' has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                        "MSDT needs a scalar (grey-level) volume.")
    return image


def _read_dicom_folder(folder: Path) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise MSDTError(f"Folder '{folder}' holds no DICOM image series.")
    # Take the series with the most slices when a folder holds several (localisers are short).
    files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid) for uid in series), key=len)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise MSDTError(f"DICOM series in '{folder}' could not be read: {error}") from None
    for tag, key in (("0010|0010", "PatientName"), ("0010|0020", "PatientID"), ("0008|1030", "StudyDescription"),
                     ("0008|0060", "Modality")):
        if reader.HasMetaDataKey(0, tag):
            image.SetMetaData(key, reader.GetMetaData(0, tag).strip())
    return image


def ijk_to_ras_matrix(image: sitk.Image) -> np.ndarray:
    """4x4 IJK-to-RAS matrix of a SimpleITK image."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = LPS_TO_RAS @ np.array(image.GetOrigin(), dtype=float)
    return matrix


def _vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            matrix.SetElement(row, col, float(array[row, col]))
    return matrix


def node_ijk_to_ras(node) -> np.ndarray:
    """4x4 IJK-to-RAS matrix of a volume node as numpy."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_node_from_image(scene, image: sitk.Image, name: str, labelmap: bool = False):
    """Add a scalar (or label map) volume node holding ``image`` with its geometry."""
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(class_name, name)
    array = sitk.GetArrayFromImage(image)  # (k, j, i), the layout slicer.util.arrayFromVolume uses
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras_matrix(image)))
    node.CreateDefaultDisplayNodes()
    for key in ("PatientName", "PatientID", "StudyDescription", "Modality"):
        if image.HasMetaDataKey(key):
            node.SetAttribute(f"DICOM.{key}", image.GetMetaData(key))
    return node


def image_from_volume_node(node) -> sitk.Image:
    """SimpleITK image (LPS) with the voxels and geometry of a volume node."""
    image = sitk.GetImageFromArray(slicer.util.arrayFromVolume(node))
    matrix = node_ijk_to_ras(node)
    lps = np.linalg.inv(LPS_TO_RAS) @ matrix[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps / spacing).flatten().tolist())
    image.SetOrigin((np.linalg.inv(LPS_TO_RAS) @ matrix[:3, 3]).tolist())
    return image


def load_volume(scene, path: str | Path, name: str | None = None, require_contrast: bool = True):
    """Read an image file or DICOM folder into a scalar volume node; refuse empty or constant volumes."""
    image = read_image(path)
    if require_contrast:
        stats = sitk.MinimumMaximumImageFilter()
        stats.Execute(image)
        if not np.isfinite(stats.GetMinimum()) or stats.GetMinimum() == stats.GetMaximum():
            raise MSDTError(f"Image '{path}' is constant (every voxel {stats.GetMinimum():g}); "
                            "there is nothing to segment.")
    return volume_node_from_image(scene, image, name or _stem(path))


def _stem(path: str | Path) -> str:
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# ------------------------------------------------------------------------------------------ label maps

def resample_labels_to_volume(label_image: sitk.Image, reference_node) -> np.ndarray:
    """Label voxels on the grid of ``reference_node`` (nearest neighbour; exact when grids coincide)."""
    reference = image_from_volume_node(reference_node)
    resampled = sitk.Resample(sitk.Cast(label_image, sitk.sitkUInt16), reference, sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    return sitk.GetArrayFromImage(resampled)


def labels_on_volume_grid(path: str | Path, reference_node) -> np.ndarray:
    """Read a label map file and return its labels on the reference volume grid (k, j, i)."""
    image = read_image(path)
    values = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(values.dtype, np.integer) and not np.all(np.mod(values, 1) == 0):
        raise MSDTError(f"Label map '{path}' holds non-integer values; it looks like an image, not labels.")
    if not values.any():
        raise MSDTError(f"Label map '{path}' is empty (every voxel is 0).")
    array = resample_labels_to_volume(image, reference_node)
    if not array.any():
        raise MSDTError(f"Label map '{path}' does not overlap the image '{reference_node.GetName()}': "
                        "no labelled voxel falls inside the image's field of view.")
    return array


@contextmanager
def _temporary_labelmap(scene, labels: np.ndarray, reference_node, class_table: dict[int, str], name: str):
    """A label-map node on the reference grid whose colour table names each label; removed afterwards."""
    present = [int(v) for v in np.unique(labels) if v != 0]
    color_node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", f"{name}_colors")
    color_node.SetTypeToUser()
    color_node.SetNumberOfColors(max(present) + 1)
    color_node.SetColor(0, "background", 0, 0, 0, 0)
    for value in present:
        segment_name = class_table.get(value, f"label_{value}")
        color_node.SetColor(value, segment_name, *label_tables.segment_color(segment_name), 1.0)
    label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{name}_labels")
    try:
        slicer.util.updateVolumeFromArray(label_node, labels.astype(np.int32 if max(present) > 32767 else np.int16))
        label_node.SetIJKToRASMatrix(_vtk_matrix(node_ijk_to_ras(reference_node)))
        label_node.CreateDefaultDisplayNodes()
        label_node.GetDisplayNode().SetAndObserveColorNodeID(color_node.GetID())
        yield label_node
    finally:
        for node in (label_node, color_node):
            scene.RemoveNode(node)


def add_segments_from_labels(segmentation_node, labels: np.ndarray, reference_node, class_table: dict[int, str]):
    """Add one segment per label value present in ``labels`` (k, j, i on the reference grid)."""
    if not labels.any():
        raise MSDTError(f"Nothing to add to '{segmentation_node.GetName()}': the mask is empty.")
    scene = segmentation_node.GetScene()
    with _temporary_labelmap(scene, labels, reference_node, class_table, segmentation_node.GetName()) as node:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(node, segmentation_node):
            raise MSDTError(f"Labels could not be imported into '{segmentation_node.GetName()}'.")
    return segmentation_node


def new_segmentation(scene, reference_node, name: str):
    """Empty segmentation node on the geometry of ``reference_node``."""
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    return segmentation


def segmentation_from_labels(scene, labels: np.ndarray, reference_node, class_table: dict[int, str],
                             name: str = "Segmentation"):
    """Segmentation node with one segment per label value present (names and colours from the table)."""
    segmentation = new_segmentation(scene, reference_node, name)
    return add_segments_from_labels(segmentation, labels, reference_node, class_table)


def load_labelmap(scene, path: str | Path, reference_node, class_table=None, modality: str = "ct",
                  name: str | None = None):
    """Read a label map, resample it onto ``reference_node``'s grid and return a segmentation node."""
    table = label_tables.load_class_table(class_table, modality)
    labels = labels_on_volume_grid(path, reference_node)
    return segmentation_from_labels(scene, labels, reference_node, table, name or _stem(path))


def segment_names(segmentation_node) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def segment_array(segmentation_node, segment_name: str, reference_node) -> np.ndarray:
    """Boolean mask (k, j, i) of a segment on the reference volume grid."""
    segment_id = segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(segment_name)
    if not segment_id:
        raise MSDTError(f"Segmentation '{segmentation_node.GetName()}' has no segment '{segment_name}'.")
    scene = segmentation_node.GetScene()
    label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__msdt_export__")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, label_node, reference_node)
        return slicer.util.arrayFromVolume(label_node) > 0
    finally:
        scene.RemoveNode(label_node)


# ------------------------------------------------------------------------------------------------ scene

def _ensure_storage(scene) -> None:
    """Give every storable node a storage node and a file name, as the GUI's Save dialog does."""
    used = set()
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLStorableNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLStorableNode")
        if node.GetHideFromEditors() and not node.IsA("vtkMRMLColorTableNode"):
            continue
        storage = node.GetStorageNode()
        if storage is None:
            if not node.AddDefaultStorageNode():
                continue
            storage = node.GetStorageNode()
        if storage is None or (storage.GetFileName() and Path(storage.GetFileName()).name not in used):
            if storage is not None:
                used.add(Path(storage.GetFileName()).name)
            continue
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in node.GetName()) or node.GetID()
        extension = storage.GetDefaultWriteFileExtension()
        file_name = f"{stem}.{extension}"
        counter = 1
        while file_name in used:
            file_name = f"{stem}_{counter}.{extension}"
            counter += 1
        used.add(file_name)
        storage.SetFileName(file_name)


def save_mrb(scene, path: str | Path) -> Path:
    """Write the whole scene (nodes and data files) to a Medical Reality Bundle; returns the path."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    _ensure_storage(scene)
    with tempfile.TemporaryDirectory(prefix="msdt_mrb_") as work:
        partial = Path(work) / path.name
        if not scene.WriteToMRB(str(partial)) or not zipfile.is_zipfile(partial):
            raise MSDTError(f"The scene could not be written to '{path}'.")
        shutil.move(str(partial), path)
    return path


def load_mrb(path: str | Path):
    """Read a ``.mrb`` bundle into a new scene (see :func:`MSDTLib.app.new_scene`) and return the scene."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise MSDTError(f"'{path}' is not a Medical Reality Bundle (.mrb zip archive).")
    scene = new_scene()
    with tempfile.TemporaryDirectory(prefix="msdt_mrb_") as work:
        scene.SetURL(os.path.join(work, "unused.mrml"))
        if not scene.ReadFromMRB(str(path)):
            raise MSDTError(f"The scene bundle '{path}' could not be read.")
    return scene
