"""MSDT (Anatomy): builds the anatomy twin of the spine and trunk from a CT or MR volume.

This file is the 3D Slicer front end only. The algorithms live in ``MSDTLib`` (imported lazily, inside the
methods that need it), which also runs without the Slicer GUI.
"""

import importlib
import logging
import os
import pathlib
import sys
import tempfile
import traceback
from typing import Annotated

import numpy as np
import slicer
import vtk
from MSDTWidgetTools import MSDTWidgetMixin
from slicer import (
    vtkMRMLModelNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from vtkSlicerMarkupsModuleMRMLPython import vtkMRMLMarkupsFiducialNode

#: Lowest value of the skin threshold spin box; the box shows it as "auto" and the pipeline then picks the
#: threshold from the image histogram.
SKIN_THRESHOLD_AUTO = -100000.0
SKIN_THRESHOLD_MAX = 100000.0

#: Radius (mm) range of the trabecular sphere in which the vertebral body density is measured.
SPHERE_RADIUS_RANGE_MM = (2.0, 20.0)

#: Texture mapping of each surface: (depth range along the normal in mm, reducer, colour map). Skin: mean grey
#: level of the outer 4 mm; vertebrae: peak of the outer 2 mm (the cortex). Same choices as ``msdt spine``.
SURFACE_TEXTURES = {
    "skin": ((-4.0, 0.0), "mean", "grey"),
    "vertebrae": ((-2.0, 0.0), "max", "iron"),
}

#: Python modules MSDTLib imports that a Slicer installation may lack -> pip requirement that provides them.
_PIP_NAMES = {
    "nibabel": "nibabel",
    "networkx": "networkx",
    "pydicom": "pydicom",
    "scipy": "scipy",
    "SimpleITK": "SimpleITK",
    "skimage": "scikit-image",
}


#
# MSDT
#


class MSDT(ScriptedLoadableModule):
    """Module description shown in the Slicer module panel (uses ScriptedLoadableModule base class)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MSDT Anatomy")
        self.parent.categories = ["MSDT"]
        self.parent.dependencies = []
        self.parent.contributors = ["MSDT contributors"]
        self.parent.helpText = _(
            "Builds the anatomy layer of a musculoskeletal digital twin of the spine and trunk from a CT or MR "
            "volume: the skin envelope (surface model, volume and area), bone (CT), the structures of an optional "
            "label map (for example a TotalSegmentator result, or TotalSegmentator run on the fly), per-vertebra "
            "landmarks with their depth under the skin, and a table of measurements. The segments can be exported "
            "as STL or OBJ surfaces in RAS or LPS coordinates. "
            'See <a href="https://github.com/msdt-project/SlicerMSDT">the project page</a> for details.'
        )
        self.parent.acknowledgementText = _(
            "Developed by the MSDT contributors. The test data are TotalSegmentator reference files "
            "(Wasserthal J. et al., Radiology: AI 2023, doi:10.1148/ryai.230024)."
        )


#
# MSDTParameterNode
#


@parameterNodeWrapper
class MSDTParameterNode:
    """Typed state of the module, kept in the scene.

    The ``SlicerParameterName`` properties in ``Resources/UI/MSDT.ui`` bind the widgets to these fields.
    """

    # Inputs
    inputVolume: vtkMRMLScalarVolumeNode
    labelMap: vtkMRMLScalarVolumeNode  # label map volumes are scalar volumes too
    modality: Annotated[str, Choice(["CT", "MR"]), Default("CT")]
    # Parameters
    skinThreshold: Annotated[
        float, WithinRange(SKIN_THRESHOLD_AUTO, SKIN_THRESHOLD_MAX), Default(SKIN_THRESHOLD_AUTO)
    ]
    boneThresholdHU: Annotated[float, WithinRange(-1024.0, 3071.0), Default(120.0)]
    useTotalSegmentator: bool
    # Spine characterisation
    sphereRadiusMM: Annotated[
        float, WithinRange(SPHERE_RADIUS_RANGE_MM[0], SPHERE_RADIUS_RANGE_MM[1]), Default(8.0)
    ]
    textureSurfaces: bool
    # Export
    exportDirectory: Annotated[pathlib.Path, Default(pathlib.Path.home())]
    exportFormat: Annotated[str, Choice(["STL", "OBJ"]), Default("STL")]
    exportCoordinateSystem: Annotated[str, Choice(["RAS", "LPS"]), Default("LPS")]
    # Outputs of the last run
    outputSegmentation: vtkMRMLSegmentationNode
    outputLandmarks: vtkMRMLMarkupsFiducialNode
    outputTable: vtkMRMLTableNode
    outputSkinModel: vtkMRMLModelNode
    # Outputs of the last spine characterisation
    outputSpineTable: vtkMRMLTableNode
    outputVertebraeModel: vtkMRMLModelNode
    spineSummary: str


#
# MSDTWidget
#


class MSDTWidget(MSDTWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI of the module (uses ScriptedLoadableModuleWidget base class)."""

    moduleTitle = "MSDT"

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._busy = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        # Widgets come from the .ui file; childWidgetVariables gives self.ui.<objectName> access to each.
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MSDT.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # The MRML widgets (node selectors, table view) need the scene: the .ui forwards it to them.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MSDTLogic()

        self.ui.progressBar.setVisible(False)

        # Forget the parameter node while the scene closes, pick it up again afterwards.
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.characteriseSpineButton.connect("clicked(bool)", self.onCharacteriseSpineButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self.removeObservers()

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onReload(self) -> None:
        """Developer "Reload": also drop the cached MSDTLib modules so that edits to the library take effect."""
        for name in list(sys.modules):
            if name == "MSDTLib" or name.startswith("MSDTLib."):
                del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if self._parameterNode.inputVolume is None:
            firstVolume = self.logic.firstIntensityVolume(slicer.mrmlScene)
            if firstVolume is not None:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode) -> None:
        """Bind the GUI to a parameter node (or to none); the widgets then follow the node and vice versa."""
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUIState)
            self._updateGUIState()

    def _updateGUIState(self, caller=None, event=None) -> None:
        parameterNode = self._parameterNode
        haveInput = parameterNode is not None and parameterNode.inputVolume is not None
        self.ui.applyButton.enabled = haveInput and not self._busy
        self.ui.applyButton.toolTip = (
            _("Build the anatomy twin of the selected volume") if haveInput else _("Select an input volume")
        )
        # The bone threshold is in Hounsfield units: it means nothing for MR.
        self.ui.boneThresholdSpinBox.enabled = parameterNode is not None and parameterNode.modality == "CT"

        haveSegmentation = parameterNode is not None and parameterNode.outputSegmentation is not None
        self.ui.exportButton.enabled = haveSegmentation and not self._busy
        self.ui.exportButton.toolTip = (
            _("Write one surface file per segment")
            if haveSegmentation
            else _("Build the anatomy twin first: there is no segmentation to export")
        )

        table = parameterNode.outputTable if parameterNode is not None else None
        if self.ui.resultsTableView.mrmlTableNode() is not table:
            self.ui.resultsTableView.setMRMLTableNode(table)

        # Spine characterisation: the vertebra levels come from the label map, so it needs one.
        haveLabels = haveInput and parameterNode.labelMap is not None
        self.ui.characteriseSpineButton.enabled = haveLabels and not self._busy
        if haveLabels:
            self.ui.characteriseSpineButton.toolTip = _(
                "Measure vertebral bodies, curvature, discs and bone density from the label map"
            )
        elif haveInput:
            self.ui.characteriseSpineButton.toolTip = _("Select a label map that names the vertebrae")
        else:
            self.ui.characteriseSpineButton.toolTip = _("Select an input volume and a label map")
        self.ui.spineSummaryLabel.text = (
            parameterNode.spineSummary if parameterNode is not None and parameterNode.spineSummary else ""
        )
        spineTable = parameterNode.outputSpineTable if parameterNode is not None else None
        if self.ui.spineTableView.mrmlTableNode() is not spineTable:
            self.ui.spineTableView.setMRMLTableNode(spineTable)

    def _setBusy(self, busy: bool) -> None:
        """The shared busy state plus this module's progress bar."""
        self.ui.progressBar.setVisible(busy)
        if busy:
            self.ui.progressBar.value = 0
            self.ui.progressBar.format = _("Starting...")
        MSDTWidgetMixin._setBusy(self, busy)

    def _onProgress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.value = int(round(100.0 * min(max(float(fraction), 0.0), 1.0)))
        self.ui.progressBar.format = f"{message} (%p%)"
        slicer.app.processEvents()

    def onApplyButton(self) -> None:
        """Run the pipeline. A bad input is reported in a message box and the scene stays as it was."""
        if not self._offerMissingPackage():
            return
        parameterNode = self._parameterNode
        result, ok = self._run(
            _("MSDT: cannot build the anatomy twin"),
            self.logic.process,
            parameterNode.inputVolume,
            labelMap=parameterNode.labelMap,
            modality=parameterNode.modality,
            skinThreshold=MSDTLogic.skinThresholdOrAuto(parameterNode.skinThreshold),
            boneThresholdHU=parameterNode.boneThresholdHU,
            useTotalSegmentator=parameterNode.useTotalSegmentator,
            progress=self._onProgress,
        )
        if not ok:
            return

        parameterNode.outputSegmentation = result.segmentation_node
        parameterNode.outputLandmarks = result.landmarks_node
        parameterNode.outputTable = result.table_node
        parameterNode.outputSkinModel = result.skin_model_node
        self.logic.showResult(result, parameterNode.inputVolume)
        logging.info(f"MSDT anatomy twin: {result.summary()}")
        slicer.util.showStatusMessage(_("Anatomy twin built"), 5000)

    def onCharacteriseSpineButton(self) -> None:
        """Measure the spine from the label map. A bad input is reported and the scene stays as it was."""
        if not self._offerMissingPackage():
            return
        parameterNode = self._parameterNode
        result, ok = self._run(
            _("MSDT: cannot characterise the spine"),
            self.logic.characteriseSpine,
            parameterNode.inputVolume,
            parameterNode.labelMap,
            modality=parameterNode.modality,
            sphereRadiusMM=parameterNode.sphereRadiusMM,
            progress=self._onProgress,
        )
        if not ok:
            return

        parameterNode.outputSpineTable = result.tables.get("bodies")
        parameterNode.spineSummary = MSDTLogic.spineSummaryText(result.summary)
        self.logic.showSpineResult(result)
        logging.info(f"MSDT spine characterisation: {parameterNode.spineSummary}")
        if parameterNode.textureSurfaces:
            self._textureSurfaces()
        slicer.util.showStatusMessage(_("Spine characterised"), 5000)

    def _textureSurfaces(self) -> None:
        """Map grey levels onto the skin (and vertebra) surfaces of the anatomy twin. A failure is reported
        but does not undo the spine characterisation, whose results stand on their own."""
        parameterNode = self._parameterNode
        if parameterNode.outputSkinModel is None:
            slicer.util.warningDisplay(
                _("Build the anatomy twin first: there is no skin surface to map the grey levels onto."),
                windowTitle=_("MSDT: texture mapping"),
            )
            return
        textured, ok = self._run(
            _("MSDT: texture mapping failed"),
            self.logic.textureSurfaces,
            parameterNode.inputVolume,
            parameterNode.outputSkinModel,
            segmentation=parameterNode.outputSegmentation,
            vertebraeModel=parameterNode.outputVertebraeModel,
        )
        if not ok:
            return
        if "vertebrae" in textured:
            parameterNode.outputVertebraeModel = textured["vertebrae"][0]
        for name, (_model, stats) in textured.items():
            logging.info(
                f"MSDT texture {name}: mean {stats.mean:.1f}, range {stats.min:.1f} to {stats.max:.1f}"
            )

    def onExportButton(self) -> None:
        """Write the segments of the last result as surface files."""
        parameterNode = self._parameterNode
        paths, ok = self._run(
            _("MSDT: export failed"),
            self.logic.exportSegments,
            parameterNode.outputSegmentation,
            parameterNode.exportDirectory,
            fileFormat=parameterNode.exportFormat,
            coordinateSystem=parameterNode.exportCoordinateSystem,
        )
        if not ok:
            return
        slicer.util.infoDisplay(
            _("Wrote {count} file(s) to {directory}").format(
                count=len(paths), directory=parameterNode.exportDirectory
            ),
            windowTitle=_("MSDT export"),
            detailedText="\n".join(str(path) for path in paths),
        )


