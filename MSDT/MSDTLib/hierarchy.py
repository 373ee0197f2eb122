"""Subject hierarchy of the twin: patient / scale (macro, meso, micro, nano) / study / nodes.

The Slicer GUI creates subject-hierarchy items for new nodes through its plugins; headless there are none,
so :class:`TwinHierarchy` places nodes explicitly, either one by one (:meth:`place`) or every node added
to the scene inside a :meth:`collect` block.
"""

from __future__ import annotations

from contextlib import contextmanager

import slicer
import vtk

SCALES = ("macro", "meso", "micro", "nano")
SCALE_ATTRIBUTE = "MSDT.Scale"

# Helper nodes that live beside data nodes and never get their own subject-hierarchy item.
_NOT_IN_HIERARCHY = ("vtkMRMLDisplayNode", "vtkMRMLStorageNode", "vtkMRMLColorNode",
                     "vtkMRMLSubjectHierarchyNode", "vtkMRMLSelectionNode", "vtkMRMLInteractionNode")


def belongs_in_hierarchy(node) -> bool:
    if node is None or node.GetHideFromEditors() or node.IsSingleton():
        return False
    return not any(node.IsA(class_name) for class_name in _NOT_IN_HIERARCHY)


class TwinHierarchy:
    """Patient / scale / study folders in the scene's subject hierarchy."""

    def __init__(self, scene, patient: str = "Patient"):
        self.scene = scene
        self.sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        self.patient_item = self._child(self.sh.GetSceneItemID(), patient, "patient")

    def _child(self, parent: int, name: str, kind: str) -> int:
        """Return the child item of ``parent`` called ``name``, creating it (patient, folder or study)."""
        existing = self.sh.GetItemChildWithName(parent, name)
        if existing:
            return existing
        if kind == "patient":
            return self.sh.CreateSubjectItem(parent, name)
        if kind == "study":
            return self.sh.CreateStudyItem(parent, name)
        item = self.sh.CreateFolderItem(parent, name)
        self.sh.SetItemAttribute(item, SCALE_ATTRIBUTE, name)
        return item

    def study_item(self, scale: str, study: str) -> int:
        """Return the item of ``study`` under the ``scale`` folder of the patient (created when missing)."""
        if scale not in SCALES:
            raise ValueError(f"Unknown scale '{scale}'; expected one of {', '.join(SCALES)}.")
        scale_item = self._child(self.patient_item, scale, "folder")
        return self._child(scale_item, study, "study")

    def place(self, node, scale: str, study: str) -> int:
        """Put ``node`` under patient / scale / study and return its item."""
        parent = self.study_item(scale, study)
        item = self.sh.GetItemByDataNode(node)
        if item:
            self.sh.SetItemParent(item, parent)
        else:
            item = self.sh.CreateItem(parent, node)
        return item

    @contextmanager
    def collect(self, scale: str, study: str):
        """Place every data node added to the scene inside the block under patient / scale / study."""
        added = []

        def on_node_added(caller, event, node=None):
            added.append(node)

        on_node_added.CallDataType = vtk.VTK_OBJECT
        tag = self.scene.AddObserver(self.scene.NodeAddedEvent, on_node_added)
        try:
            yield self
        finally:
            self.scene.RemoveObserver(tag)
            for node in added:
                if self.scene.IsNodePresent(node) and belongs_in_hierarchy(node) and not self.sh.GetItemByDataNode(node):
                    self.place(node, scale, study)

    def path_of(self, node) -> list[str]:
        """Names from the patient down to ``node``'s item (for checks and reports)."""
        item = self.sh.GetItemByDataNode(node)
        names = []
        while item and item != self.sh.GetSceneItemID():
            names.append(self.sh.GetItemName(item))
            item = self.sh.GetItemParent(item)
        return list(reversed(names))


def place_beside(node, reference_node, scale: str | None = None) -> int:
    """Put ``node`` under the patient and study of ``reference_node`` (in ``scale``, default the same)."""
    scene = reference_node.GetScene()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item, names = sh.GetItemByDataNode(reference_node), []
    while item and item != sh.GetSceneItemID():
        names.append(sh.GetItemName(item))
        item = sh.GetItemParent(item)
    names.reverse()
    if len(names) < 4:
        raise ValueError(f"'{reference_node.GetName()}' is not under patient / scale / study.")
    return TwinHierarchy(scene, names[0]).place(node, scale or names[1], names[2])
