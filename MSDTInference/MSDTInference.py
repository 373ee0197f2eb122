"""MSDT Inference: placeholder module of the MSDT extension (musculoskeletal digital twin of the spine and trunk).

When built, Inference builds a per-patient feature graph from the twin and estimates a calibrated risk of surgery within 6-12 months, with uncertainty, per-feature contributions, suggested next exams and longitudinal updates. This module is a placeholder: nothing is implemented yet.

The algorithms will live in ``MSDTInferenceLib``, which runs without the Slicer GUI.
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
# MSDTInference
#


class MSDTInference(ScriptedLoadableModule):
    """Module description shown in the Slicer module panel (uses ScriptedLoadableModule base class)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MSDT Inference")
        self.parent.categories = ["MSDT"]
        self.parent.dependencies = []
        self.parent.contributors = ["MSDT contributors"]
        self.parent.helpText = _(
            "Inference will: per-patient feature graph and calibrated surgery-risk estimate. This module is a placeholder: nothing is implemented yet."
        )
        self.parent.acknowledgementText = _("Developed by the MSDT contributors.")


#
# MSDTInferenceWidget
#


class MSDTInferenceWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI of the module (uses ScriptedLoadableModuleWidget base class)."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MSDTInference.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MSDTInferenceLogic()
        self.ui.statusLabel.toolTip = self.logic.status()

    def cleanup(self) -> None:
        self.removeObservers()


#
# MSDTInferenceLogic
#


class MSDTInferenceLogic(ScriptedLoadableModuleLogic):
    """Thin adapter to ``MSDTInferenceLib`` (placeholder: reports what the module will do)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    @staticmethod
    def status() -> str:
        """One line on the state of the module, taken from the library's docstring."""
        library = importlib.import_module("MSDTInferenceLib")
        lines = (library.__doc__ or "").strip().splitlines()
        return lines[0] if lines else _("MSDTInferenceLib has no description.")


#
# MSDTInferenceTest
#


class MSDTInferenceTest(ScriptedLoadableModuleTest):
    """Self-test, run by "Reload and Test" and by ctest (slicer_add_python_unittest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MSDTInference_Placeholder()

    def test_MSDTInference_Placeholder(self):
        self.delayDisplay("Checking the Inference placeholder")
        status = MSDTInferenceLogic.status()
        self.assertIn("placeholder", status.lower())
        self.assertTrue(hasattr(slicer.modules, "msdtinference"))
        self.delayDisplay("Test passed")
