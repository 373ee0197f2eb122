"""MSDT Fusion: placeholder module of the MSDT extension (musculoskeletal digital twin of the spine and trunk).

When built, Fusion registers a depth-camera skin point cloud to the CT/MR skin surface without markers (with RMS, TRE, overlap and uncertainty), receives electromagnetic tracker transforms and live ultrasound over OpenIGTLink, and denoises ultrasound. This module is a placeholder: nothing is implemented yet.

The algorithms will live in ``MSDTFusionLib``, which runs without the Slicer GUI.
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
# MSDTFusion
#


class MSDTFusion(ScriptedLoadableModule):
    """Module description shown in the Slicer module panel (uses ScriptedLoadableModule base class)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MSDT Fusion")
        self.parent.categories = ["MSDT"]
        self.parent.dependencies = []
        self.parent.contributors = ["MSDT contributors"]
        self.parent.helpText = _(
            "Fusion will: markerless camera-to-skin registration, OpenIGTLink tracking and live ultrasound. This module is a placeholder: nothing is implemented yet."
        )
        self.parent.acknowledgementText = _("Developed by the MSDT contributors.")


#
# MSDTFusionWidget
#


class MSDTFusionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI of the module (uses ScriptedLoadableModuleWidget base class)."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MSDTFusion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MSDTFusionLogic()
        self.ui.statusLabel.toolTip = self.logic.status()

    def cleanup(self) -> None:
        self.removeObservers()


#
# MSDTFusionLogic
#


class MSDTFusionLogic(ScriptedLoadableModuleLogic):
    """Thin adapter to ``MSDTFusionLib`` (placeholder: reports what the module will do)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    @staticmethod
    def status() -> str:
        """One line on the state of the module, taken from the library's docstring."""
        library = importlib.import_module("MSDTFusionLib")
        lines = (library.__doc__ or "").strip().splitlines()
        return lines[0] if lines else _("MSDTFusionLib has no description.")


#
# MSDTFusionTest
#


class MSDTFusionTest(ScriptedLoadableModuleTest):
    """Self-test, run by "Reload and Test" and by ctest (slicer_add_python_unittest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MSDTFusion_Placeholder()

    def test_MSDTFusion_Placeholder(self):
        self.delayDisplay("Checking the Fusion placeholder")
        status = MSDTFusionLogic.status()
        self.assertIn("placeholder", status.lower())
        self.assertTrue(hasattr(slicer.modules, "msdtfusion"))
        self.delayDisplay("Test passed")
