"""A ready MRML scene outside the Slicer application.

``new_scene()`` wires what the Slicer application normally provides: application logic, colour logic
(default colour tables), subject hierarchy, segmentation converter rules and the data I/O managers needed
to write ``.mrb`` bundles.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

# Offscreen rendering must be chosen before vtk is imported; without it a render window segfaults headless.
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import slicer  # noqa: E402  (slicer-core: real MRML classes, no GUI)
import vtk  # noqa: E402

_converter_rules_registered = False
_vtk_messages = vtk.vtkStringOutputWindow()


def route_vtk_messages() -> vtk.vtkStringOutputWindow:
    """Collect VTK/MRML info and warning text in memory instead of flooding the terminal.

    Slicer's archive and storage classes print an "Info" line per file; errors that matter are raised as
    :class:`MSDTLib.errors.MSDTError` by MSDT. ``vtk_messages().GetOutput()`` returns what was collected.
    """
    vtk.vtkOutputWindow.SetInstance(_vtk_messages)
    return _vtk_messages


def vtk_messages() -> str:
    """Text VTK has printed since start-up (see :func:`route_vtk_messages`)."""
    return _vtk_messages.GetOutput() or ""



def register_segmentation_converters() -> None:
    """Register labelmap <-> closed-surface conversion rules once per process (the GUI does this at start-up)."""
    global _converter_rules_registered
    if _converter_rules_registered:
        return
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    known = {rule.GetName() for rule in factory.GetConverterRules()}
    for rule_class in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                       slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
        rule = rule_class()
        if rule.GetName() not in known:
            factory.RegisterConverterRule(rule)
    _converter_rules_registered = True


def new_scene() -> slicer.vtkMRMLScene:
    """Return an empty MRML scene with the logics and I/O managers a headless workflow needs."""
    register_segmentation_converters()
    route_vtk_messages()
    scene = slicer.vtkMRMLScene()

    cache = slicer.vtkCacheManager()
    io_manager = slicer.vtkDataIOManager()
    io_manager.SetCacheManager(cache)
    scene.SetCacheManager(cache)
    scene.SetDataIOManager(io_manager)

    app_logic = slicer.vtkMRMLApplicationLogic()
    app_logic.SetMRMLScene(scene)
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)
    app_logic.SetModuleLogic("Colors", colors)
    subject_hierarchy = slicer.vtkSlicerSubjectHierarchyModuleLogic()
    subject_hierarchy.SetMRMLScene(scene)
    app_logic.SetModuleLogic("SubjectHierarchy", subject_hierarchy)
    module_logics = [colors, subject_hierarchy]
    # Markups (JSON storage of control points) and Sequences register their node classes with the scene.
    for name, logic_class in (("Markups", slicer.vtkSlicerMarkupsLogic),
                              ("Sequences", slicer.vtkSlicerSequencesLogic)):
        logic = logic_class()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        module_logics.append(logic)

    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)  # the GUI always has one

    # Keep the logics alive as long as the scene (VTK holds only weak references back to Python objects).
    _SCENE_LOGICS[scene.GetAddressAsString("")] = (app_logic, io_manager, cache, *module_logics)
    return scene


_SCENE_LOGICS: dict[str, tuple] = {}


def shutdown_scene(scene: slicer.vtkMRMLScene) -> None:
    """Release the logics created for ``scene`` by :func:`new_scene`."""
    scene.Clear(1)
    _SCENE_LOGICS.pop(scene.GetAddressAsString(""), None)


@contextmanager
def scene_transaction(scene):
    """Undo on failure: nodes added inside the block are removed again if it raises, so a failed step
    leaves the scene as it found it (data recorded before the block is never touched)."""
    added = []

    def on_node_added(caller, event, node=None):
        added.append(node)

    on_node_added.CallDataType = vtk.VTK_OBJECT
    tag = scene.AddObserver(scene.NodeAddedEvent, on_node_added)
    try:
        yield added
    except BaseException:
        scene.RemoveObserver(tag)
        tag = None
        subject_hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        for node in reversed(added):
            if node is not None and scene.IsNodePresent(node):
                item = subject_hierarchy.GetItemByDataNode(node)
                if item:
                    subject_hierarchy.RemoveItem(item, False, False)
                scene.RemoveNode(node)
        raise
    finally:
        if tag is not None:
            scene.RemoveObserver(tag)
