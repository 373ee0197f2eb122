"""MSDT Fusion: markerless camera-to-skin registration and live OpenIGTLink data (tracking, ultrasound) for the MSDT
extension (musculoskeletal digital twin of the spine and trunk).

This file is the 3D Slicer front end only. The algorithms live in ``MSDTFusionLib`` (imported lazily, inside the
methods that need it), which also runs without the Slicer GUI.
"""

import importlib
import logging
import pathlib
import sys
import traceback
from typing import Annotated

import numpy as np
import qt
import slicer
import vtk
from MSDTWidgetTools import MSDTWidgetMixin
from slicer import vtkMRMLLinearTransformNode, vtkMRMLModelNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Default, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from vtkSlicerMarkupsModuleMRMLPython import vtkMRMLMarkupsFiducialNode

#: Standard OpenIGTLink port (PLUS Server's default).
DEFAULT_IGT_PORT = 18944
DEFAULT_IGT_HOST = "127.0.0.1"

#: How often the widget applies the received OpenIGTLink messages to the scene (ms), and every how many of those
#: ticks it refreshes the status line.
IGT_TIMER_INTERVAL_MS = 30
IGT_STATUS_EVERY_TICKS = 10

#: Name of the transform node a registration creates when no output transform is selected.
OUTPUT_TRANSFORM_NAME = "CameraToMRI"

#: Python modules MSDTFusionLib imports that a Slicer installation may lack -> pip requirement that provides them.
_PIP_NAMES = {
    "crcmod": "crcmod",
    "pyigtl": "pyigtl",
    "scipy": "scipy",
    "SimpleITK": "SimpleITK",
}


#
# MSDTFusion
#