#
# MSDTLogic
#


class MSDTLogic(ScriptedLoadableModuleLogic):
    """Thin adapter between the module GUI (or a Python script in Slicer) and ``MSDTLib``.

    No GUI calls here, so the logic can be used from the Python console and from the self-test.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return MSDTParameterNode(super().getParameterNode())

    @staticmethod
    def skinThresholdOrAuto(value):
        """Map the spin box value to the pipeline option: its lowest value ("auto") means None."""
        if value is None or float(value) <= SKIN_THRESHOLD_AUTO:
            return None
        return float(value)

    @staticmethod
    def firstIntensityVolume(scene):
        """The first scalar volume of the scene that is not a label map, or None."""
        for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode", scene):
            if not node.IsA("vtkMRMLLabelMapVolumeNode"):
                return node
        return None

    @staticmethod
    def missingPythonPackage():
        """The pip name of a third-party package MSDTLib cannot import, or None when everything imports."""
        try:
            importlib.import_module("MSDTLib.pipeline")
            importlib.import_module("MSDTLib.export")
            importlib.import_module("MSDTLib.spineworkflow")
            importlib.import_module("MSDTLib.texture")
        except ModuleNotFoundError as error:
            topLevel = (error.name or "").split(".")[0]
            if topLevel in _PIP_NAMES:
                return _PIP_NAMES[topLevel]
            raise
        return None

    def process(
        self,
        inputVolume,
        labelMap=None,
        modality: str = "CT",
        skinThreshold=None,
        boneThresholdHU: float = 120.0,
        useTotalSegmentator: bool = False,
        progress=None,
        scene=None,
    ):
        """Build the anatomy twin of ``inputVolume``; returns the ``MSDTLib.pipeline`` result object.

        Raises ``MSDTLib.errors.MSDTError`` for input the pipeline cannot work with.
        """
        from MSDTLib.errors import MSDTError
        from MSDTLib.pipeline import AnatomyOptions, build_anatomy_twin

        if inputVolume is None:
            raise MSDTError(_("Select an input volume."))
        if scene is None:
            scene = inputVolume.GetScene() or slicer.mrmlScene
        options = AnatomyOptions(
            modality=str(modality).lower(),
            skin_threshold=None if skinThreshold is None else float(skinThreshold),
            bone_threshold_hu=float(boneThresholdHU),
            use_totalsegmentator=bool(useTotalSegmentator),
        )
        if progress is None:
            progress = self._logProgress

        # build_anatomy_twin removes whatever it added if it fails: the scene is left as it was.
        return build_anatomy_twin(scene, inputVolume, label_node=labelMap, options=options, progress=progress)

    def exportSegments(self, segmentationNode, outputDirectory, fileFormat: str = "STL",
                       coordinateSystem: str = "LPS") -> list:
        """Write one surface file per segment; returns the written paths."""
        from MSDTLib.errors import MSDTError
        from MSDTLib.export import export_segments

        if segmentationNode is None:
            raise MSDTError(_("There is no segmentation to export: build the anatomy twin first."))
        if not outputDirectory or not str(outputDirectory).strip():
            raise MSDTError(_("Choose an output directory."))
        return export_segments(
            segmentationNode,
            str(outputDirectory),
            formats=(str(fileFormat).lower(),),
            coordinate_system=str(coordinateSystem).upper(),
        )

    def characteriseSpine(
        self,
        inputVolume,
        labelMap,
        modality: str = "CT",
        sphereRadiusMM: float = 8.0,
        progress=None,
        scene=None,
    ):
        """Measure the spine of ``inputVolume`` from the vertebrae of ``labelMap``; returns the
        ``MSDTLib.spineworkflow.SpineResult`` (summary dict, tables, endplate lines, spine curve, chart).

        Raises ``MSDTLib.errors.MSDTError`` for input it cannot work with; the scene is then left as it was.
        """
        from MSDTLib.errors import MSDTError
        from MSDTLib.spineworkflow import SpineOptions, characterise_spine

        if inputVolume is None:
            raise MSDTError(_("Select an input volume."))
        if labelMap is None:
            raise MSDTError(
                _("Select a label map that names the vertebrae (for example a TotalSegmentator result).")
            )
        modality = str(modality).lower()
        if modality not in ("ct", "mr"):
            raise MSDTError(_("Unknown modality '{modality}': expected CT or MR.").format(modality=modality))
        radius = float(sphereRadiusMM)
        if not SPHERE_RADIUS_RANGE_MM[0] <= radius <= SPHERE_RADIUS_RANGE_MM[1]:
            raise MSDTError(
                _(
                    "The density sphere radius must lie between {low:g} and {high:g} mm, not {radius:g}."
                ).format(low=SPHERE_RADIUS_RANGE_MM[0], high=SPHERE_RADIUS_RANGE_MM[1], radius=radius)
            )
        if scene is None:
            scene = inputVolume.GetScene() or slicer.mrmlScene
        options = SpineOptions(modality=modality, sphere_radius_mm=radius)
        # characterise_spine adds its nodes in one transaction: on failure the scene is left as it was.
        return characterise_spine(
            scene, inputVolume, labelMap, options, progress=progress or self._logProgress
        )

    @staticmethod
    def spineSummaryText(summary) -> str:
        """One line for the panel from a spine summary, e.g.
        "Cobb 7.1° (L1-L5, apex L4); lordosis 51.5°; kyphosis n/a (reason); L1 127 HU: indeterminate".

        A measure without a value shows "n/a" and the reason the library gave.
        """
        summary = summary or {}

        def missing(what: str, reason) -> str:
            return f"{what} n/a ({reason})" if reason else f"{what} n/a"

        parts = []
        cobbs = summary.get("cobb") or []
        major = cobbs[0] if cobbs else {}
        if major.get("angle_deg") is not None:
            span = "-".join(str(level) for level in (major.get("upper"), major.get("lower")) if level)
            where = ", ".join(
                text for text in (span, f"apex {major['apex']}" if major.get("apex") else "") if text
            )
            parts.append(f"Cobb {float(major['angle_deg']):.1f}°" + (f" ({where})" if where else ""))
        else:
            parts.append(missing("Cobb", major.get("reason")))

        for key in ("lordosis", "kyphosis"):
            entry = summary.get(key) or {}
            angle = entry.get("angle_deg", summary.get(f"{key}_deg"))
            if angle is not None:
                parts.append(f"{key} {float(angle):.1f}°")
            else:
                parts.append(missing(key, entry.get("reason")))

        screen = summary.get("osteoporosis")
        if screen is not None:
            level = screen.get("level") or "L1"
            if screen.get("hu") is not None:
                text = f"{level} {float(screen['hu']):.0f} HU"
                parts.append(f"{text}: {screen['category']}" if screen.get("category") else text)
            else:
                parts.append(missing(f"{level} HU", screen.get("reason")))

        notes = summary.get("notes") or []
        return "; ".join(parts + [str(note) for note in notes])

    @staticmethod
    def showSpineResult(result) -> None:
        """Show the endplate lines of the angles and the body height chart (in the layout's plot view)."""
        for line in result.lines or []:
            display = line.GetDisplayNode()
            if display is not None:
                display.SetVisibility(True)
        chart = result.chart_node
        plots = getattr(getattr(slicer, "modules", None), "plots", None)
        if chart is None or plots is None or not hasattr(plots, "logic"):
            return
        try:
            plots.logic().ShowChartInLayout(chart)
        except Exception:  # a layout without plot support must not spoil the measurement
            logging.warning(f"MSDT: cannot show the chart '{chart.GetName()}':\n{traceback.format_exc()}")

    def textureSurfaces(
        self, inputVolume, skinModel, segmentation=None, vertebraeModel=None, scene=None
    ) -> dict:
        """Map the grey levels of ``inputVolume`` onto the skin model and, when ``segmentation`` holds vertebra
        segments, onto one vertebrae model (``vertebraeModel`` is reused when given, else created).

        Returns {"skin" | "vertebrae": (model node, ``MSDTLib.texture.TextureStats``)}; see SURFACE_TEXTURES for
        the depths, reducers and colour maps. Raises ``MSDTError`` when there is nothing to texture.
        """
        from MSDTLib import io, labels, surfaces, texture
        from MSDTLib.errors import MSDTError

        if inputVolume is None:
            raise MSDTError(_("Select an input volume."))
        if skinModel is None:
            raise MSDTError(_("Build the anatomy twin first: there is no skin surface to texture."))
        if scene is None:
            scene = inputVolume.GetScene() or slicer.mrmlScene

        def apply(name, model):
            depth, reducer, colormap = SURFACE_TEXTURES[name]
            return model, texture.texture_model(
                scene, model, inputVolume, depth, reducer=reducer, colormap=colormap
            )

        textured = {"skin": apply("skin", skinModel)}

        names = io.segment_names(segmentation) if segmentation is not None else []
        levels = [name for name in names if labels.vertebra_level(name)]
        if not levels:
            return textured
        append = vtk.vtkAppendPolyData()
        for name in levels:
            append.AddInputData(surfaces.segment_polydata(segmentation, name))
        append.Update()
        polydata = vtk.vtkPolyData()
        polydata.DeepCopy(append.GetOutput())
        created = vertebraeModel is None or vertebraeModel.GetScene() is not scene
        if created:
            vertebraeModel = surfaces.model_from_polydata(
                scene, polydata, _("Vertebrae surface (grey levels)")
            )
        else:
            vertebraeModel.SetAndObservePolyData(polydata)
        try:
            textured["vertebrae"] = apply("vertebrae", vertebraeModel)
        except Exception:
            if created:
                scene.RemoveNode(vertebraeModel)
            raise
        return textured

    @staticmethod
    def showResult(result, inputVolume=None) -> None:
        """Show the input in the slice views and the segments as surfaces in the 3D view."""
        if inputVolume is not None:
            slicer.util.setSliceViewerLayers(background=inputVolume, fit=True)
        segmentation = result.segmentation_node
        if segmentation is not None:
            segmentation.CreateClosedSurfaceRepresentation()
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None and layoutManager.threeDViewCount > 0:
            layoutManager.threeDWidget(0).threeDView().resetFocalPoint()

    @staticmethod
    def _logProgress(fraction: float, message: str) -> None:
        logging.info(f"MSDT {100.0 * fraction:5.1f}% {message}")

    @staticmethod
    def _nodeIDs(scene) -> set:
        return {scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())}


