"""MSDT Motion: placeholder module of the MSDT extension (musculoskeletal digital twin of the spine and trunk).

When built, Motion imports sEMG, IMU, C3D marker and 3D video recordings, computes sEMG fatigue features, IMU orientation and trunk angles and motion descriptors, streams serial sensors live and plots them in Slicer charts. This module is a placeholder: nothing is implemented yet.

The algorithms will live in ``MSDTMotionLib``, which runs without the Slicer GUI.
"""

import importlib

import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#
# MSDTMotion
#


class MSDTMotion(ScriptedLoadableModule):
    """Module description shown in the Slicer module panel (uses ScriptedLoadableModule base class)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MSDT Motion")
        self.parent.categories = ["MSDT"]
        self.parent.dependencies = []
        self.parent.contributors = ["MSDT contributors"]
        self.parent.helpText = _(
            "Motion will: sEMG fatigue, IMU trunk angles, C3D markers and live sensor streaming. This module is a placeholder: nothing is implemented yet."
        )
        self.parent.acknowledgementText = _("Developed by the MSDT contributors.")


#
# MSDTMotionWidget
#


class MSDTMotionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI of the module (uses ScriptedLoadableModuleWidget base class)."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MSDTMotion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MSDTMotionLogic()
        self.ui.statusLabel.toolTip = self.logic.status()

    def cleanup(self) -> None:
        self.removeObservers()


#
# MSDTMotionLogic
#


class MSDTMotionLogic(ScriptedLoadableModuleLogic):
    """Thin adapter to ``MSDTMotionLib`` (placeholder: reports what the module will do)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    @staticmethod
    def status() -> str:
        """One line on the state of the module, taken from the library's docstring."""
        library = importlib.import_module("MSDTMotionLib")
        lines = (library.__doc__ or "").strip().splitlines()
        return lines[0] if lines else _("MSDTMotionLib has no description.")


#
# MSDTMotionTest
#


class MSDTMotionTest(ScriptedLoadableModuleTest):
    """Self-test, run by "Reload and Test" and by ctest (slicer_add_python_unittest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MSDTMotion_Placeholder()

    def test_MSDTMotion_Placeholder(self):
        self.delayDisplay("Checking the Motion placeholder")
        status = MSDTMotionLogic.status()
        self.assertIn("placeholder", status.lower())
        self.assertTrue(hasattr(slicer.modules, "msdtmotion"))
        self.delayDisplay("Test passed")