class MSDTFusion(ScriptedLoadableModule):
    """Module description shown in the Slicer module panel (uses ScriptedLoadableModule base class)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MSDT Fusion")
        self.parent.categories = ["MSDT"]
        self.parent.dependencies = ["MSDT"]  # MSDTFusionLib uses MSDTLib (errors, scene helpers)
        self.parent.contributors = ["MSDT contributors"]
        self.parent.helpText = _(
            "Brings the patient into the image space of the anatomy twin. Markerless registration: a depth-camera "
            "point cloud of the skin is registered to the CT/MR skin surface with no markers and no initial pose; "
            "the panel reports the RMS distance, inlier and overlap fractions, whether the fit converged, whether "
            "the pose is ambiguous or weakly constrained, and the target registration error when landmarks are "
            "given. The result is a CameraToMRI transform. OpenIGTLink: tracker transforms and live ultrasound "
            "(for example from PLUS Server) are received into the scene, their Image -> Probe -> Tracker -> "
            "Reference chain placed under a Reference-to-MRI transform, and can be recorded into sequences. "
            'See <a href="https://github.com/msdt-project/SlicerMSDT">the project page</a> for details.'
        )
        self.parent.acknowledgementText = _(
            "Developed by the MSDT contributors. OpenIGTLink through pyigtl; the test recording is a PLUS "
            "tracked-ultrasound sequence."
        )


#
# MSDTFusionParameterNode
#


@parameterNodeWrapper
class MSDTFusionParameterNode:
    """Typed state of the module, kept in the scene.

    The ``SlicerParameterName`` properties in ``Resources/UI/MSDTFusion.ui`` bind the widgets to these fields. The
    point cloud file path is read from its line edit directly (an empty path means "use the model").
    """

    # Markerless registration
    fixedModel: vtkMRMLModelNode
    movingModel: vtkMRMLModelNode
    fixedLandmarks: vtkMRMLMarkupsFiducialNode
    movingLandmarks: vtkMRMLMarkupsFiducialNode
    outputTransform: vtkMRMLLinearTransformNode
    # Outputs of the last registration
    outputCloud: vtkMRMLModelNode
    registrationSummary: str
    # OpenIGTLink
    host: Annotated[str, Default(DEFAULT_IGT_HOST)]
    port: Annotated[int, WithinRange(1, 65535), Default(DEFAULT_IGT_PORT)]
    referenceToMri: vtkMRMLLinearTransformNode
    recordingDirectory: Annotated[pathlib.Path, Default(pathlib.Path.home())]


#
# MSDTFusionWidget
#


class MSDTFusionWidget(MSDTWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI of the module (uses ScriptedLoadableModuleWidget base class)."""

    moduleTitle = "MSDT Fusion"

    def _parameterNodeObserver(self):
        return self._onParameterNodeModified

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._busy = False
        self._timer = None
        self._ticks = 0

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        # Widgets come from the .ui file; childWidgetVariables gives self.ui.<objectName> access to each.
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MSDTFusion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # The node selectors need the scene: the .ui forwards it to them.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MSDTFusionLogic()

        # Received OpenIGTLink messages are applied to the scene on the main thread, by this timer.
        self._timer = qt.QTimer()
        self._timer.setInterval(IGT_TIMER_INTERVAL_MS)
        self._timer.connect("timeout()", self._onTimer)

        # Stop the live data while the scene closes (its nodes go away), pick the parameter node up afterwards.
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.movingCloudPathLineEdit.connect("currentPathChanged(QString)", self._updateGUIState)
        self.ui.registerButton.connect("clicked(bool)", self.onRegisterButton)
        self.ui.connectButton.connect("toggled(bool)", self.onConnectToggled)
        self.ui.recordButton.connect("toggled(bool)", self.onRecordToggled)
        self.ui.saveRecordingButton.connect("clicked(bool)", self.onSaveRecordingButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed: stop the timer and the client."""
        if self._timer is not None:
            self._timer.stop()
        if self.logic is not None:
            try:
                self.logic.disconnect()
            except Exception:  # closing must go on whatever the network does
                logging.error(traceback.format_exc())
        self.removeObservers()

    def onSceneStartClose(self, caller, event) -> None:
        if self.logic is not None:
            # The nodes of the live data and of the recording go with the scene: stop without applying more.
            self._timer.stop()
            self.logic.disconnect(applyPending=False)
            self.logic.recorder = None
            self._setConnected(False)
        self.setParameterNode(None)

    def onReload(self) -> None:
        """Developer "Reload": stop the client and drop the cached MSDTFusionLib modules so that edits take effect."""
        self.cleanup()
        for name in list(sys.modules):
            if name == "MSDTFusionLib" or name.startswith("MSDTFusionLib."):
                del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        # A new Reference-to-MRI transform applies to the live chain at once.
        if self.logic.isConnected() and self._parameterNode is not None:
            self.logic.setReferenceToMri(self._parameterNode.referenceToMri)
        self._updateGUIState()

    def _movingCloudPath(self) -> str:
        return str(self.ui.movingCloudPathLineEdit.currentPath or "").strip()

    def _updateGUIState(self, caller=None, event=None) -> None:
        parameterNode = self._parameterNode
        haveFixed = parameterNode is not None and parameterNode.fixedModel is not None
        haveMoving = parameterNode is not None and (
            parameterNode.movingModel is not None or bool(self._movingCloudPath())
        )
        self.ui.registerButton.enabled = haveFixed and haveMoving and not self._busy
        if not haveFixed:
            self.ui.registerButton.toolTip = _("Select the skin surface of the image (a model)")
        elif not haveMoving:
            self.ui.registerButton.toolTip = _("Select the camera point cloud: a model or a file")
        else:
            self.ui.registerButton.toolTip = _("Register the camera cloud to the skin surface")
        self.ui.registrationResultLabel.text = (
            parameterNode.registrationSummary
            if parameterNode is not None and parameterNode.registrationSummary
            else ""
        )

        connected = self.logic is not None and self.logic.isConnected()
        self.ui.hostLineEdit.enabled = not connected
        self.ui.portSpinBox.enabled = not connected
        recording = connected and self.logic.isRecording()
        self.ui.recordButton.enabled = connected and not self._busy
        self.ui.recordButton.toolTip = (
            _("Record every received transform and image into sequences")
            if connected
            else _("Connect to an OpenIGTLink server first")
        )
        haveRecording = self.logic is not None and self.logic.recordedFrames() > 0
        self.ui.saveRecordingButton.enabled = haveRecording and not recording and not self._busy
        self.ui.saveRecordingButton.toolTip = (
            _("Write the recording (.mrb and .seq.nrrd) to the recording directory")
            if haveRecording
            else _("Record something first")
        )

    # ------------------------------------------------------------------ markerless registration

    def onRegisterButton(self) -> None:
        """Register the camera cloud (file if one is given, else the model) to the skin surface."""
        if not self._offerMissingPackage():
            return
        parameterNode = self._parameterNode
        errorTitle = _("MSDT Fusion: cannot register")
        movingPoints, ok = self._run(
            errorTitle, self.logic.movingPoints, parameterNode.movingModel, self._movingCloudPath()
        )
        if not ok:
            return
        registered, ok = self._run(
            errorTitle,
            self.logic.registerSurface,
            parameterNode.fixedModel,
            movingPoints,
            fixedLandmarks=parameterNode.fixedLandmarks,
            movingLandmarks=parameterNode.movingLandmarks,
            outputTransform=parameterNode.outputTransform,
        )
        if not ok:
            return
        result, nodes, tre = registered

        # One registered cloud at a time: the previous one goes, unless it is this registration's input.
        previous = parameterNode.outputCloud
        if (
            previous is not None
            and previous is not nodes["moving"]
            and previous is not parameterNode.movingModel
        ):
            MSDTFusionLogic.removeWithDisplayNodes(slicer.mrmlScene, previous)
        parameterNode.outputCloud = nodes["moving"]
        if result.converged:
            parameterNode.outputTransform = nodes["transform"]
            if parameterNode.referenceToMri is None:
                parameterNode.referenceToMri = nodes["transform"]
        parameterNode.registrationSummary = MSDTFusionLogic.resultText(result, tre)
        logging.info(f"MSDT Fusion registration: {result.message}")
        slicer.util.showStatusMessage(
            _("Registered") if result.reliable else _("Registration done: check the warnings"), 5000
        )

    # ------------------------------------------------------------------ OpenIGTLink

    def onConnectToggled(self, checked: bool) -> None:
        if checked == self.logic.isConnected():
            return
        if checked and not self._offerMissingPackage():
            self._setConnected(False)
            return
        self._setConnected(checked)

    def _setConnected(self, connect: bool) -> None:
        """Start (or stop) the client and the timer that applies its messages; keeps the button in step."""
        parameterNode = self._parameterNode
        if connect and parameterNode is not None:
            _client, ok = self._run(
                _("MSDT Fusion: cannot connect"),
                self.logic.connect,
                parameterNode.host,
                parameterNode.port,
                parameterNode.referenceToMri,
            )
            if ok:
                self._ticks = 0
                self._timer.start()
        else:
            self._timer.stop()
            self._run(_("MSDT Fusion: disconnect failed"), self.logic.disconnect)
        connected = self.logic.isConnected()
        wasBlocked = self.ui.connectButton.blockSignals(True)
        self.ui.connectButton.checked = connected
        self.ui.connectButton.text = _("Disconnect") if connected else _("Connect")
        self.ui.connectButton.blockSignals(wasBlocked)
        self._showRecordingState()

    def _onTimer(self) -> None:
        try:
            self.logic.processPending()
        except Exception:  # never let an exception stop the timer loop silently
            logging.error(traceback.format_exc())
        self._ticks += 1
        if self._ticks % IGT_STATUS_EVERY_TICKS == 0:
            self._updateIgtStatus()

    def _updateIgtStatus(self) -> None:
        frames = self.logic.recordedFrames() if self.logic.recorder is not None else None
        self.ui.igtStatusLabel.text = MSDTFusionLogic.statusText(
            self.logic.statistics(), recordedFrames=frames
        )

    def onRecordToggled(self, checked: bool) -> None:
        if checked:
            self._run(_("MSDT Fusion: cannot record"), self.logic.startRecording)
        else:
            self._run(_("MSDT Fusion: cannot stop recording"), self.logic.stopRecording)
        self._showRecordingState()

    def _showRecordingState(self) -> None:
        """Keep the record button (checked state, text), the status line and the buttons in step with the logic."""
        recording = self.logic.isRecording()
        wasBlocked = self.ui.recordButton.blockSignals(True)
        self.ui.recordButton.checked = recording
        self.ui.recordButton.text = _("Stop recording") if recording else _("Record")
        self.ui.recordButton.blockSignals(wasBlocked)
        self._updateIgtStatus()
        self._updateGUIState()

    def onSaveRecordingButton(self) -> None:
        directory = self._parameterNode.recordingDirectory if self._parameterNode is not None else None
        written, ok = self._run(
            _("MSDT Fusion: cannot save the recording"), self.logic.saveRecording, directory
        )
        if not ok:
            return
        paths = [written["mrb"], *written.get("seq_nrrd", [])]
        slicer.util.infoDisplay(
            _("Wrote the recording to {directory}").format(directory=directory),
            windowTitle=_("MSDT Fusion recording"),
            detailedText="\n".join(str(path) for path in paths),
        )


#
# MSDTFusionLogic
#


class MSDTFusionLogic(ScriptedLoadableModuleLogic):
    """Thin adapter between the module GUI (or a Python script in Slicer) and ``MSDTFusionLib``.

    No GUI calls here, so the logic can be used from the Python console and from the self-test. The OpenIGTLink
    client receives on a background thread; :meth:`processPending` must be called from the main thread (the
    widget does it with a timer) to apply what arrived to the scene.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.client = None
        self.recorder = None
        self._igtScene = None
        self._lastStatistics = None
        self._referenceToMriID = None

    def getParameterNode(self):
        return MSDTFusionParameterNode(super().getParameterNode())

    @staticmethod
    def missingPythonPackage():
        """The pip name of a third-party package MSDTFusionLib cannot import, or None when everything imports."""
        try:
            for name in ("registration", "registerworkflow", "igt", "recording"):
                importlib.import_module(f"MSDTFusionLib.{name}")
        except ModuleNotFoundError as error:
            topLevel = (error.name or "").split(".")[0]
            if topLevel in _PIP_NAMES:
                return _PIP_NAMES[topLevel]
            raise
        return None

    # ------------------------------------------------------------------ markerless registration

    @staticmethod
    def movingPoints(movingModel=None, path=None) -> np.ndarray:
        """The camera cloud as (N, 3) points (mm): read from ``path`` when one is given (the file wins), else the
        points of ``movingModel`` in its own (camera) frame. Raises MSDTError when there is neither."""
        from vtk.util.numpy_support import vtk_to_numpy

        from MSDTFusionLib import pointclouds
        from MSDTLib.errors import MSDTError

        if path is not None and str(path).strip():
            return pointclouds.read_point_cloud(str(path).strip())
        if movingModel is None:
            raise MSDTError(_("Select the camera point cloud: a model node or a point cloud file."))
        polydata = movingModel.GetPolyData()
        if polydata is None or polydata.GetPoints() is None or polydata.GetNumberOfPoints() == 0:
            raise MSDTError(
                _("The camera cloud model '{name}' has no points.").format(name=movingModel.GetName())
            )
        return pointclouds.as_points(vtk_to_numpy(polydata.GetPoints().GetData()), "camera point cloud")

    @staticmethod
    def worldPolyData(modelNode):
        """The surface of ``modelNode`` in world (RAS) coordinates: its parent transforms applied, if any."""
        polydata = modelNode.GetPolyData()
        parent = modelNode.GetParentTransformNode()
        if polydata is None or parent is None:
            return polydata
        toWorld = vtk.vtkGeneralTransform()
        parent.GetTransformToWorld(toWorld)
        transformer = vtk.vtkTransformPolyDataFilter()
        transformer.SetTransform(toWorld)
        transformer.SetInputData(polydata)
        transformer.Update()
        world = vtk.vtkPolyData()
        world.DeepCopy(transformer.GetOutput())
        return world

    @staticmethod
    def pairedLandmarks(movingLandmarks, fixedLandmarks):
        """(names, moving (N, 3), fixed (N, 3)) of two markups nodes, paired by label when every camera label is
        found among the skin landmarks, else by order (the counts must then agree)."""
        from MSDTFusionLib import registerworkflow, tre
        from MSDTLib.errors import MSDTError

        sets = []
        for node in (movingLandmarks, fixedLandmarks):
            points = tre.markups_points(node)
            if not points:
                raise MSDTError(
                    _("The landmarks '{name}' have no control point.").format(name=node.GetName())
                )
            sets.append(
                registerworkflow.Landmarks(list(points), np.array(list(points.values()), dtype=float))
            )
        return registerworkflow.paired(sets[0], sets[1])

    def registerSurface(
        self,
        fixedModel,
        movingPoints,
        fixedLandmarks=None,
        movingLandmarks=None,
        scene=None,
        outputTransform=None,
        options=None,
    ):
        """Register the camera cloud ``movingPoints`` ((N, 3) mm, or a model node) to the skin surface of
        ``fixedModel`` (world RAS); returns ``(result, nodes, tre)``.

        ``result`` is the ``MSDTFusionLib.registration.RegistrationResult`` (``matrix``: camera -> RAS). ``nodes``
        holds "fixed" (``fixedModel``), "moving" (a new model of the cloud, under the transform) and "transform".
        The transform is ``outputTransform`` when one is given and the registration converged; otherwise a new
        node (``CameraToMRI``, or a "not converged" one, so that a failed fit never overwrites a transform in use).
        ``tre`` is the target registration error dict of ``MSDTFusionLib.tre`` when both landmark sets are given,
        else None. Raises ``MSDTError`` for missing or unusable inputs, leaving the scene as it was.
        """
        from MSDTFusionLib import registerworkflow, registration, tre
        from MSDTLib.app import scene_transaction
        from MSDTLib.errors import MSDTError

        if fixedModel is None:
            raise MSDTError(_("Select the skin surface of the image (a model node)."))
        fixedPolyData = self.worldPolyData(fixedModel)
        if (
            fixedPolyData is None
            or fixedPolyData.GetNumberOfPoints() == 0
            or fixedPolyData.GetNumberOfPolys() == 0
        ):
            raise MSDTError(
                _("The skin model '{name}' holds no surface (no triangles).").format(
                    name=fixedModel.GetName()
                )
            )
        if movingPoints is None:
            raise MSDTError(_("Select the camera point cloud: a model node or a point cloud file."))
        if hasattr(movingPoints, "GetPolyData"):
            movingPoints = self.movingPoints(movingPoints)
        if (fixedLandmarks is None) != (movingLandmarks is None):
            raise MSDTError(
                _("Select both the skin and the camera landmarks to measure the TRE, or neither.")
            )
        landmarks = (
            self.pairedLandmarks(movingLandmarks, fixedLandmarks) if fixedLandmarks is not None else None
        )
        if scene is None:
            scene = fixedModel.GetScene() or slicer.mrmlScene

        result = registration.register_cloud_to_surface(movingPoints, fixedPolyData, options=options)
        errors = None
        if landmarks is not None:
            names, movingLandmarkPoints, fixedLandmarkPoints = landmarks
            errors = tre.target_registration_error(
                result.matrix, movingLandmarkPoints, fixedLandmarkPoints, names
            )

        with scene_transaction(scene):
            nodes = registerworkflow.registration_nodes(scene, fixedPolyData, movingPoints, result)
            # The selected skin model is the fixed surface: no copy of it.
            self.removeWithDisplayNodes(scene, nodes["fixed"])
            nodes["fixed"] = fixedModel
            created = nodes["transform"]
            if not result.converged:
                created.SetName(scene.GenerateUniqueName(f"{OUTPUT_TRANSFORM_NAME} (not converged)"))
            elif (
                outputTransform is not None
                and outputTransform.GetScene() is scene
                and outputTransform is not created
            ):
                matrix = vtk.vtkMatrix4x4()
                created.GetMatrixTransformToParent(matrix)
                outputTransform.SetMatrixTransformToParent(matrix)
                outputTransform.SetAndObserveTransformNodeID(None)  # camera -> world RAS, as computed
                for name in created.GetAttributeNames():  # the quality numbers (MSDT.rms_mm, ...)
                    outputTransform.SetAttribute(name, created.GetAttribute(name))
                nodes["moving"].SetAndObserveTransformNodeID(outputTransform.GetID())
                scene.RemoveNode(created)
                nodes["transform"] = outputTransform
        return result, nodes, errors

    @staticmethod
    def removeWithDisplayNodes(scene, node) -> None:
        """Remove ``node`` and its display nodes from ``scene``."""
        displayNodes = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        scene.RemoveNode(node)
        for displayNode in displayNodes:
            if displayNode is not None and scene.IsNodePresent(displayNode):
                scene.RemoveNode(displayNode)

    @staticmethod
    def resultText(result, tre=None) -> str:
        """The registration quality in plain words for the panel (one statement a line)."""
        if result is None:
            return ""
        uncertainty = getattr(result, "uncertainty", None) or {}
        converged = bool(result.converged)
        ambiguous = bool(uncertainty.get("ambiguous", False))
        degenerate = bool(uncertainty.get("degenerate", False))
        reliable = bool(getattr(result, "reliable", converged and not ambiguous and not degenerate))

        def percent(value) -> str:
            return f"{100.0 * float(value):.0f} %"

        rms = float(result.rms_mm)
        lines = [
            _("{head}: RMS {rms} mm, inliers {inliers}, overlap {overlap}, converged: {converged}.").format(
                head=_("Registered") if converged else _("Registration failed"),
                rms=f"{rms:.2f}" if np.isfinite(rms) else "n/a",
                inliers=percent(result.inlier_fraction),
                overlap=percent(result.overlap),
                converged=_("yes") if converged else _("no"),
            )
        ]
        if reliable:
            lines.append(_("Reliable: one clear pose, constrained in every direction."))
        if not converged:
            notes = str(getattr(result, "message", "") or "").split("; ")[1:]
            lines.append(
                _("Not reliable: the fit did not converge; do not use this transform.")
                + (" " + _("Why: {notes}.").format(notes="; ".join(notes)) if notes else "")
            )
        if ambiguous:
            second = uncertainty.get("second_best") or {}
            where = ""
            if second.get("rotation_deg") is not None and second.get("translation_mm") is not None:
                where = _(" ({rotation:.0f}° and {translation:.0f} mm away)").format(
                    rotation=float(second["rotation_deg"]), translation=float(second["translation_mm"])
                )
            lines.append(
                _(
                    "Warning, ambiguous: another pose{where} fits the skin almost as well (for example a "
                    "head-to-foot flip of a symmetric back). Check the result visually or capture more of the body."
                ).format(where=where)
            )
        if degenerate:
            weakest = uncertainty.get("weakest_direction") or {}
            kind = weakest.get("kind") or _("motion")
            axis = weakest.get("axis")
            lines.append(
                _(
                    "Warning, weakly constrained: the surface hardly fixes the {kind}{along}, so the pose may "
                    "slide that way. Capture a larger or more curved part of the body."
                ).format(kind=kind, along=_(" along {axis}").format(axis=axis) if axis else "")
            )
        translationSD = uncertainty.get("translation_sd_mm")
        rotationSD = uncertainty.get("rotation_sd_deg")
        if translationSD is not None and rotationSD is not None:
            axes = ("R-L", "A-P", "S-I")
            lines.append(
                _("Pose SD: translation {translation} mm; rotation {rotation}°.").format(
                    translation=", ".join(
                        f"{a} {float(v):.2f}" for a, v in zip(axes, translationSD, strict=False)
                    ),
                    rotation=", ".join(f"{a} {float(v):.2f}" for a, v in zip(axes, rotationSD, strict=False)),
                )
            )
        if tre:
            lines.append(
                _(
                    "TRE over {count} landmark(s): mean {mean:.2f} mm, max {max:.2f} mm (worst: {worst})."
                ).format(
                    count=int(tre.get("count", len(tre.get("errors_mm", [])))),
                    mean=float(tre["mean_mm"]),
                    max=float(tre["max_mm"]),
                    worst=tre.get("worst", "?"),
                )
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ OpenIGTLink

    def connect(self, host, port, referenceToMri=None, scene=None, **clientOptions):
        """Start receiving from the OpenIGTLink server at ``host``:``port`` (in the background, reconnecting while
        the server is away); returns the ``MSDTFusionLib.igt.IgtClient``. A previous connection is closed first.
        ``clientOptions`` go to the client (e.g. ``retry_interval``). Call :meth:`processPending` regularly."""
        from MSDTFusionLib.igt import IgtClient
        from MSDTLib.errors import MSDTError

        host = str(host or "").strip()
        if not host:
            raise MSDTError(_("Enter the host name or address of the OpenIGTLink server (e.g. 127.0.0.1)."))
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise MSDTError(_("The port must be a number, not '{port}'.").format(port=port)) from None
        if not 1 <= port <= 65535:
            raise MSDTError(_("The port must lie between 1 and 65535, not {port}.").format(port=port))
        self.disconnect()
        if scene is None:
            scene = (referenceToMri.GetScene() if referenceToMri is not None else None) or slicer.mrmlScene
        self._igtScene = scene
        self._lastStatistics = None
        self.client = IgtClient(
            scene, host, port, reconnect=True, reference_to_mri=referenceToMri, **clientOptions
        )
        self._referenceToMriID = referenceToMri.GetID() if referenceToMri is not None else None
        self.client.start()
        return self.client

    def disconnect(self, applyPending: bool = True) -> None:
        """Stop the client and a recording in progress; with ``applyPending`` what was already received is
        applied to the scene (and recorded) first."""
        client, self.client = self.client, None
        if client is None:
            return
        client.stop()
        if applyPending:
            client.process_pending()
        if self.recorder is not None and self.recorder.recording:
            self.recorder.stop()
        self._lastStatistics = client.statistics()

    def isConnected(self) -> bool:
        """Whether a client is running (it may be waiting for the server: see :meth:`statistics`)."""
        return self.client is not None

    def processPending(self) -> int:
        """Apply the received messages to the scene (main thread); returns how many were applied."""
        return self.client.process_pending() if self.client is not None else 0

    def setReferenceToMri(self, node) -> None:
        """Hang the live Image -> Probe -> Tracker -> Reference chain under ``node`` (None: at the top)."""
        nodeID = node.GetID() if node is not None else None
        if self.client is not None and nodeID != self._referenceToMriID:
            self.client.set_reference_to_mri(node)
        self._referenceToMriID = nodeID

    def statistics(self):
        """Counters of the running client, or of the last one after a disconnect, or None."""
        return self.client.statistics() if self.client is not None else self._lastStatistics

    @staticmethod
    def statusText(statistics, recordedFrames=None) -> str:
        """Two lines for the panel from ``IgtClient.statistics()``: the connection state, then frame rate, median
        latency, dropped messages and reconnects (and errors, and the recorded frames when given)."""
        if not statistics:
            return _("Not connected.")
        status = str(statistics.get("status") or _("unknown state"))
        devices = statistics.get("devices") or {}
        fps = statistics.get("image_fps")
        what = _("image")
        if fps is None:
            rates = [d.get("fps") for d in devices.values() if d.get("fps")]
            fps, what = (max(rates), _("tracking")) if rates else (None, what)
        latency = statistics.get("latency_median_ms")
        reconnects = int(statistics.get("reconnects") or 0)
        numbers = [
            _("{what} {fps:.1f} fps").format(what=what, fps=float(fps))
            if fps is not None
            else _("no frame rate yet"),
            _("latency {latency:.1f} ms (median)").format(latency=float(latency))
            if latency is not None
            else _("latency n/a"),
            _("{count} dropped").format(count=int(statistics.get("dropped") or 0)),
            _("{count} reconnect(s)").format(count=reconnects),
            _("{count} message(s)").format(count=int(statistics.get("received") or 0)),
        ]
        errors = int(statistics.get("errors") or 0)
        if errors:
            last = statistics.get("last_error")
            numbers.append(
                _("{count} error(s), last: {error}").format(count=errors, error=last)
                if last
                else _("{count} error(s)").format(count=errors)
            )
        if recordedFrames is not None:
            numbers.append(_("recorded {count} frame(s)").format(count=int(recordedFrames)))
        numbers[0] = numbers[0][:1].upper() + numbers[0][1:]
        return status[:1].upper() + status[1:] + "\n" + ", ".join(numbers)

    def startRecording(self):
        """Record everything the client applies into sequence nodes; returns the ``Recorder``."""
        from MSDTFusionLib.recording import Recorder
        from MSDTLib.errors import MSDTError

        if self.client is None:
            raise MSDTError(_("Connect to an OpenIGTLink server before recording."))
        if self.recorder is not None and self.recorder.recording:
            return self.recorder
        self.recorder = Recorder(self._igtScene, self.client).start()
        return self.recorder

    def stopRecording(self):
        """Stop recording; returns the sequence browser node (None when nothing was recorded)."""
        if self.recorder is None:
            return None
        return self.recorder.stop()

    def isRecording(self) -> bool:
        return self.recorder is not None and self.recorder.recording

    def recordedFrames(self) -> int:
        """Frames of the longest sequence of the current (or last) recording."""
        if self.recorder is None:
            return 0
        return max(self.recorder.frame_counts.values(), default=0)

    def saveRecording(self, directory, scene=None) -> dict:
        """Write the scene as ``recording.mrb`` and each image sequence as ``.seq.nrrd`` into ``directory`` (a
        recording in progress is stopped first); returns ``{"mrb": path, "seq_nrrd": [paths]}``."""
        from MSDTFusionLib.recording import save_recording
        from MSDTLib.errors import MSDTError

        if directory is None or not str(directory).strip():
            raise MSDTError(_("Choose a directory to save the recording to."))
        if self.isRecording():
            self.stopRecording()
        scene = scene or self._igtScene or slicer.mrmlScene
        return save_recording(scene, pathlib.Path(str(directory)))


#
# MSDTFusionTest
#


class MSDTFusionTest(ScriptedLoadableModuleTest):
    """Self-test, run by "Reload and Test" and by ctest (slicer_add_python_unittest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MSDTFusion_RejectsMissingInput()
        self.setUp()
        self.test_MSDTFusion_RegisterBumpySurface()
        self.setUp()
        self.test_MSDTFusion_SphereIsWeaklyConstrained()
        self.setUp()
        self.test_MSDTFusion_StatusText()

    def test_MSDTFusion_RejectsMissingInput(self):
        from MSDTLib.errors import MSDTError

        self.delayDisplay("Missing registration input is rejected")
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(MSDTError):
            MSDTFusionLogic().registerSurface(None, np.zeros((20, 3)))
        with self.assertRaises(MSDTError):
            MSDTFusionLogic.movingPoints(None, "")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)

    def test_MSDTFusion_RegisterBumpySurface(self):
        """A partial cloud of an uneven back, moved by a known rigid transform, is registered back onto it."""
        self.delayDisplay("Registering a partial cloud to a synthetic back")
        surface = self._bumpyBack()
        skin = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLModelNode", "Synthetic back")
        skin.SetAndObservePolyData(surface)
        skin.CreateDefaultDisplayNodes()
        points = self._points(surface)
        posterior = points[points[:, 1] < -30.0]
        cameraFromSkin = self._rigid(25.0, (0.3, 0.5, 0.8), (40.0, -25.0, 60.0))
        cloud = posterior @ cameraFromSkin[:3, :3].T + cameraFromSkin[:3, 3]

        result, nodes, tre = MSDTFusionLogic().registerSurface(skin, cloud)
        truth = np.linalg.inv(cameraFromSkin)
        self.assertTrue(result.converged, result.message)
        self.assertTrue(result.reliable, result.message)
        self.assertLess(np.abs(result.matrix[:3, 3] - truth[:3, 3]).max(), 1.0)
        self.assertLess(self._angleDeg(result.matrix, truth), 0.5)
        self.assertIsNone(tre)
        self.assertIs(nodes["fixed"], skin)
        self.assertEqual(nodes["transform"].GetName(), OUTPUT_TRANSFORM_NAME)
        self.assertEqual(nodes["moving"].GetTransformNodeID(), nodes["transform"].GetID())
        self.assertIn("Reliable", MSDTFusionLogic.resultText(result))
        self.delayDisplay(MSDTFusionLogic.resultText(result))

    def test_MSDTFusion_SphereIsWeaklyConstrained(self):
        """A cap of a sphere fits anywhere on it by rotation: the points land on the surface, the result says so."""
        self.delayDisplay("Registering a cap of a sphere: rotation is not constrained")
        source = vtk.vtkSphereSource()
        source.SetRadius(100.0)
        source.SetThetaResolution(120)
        source.SetPhiResolution(120)
        source.Update()
        sphere = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLModelNode", "Sphere")
        sphere.SetAndObservePolyData(source.GetOutput())
        sphere.CreateDefaultDisplayNodes()
        points = self._points(source.GetOutput())
        cap = points[points[:, 1] < -40.0]
        cameraFromSphere = self._rigid(30.0, (1.0, 0.2, 0.0), (15.0, 30.0, -20.0))
        cloud = cap @ cameraFromSphere[:3, :3].T + cameraFromSphere[:3, 3]

        result, _nodes, _tre = MSDTFusionLogic().registerSurface(sphere, cloud)
        registered = cloud @ result.matrix[:3, :3].T + result.matrix[:3, 3]
        self.assertLess(np.abs(np.linalg.norm(registered, axis=1) - 100.0).max(), 1.0)
        self.assertFalse(result.reliable)
        text = MSDTFusionLogic.resultText(result)
        self.assertIn("weakly constrained", text)
        self.delayDisplay(text)

    def test_MSDTFusion_StatusText(self):
        self.delayDisplay("OpenIGTLink status line")
        self.assertEqual(MSDTFusionLogic.statusText(None), "Not connected.")
        text = MSDTFusionLogic.statusText(
            {
                "status": "connected to 127.0.0.1:18944",
                "image_fps": 29.97,
                "latency_median_ms": 2.345,
                "dropped": 1,
                "reconnects": 0,
                "received": 120,
                "errors": 0,
                "devices": {},
            }
        )
        self.assertEqual(
            text,
            "Connected to 127.0.0.1:18944\n"
            "Image 30.0 fps, latency 2.3 ms (median), 1 dropped, 0 reconnect(s), 120 message(s)",
        )
        self.delayDisplay("Test passed")

    @staticmethod
    def _points(polydata) -> np.ndarray:
        from vtk.util.numpy_support import vtk_to_numpy

        return vtk_to_numpy(polydata.GetPoints().GetData()).astype(float)

    @staticmethod
    def _rigid(angleDeg, axis, translation) -> np.ndarray:
        axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
        k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
        angle = np.radians(angleDeg)
        matrix = np.eye(4)
        matrix[:3, :3] = np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * k @ k
        matrix[:3, 3] = translation
        return matrix

    @staticmethod
    def _angleDeg(a, b) -> float:
        relative = np.asarray(a)[:3, :3] @ np.asarray(b)[:3, :3].T
        return float(np.degrees(np.arccos(np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0))))

    @staticmethod
    def _bumpyBack(length=400.0, around=180, along=100):
        """An open elliptic cylinder along S (RAS mm) whose radii vary with height, with a few uneven bumps: no
        symmetry lets a partial view of it slide or flip."""
        theta, z = np.meshgrid(
            np.linspace(0.0, 2.0 * np.pi, around, endpoint=False),
            np.linspace(-length / 2.0, length / 2.0, along),
        )

        def bump(height, centreTheta, widthTheta, centreZ, widthZ):
            return height * np.exp(
                -(((theta - centreTheta) / widthTheta) ** 2 + ((z - centreZ) / widthZ) ** 2)
            )

        bumps = (
            bump(12.0, 1.5 * np.pi, 0.25, 60.0, 50.0)
            + bump(8.0, 1.2 * np.pi, 0.3, -80.0, 40.0)
            + bump(6.0, 1.8 * np.pi, 0.2, -10.0, 30.0)
            + bump(10.0, 0.5 * np.pi, 0.4, 100.0, 60.0)
        )
        radiusX = 170.0 + 0.15 * z + 15.0 * np.sin(z / 90.0) + bumps
        radiusY = 110.0 + 0.08 * z + 10.0 * np.cos(z / 70.0) + bumps
        grid = np.stack([radiusX * np.cos(theta), radiusY * np.sin(theta), z], axis=-1).reshape(-1, 3)
        points = vtk.vtkPoints()
        for point in grid:
            points.InsertNextPoint(*point)
        triangles = vtk.vtkCellArray()
        for row in range(along - 1):
            for column in range(around):
                a, b = row * around + column, row * around + (column + 1) % around
                for triangle in ((a, b, b + around), (a, b + around, a + around)):
                    triangles.InsertNextCell(3)
                    for index in triangle:
                        triangles.InsertCellPoint(index)
        polydata = vtk.vtkPolyData()
        polydata.SetPoints(points)
        polydata.SetPolys(triangles)
        return polydata