#
# MSDTTest
#


class MSDTTest(ScriptedLoadableModuleTest):
    """Self-test, run by "Reload and Test" and by ctest (slicer_add_python_unittest)."""

    #: Directory of the TotalSegmentator sample volumes; found next to the source tree or via this variable.
    DATA_ENVIRONMENT_VARIABLE = "MSDT_TESTING_DATA_DIR"

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MSDT_RejectsMissingInput()
        self.setUp()
        self.test_MSDT_RejectsEmptyVolumeAndKeepsScene()
        self.setUp()
        self.test_MSDT_BuildAndExport()
        self.setUp()
        self.test_MSDT_SpineSummaryText()
        self.setUp()
        self.test_MSDT_CharacteriseSpine()

    def test_MSDT_RejectsMissingInput(self):
        from MSDTLib.errors import MSDTError

        self.delayDisplay("Missing input is rejected")
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(MSDTError):
            MSDTLogic().process(None)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.assertIsNone(MSDTLogic.skinThresholdOrAuto(SKIN_THRESHOLD_AUTO))
        self.assertEqual(MSDTLogic.skinThresholdOrAuto(-500.0), -500.0)

    def test_MSDT_RejectsEmptyVolumeAndKeepsScene(self):
        from MSDTLib.errors import MSDTError

        self.delayDisplay("A volume of air is rejected and the scene is left untouched")
        air = np.full((12, 16, 16), -1000, dtype=np.int16)
        volume = slicer.util.addVolumeFromArray(air, name="air")
        volume.SetSpacing(3.0, 3.0, 3.0)
        nodeIDsBefore = MSDTLogic._nodeIDs(slicer.mrmlScene)
        with self.assertRaises(MSDTError):
            MSDTLogic().process(volume, modality="CT")
        self.assertEqual(MSDTLogic._nodeIDs(slicer.mrmlScene), nodeIDsBefore)

    def test_MSDT_BuildAndExport(self):
        self.delayDisplay("Building the anatomy twin")
        volume, labelMap = self._loadSampleCT()
        progressCalls = []
        result = MSDTLogic().process(
            volume,
            labelMap=labelMap,
            modality="CT",
            progress=lambda fraction, message: progressCalls.append((fraction, message)),
        )
        self.assertTrue(progressCalls)
        self.assertIsNotNone(result.segmentation_node)
        self.assertGreater(result.segmentation_node.GetSegmentation().GetNumberOfSegments(), 0)
        self.assertIsNotNone(result.skin_model_node)
        self.assertIsNotNone(result.table_node)
        self.assertGreater(result.table_node.GetNumberOfRows(), 0)
        if labelMap is not None:  # vertebra landmarks need labelled vertebrae
            self.assertIsNotNone(result.landmarks_node)
            self.assertGreater(result.landmarks_node.GetNumberOfControlPoints(), 0)
        self.assertIsInstance(result.summary(), dict)

        self.delayDisplay("Exporting the segments")
        with tempfile.TemporaryDirectory() as outputDirectory:
            paths = MSDTLogic().exportSegments(result.segmentation_node, outputDirectory, "STL", "LPS")
            self.assertTrue(paths)
            for path in paths:
                self.assertTrue(os.path.isfile(path), path)
                self.assertGreater(os.path.getsize(path), 0, path)
        self.delayDisplay("Test passed")

    def test_MSDT_SpineSummaryText(self):
        self.delayDisplay("Spine summary line, with missing values and their reasons")
        text = MSDTLogic.spineSummaryText(
            {
                "cobb": [{"angle_deg": 7.08, "upper": "L1", "lower": "L5", "apex": "L4"}],
                "lordosis": {"angle_deg": 51.49, "upper": "L1", "lower": "S1"},
                "kyphosis": {"angle_deg": None, "reason": "T4 is not in the field of view"},
                "osteoporosis": {"level": "L1", "hu": 127.4, "category": "indeterminate", "reason": None},
            }
        )
        self.assertEqual(
            text,
            "Cobb 7.1° (L1-L5, apex L4); lordosis 51.5°; kyphosis n/a (T4 is not in the field of view); "
            "L1 127 HU: indeterminate",
        )

    def test_MSDT_CharacteriseSpine(self):
        from MSDTLib.errors import MSDTError

        self.delayDisplay("Characterising the spine")
        volume, labelMap = self._loadSpineSampleCT()
        nodeIDsBefore = MSDTLogic._nodeIDs(slicer.mrmlScene)
        with self.assertRaises(MSDTError):
            MSDTLogic().characteriseSpine(volume, None)
        self.assertEqual(MSDTLogic._nodeIDs(slicer.mrmlScene), nodeIDsBefore)
        if labelMap is None:
            self.delayDisplay("Spine sample data not found: characterisation skipped")
            return
        progressCalls = []
        result = MSDTLogic().characteriseSpine(
            volume,
            labelMap,
            modality="CT",
            sphereRadiusMM=8.0,
            progress=lambda fraction, message: progressCalls.append((fraction, message)),
        )
        self.assertTrue(progressCalls)
        summary = result.summary
        self.assertGreater(summary["lordosis_deg"], 35.0)
        self.assertLess(summary["lordosis_deg"], 65.0)
        self.assertGreater(summary["vertebrae"]["L1"]["height_middle_mm"], 15.0)
        self.assertGreater(result.tables["bodies"].GetNumberOfRows(), 0)
        self.assertTrue(result.lines)
        MSDTLogic.showSpineResult(result)
        text = MSDTLogic.spineSummaryText(summary)
        self.assertIn("lordosis", text)
        self.assertIn("HU", text)
        self.delayDisplay(text)

    def _loadSpineSampleCT(self):
        """(volume, label map or None): the full TotalSegmentator sample CT (T11-S1) and its vertebra labels, or
        the phantom without label map when the repository's test data cannot be found."""
        for directory in self._sampleDirectories():
            imagePath = os.path.join(directory, "example_ct.nii.gz")
            labelPath = os.path.join(directory, "spine_report", "totalseg.nii.gz")
            if os.path.isfile(imagePath) and os.path.isfile(labelPath):
                volume = slicer.util.loadVolume(imagePath)
                labelMap = slicer.util.loadLabelVolume(labelPath)
                # TotalSegmentator "total" class values: named from the library's class table (see _loadSampleCT).
                labelMap.GetDisplayNode().SetAndObserveColorNodeID("vtkMRMLColorTableNodeLabels")
                return volume, labelMap
        return self._spinePhantom(), None

    def _sampleDirectories(self) -> list:
        moduleDir = os.path.dirname(os.path.abspath(__file__))
        candidates = [
            os.environ.get(self.DATA_ENVIRONMENT_VARIABLE, ""),
            os.path.join(moduleDir, "..", "Testing", "Data", "totalsegmentator_ct_mr_spine"),
        ]
        return [directory for directory in candidates if directory]

    def _loadSampleCT(self):
        """(volume, label map or None): the TotalSegmentator sample CT and its segmentation when the
        repository's test data can be found (next to the source tree or via MSDT_TESTING_DATA_DIR), else a
        synthetic phantom without label map."""
        for directory in self._sampleDirectories():
            imagePath = os.path.join(directory, "example_ct_sm.nii.gz")
            labelPath = os.path.join(directory, "example_seg.nii.gz")
            if os.path.isfile(imagePath) and os.path.isfile(labelPath):
                volume = slicer.util.loadVolume(imagePath)
                labelMap = slicer.util.loadLabelVolume(labelPath)
                # The label values are TotalSegmentator "total" classes: with the generic "Labels" colour table
                # the pipeline names them from its TotalSegmentator class table.
                labelMap.GetDisplayNode().SetAndObserveColorNodeID("vtkMRMLColorTableNodeLabels")
                return volume, labelMap
        return self._spinePhantom(), None

    @staticmethod
    def _spinePhantom():
        """A crude CT of a trunk (3 mm voxels): air, skin-fat ring, soft tissue, vertebrae separated by discs."""
        slices, rows, columns = 40, 80, 110  # k (S), j (A), i (R)
        k, j, i = np.mgrid[0:slices, 0:rows, 0:columns]
        ci, cj = columns / 2.0, rows / 2.0
        body = ((i - ci) / 50.0) ** 2 + ((j - cj) / 33.0) ** 2 <= 1.0
        inner = ((i - ci) / 46.0) ** 2 + ((j - cj) / 29.0) ** 2 <= 1.0
        image = np.full(body.shape, -1000, dtype=np.int16)
        image[body] = -100  # subcutaneous fat
        image[inner] = 40  # soft tissue
        bodyCenterJ = cj - 14.0  # vertebral bodies lie posterior of the trunk centre
        vertebralBody = (i - ci) ** 2 + (j - bodyCenterJ) ** 2 <= 7.0**2
        canal = (i - ci) ** 2 + (j - (bodyCenterJ - 10.0)) ** 2 <= 3.0**2
        arch = ((i - ci) ** 2 + (j - (bodyCenterJ - 10.0)) ** 2 <= 5.5**2) & ~canal
        level = k % 8
        boneSlices = (level >= 1) & (level <= 6)
        image[vertebralBody & boneSlices] = 350
        image[vertebralBody & ~boneSlices] = 90  # intervertebral discs
        image[arch & boneSlices] = 700
        image[canal] = 10
        volume = slicer.util.addVolumeFromArray(image, name="MSDT phantom CT")
        volume.SetSpacing(3.0, 3.0, 3.0)
        volume.SetOrigin(-ci * 3.0, -cj * 3.0, 0.0)
        return volume
