"""MSDT Inference: calibrated surgery-risk estimate of the MSDT extension (musculoskeletal digital twin of the spine
and trunk).

A risk model is trained and cross-validated on a cohort CSV; one patient's risk (PATIENT.json) comes with a 90 %
interval, per-feature contributions, the missing features and the most informative next exam; visits are followed
over time. This file is the 3D Slicer front end only: the algorithms live in ``MSDTInferenceLib`` (imported lazily,
inside the methods that need it), which also runs without the Slicer GUI.
"""

import datetime
import importlib
import json
import os
import sys
import tempfile
from typing import Annotated

import qt
import slicer
from MSDTWidgetTools import MSDTWidgetMixin
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Default, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Twin hierarchy placement of the module's outputs.
INFERENCE_SCALE = "macro"
INFERENCE_STUDY = "Inference"

#: Python modules MSDTInferenceLib imports that a Slicer installation may lack -> pip requirement that provides them.
_PIP_NAMES = {
    "matplotlib": "matplotlib",
    "networkx": "networkx",
    "sklearn": "scikit-learn",
    "threadpoolctl": "threadpoolctl",
}


#
# MSDTInference
#


class MSDTInference(ScriptedLoadableModule):
    """Module description shown in the Slicer module panel (uses ScriptedLoadableModule base class)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MSDT Inference")
        self.parent.categories = ["MSDT"]
        self.parent.dependencies = ["MSDT"]  # MSDTInferenceLib uses MSDTLib (errors, tables, hierarchy)
        self.parent.contributors = ["MSDT contributors"]
        self.parent.helpText = _(
            "Estimates a calibrated risk of surgery. Model: an L2 logistic model is trained on a cohort CSV (numeric "
            "feature columns and an outcome column) and cross-validated against a gradient-boosting baseline (AUC, "
            "Brier score, calibration slope, ECE). Patient: PATIENT.json gives features and/or MSDT summary files; "
            "the risk comes with a 90 % interval, the missing features, the exam that would narrow the interval "
            "most, and a table of per-feature contributions (log-odds). History: visits are added to a risk "
            'trajectory plot. See <a href="https://github.com/msdt-project/SlicerMSDT">the project page</a>.'
        )
        self.parent.acknowledgementText = _(
            "Developed by the MSDT contributors. Baseline through scikit-learn; test cohort: UCI Vertebral Column."
        )


#
# MSDTInferenceParameterNode
#


@parameterNodeWrapper
class MSDTInferenceParameterNode:
    """Typed state of the module, kept in the scene.

    The ``SlicerParameterName`` properties in ``Resources/UI/MSDTInference.ui`` bind the widgets to these fields.
    The file paths and the model folder are read from their widgets directly.
    """

    target: Annotated[str, Default("status")]
    positive: str
    # Outputs
    modelSummary: str
    riskSummary: str
    historySummary: str


#
# MSDTInferenceWidget
#


class MSDTInferenceWidget(MSDTWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI of the module (uses ScriptedLoadableModuleWidget base class)."""

    moduleTitle = "MSDT Inference"

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._busy = False
        self._result = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MSDTInference.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MSDTInferenceLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.cohortPathLineEdit.connect("currentPathChanged(QString)", self._updateGUIState)
        self.ui.patientPathLineEdit.connect("currentPathChanged(QString)", self._updateGUIState)
        self.ui.modelDirectoryButton.connect("directoryChanged(QString)", self._updateGUIState)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.predictButton.connect("clicked(bool)", self.onPredictButton)
        self.ui.addVisitButton.connect("clicked(bool)", self.onAddVisitButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def onSceneStartClose(self, caller, event) -> None:
        self._result = None
        if self.logic is not None:
            self.logic.histories.clear()
        self.setParameterNode(None)

    def onReload(self) -> None:
        """Developer "Reload": drop the cached MSDTInferenceLib modules so that edits take effect."""
        self.cleanup()
        for name in list(sys.modules):
            if name == "MSDTInferenceLib" or name.startswith("MSDTInferenceLib."):
                del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    @staticmethod
    def _path(lineEdit) -> str:
        return str(lineEdit.currentPath or "").strip()

    def _modelDirectory(self) -> str:
        return str(self.ui.modelDirectoryButton.directory or "").strip()

    def _updateGUIState(self, caller=None, event=None) -> None:
        parameterNode = self._parameterNode
        haveModelDir = bool(self._modelDirectory())
        canTrain = bool(self._path(self.ui.cohortPathLineEdit)) and haveModelDir
        canTrain = canTrain and parameterNode is not None and bool(str(parameterNode.target or "").strip())
        self.ui.trainButton.enabled = canTrain and not self._busy
        self.ui.trainButton.toolTip = (
            _("Train the risk model, cross-validate it against the baseline and save it in the model folder")
            if canTrain
            else _("Choose a cohort CSV, its outcome column and a model folder first")
        )
        canPredict = bool(self._path(self.ui.patientPathLineEdit)) and haveModelDir
        self.ui.predictButton.enabled = canPredict and not self._busy
        self.ui.predictButton.toolTip = (
            _("Estimate the patient's risk with the model of the model folder")
            if canPredict
            else _("Choose a PATIENT.json and a model folder first")
        )
        haveResult = self._result is not None
        self.ui.addVisitButton.enabled = haveResult and not self._busy
        self.ui.addVisitButton.toolTip = (
            _("Add this estimate to the patient's risk trajectory")
            if haveResult
            else _("Estimate a risk first")
        )
        if parameterNode is not None:
            self.ui.modelInfoLabel.text = parameterNode.modelSummary or ""
            self.ui.riskLabel.text = parameterNode.riskSummary or ""
            self.ui.historyLabel.text = parameterNode.historySummary or ""

    def onTrainButton(self) -> None:
        if not self._offerMissingPackage():
            return
        parameterNode = self._parameterNode
        summary, ok = self._run(
            _("MSDT Inference: cannot train the risk model"),
            self.logic.train,
            self._path(self.ui.cohortPathLineEdit),
            parameterNode.target,
            parameterNode.positive,
            self._modelDirectory(),
        )
        if ok:
            parameterNode.modelSummary = MSDTInferenceLogic.modelText(summary)

    def onPredictButton(self) -> None:
        if not self._offerMissingPackage():
            return
        predicted, ok = self._run(
            _("MSDT Inference: cannot estimate the risk"),
            self.logic.predict,
            self._path(self.ui.patientPathLineEdit),
            self._modelDirectory(),
        )
        if not ok:
            return
        self._result, nodes = predicted
        self.ui.contributionsTableView.setMRMLTableNode(nodes["contributions"])
        self._parameterNode.riskSummary = MSDTInferenceLogic.riskText(self._result)
        chord = self._result.get("panel", {}).get("Feature associations in the cohort")
        if chord:  # the chord diagram of the risk panel, the patient's contributions highlighted
            self.ui.riskPanelLabel.setPixmap(qt.QPixmap(chord).scaledToWidth(420))

    def onAddVisitButton(self) -> None:
        chart, ok = self._run(_("MSDT Inference: cannot add the visit"), self.logic.addVisit, self._result)
        if not ok:
            return
        MSDTInferenceLogic.showChart(chart)
        history = self.logic.histories.get(self._result.get("patient_id") or "Patient")
        count = len(history.visits) if history is not None else 0
        self._parameterNode.historySummary = _("{count} visit(s) in the risk trajectory").format(count=count)


#
# MSDTInferenceLogic
#


class MSDTInferenceLogic(ScriptedLoadableModuleLogic):
    """Thin adapter between the module GUI (or a Python script in Slicer) and ``MSDTInferenceLib``.

    No GUI calls here (but :meth:`showChart`), so the logic can be used from the Python console and the self-test.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        #: patient id -> ``longitudinal.PatientHistory`` of the visits added in this session.
        self.histories = {}

    def getParameterNode(self):
        return MSDTInferenceParameterNode(super().getParameterNode())

    @staticmethod
    def missingPythonPackage():
        """The pip name of a third-party package MSDTInferenceLib cannot import, or None when all imports."""
        try:
            for name in ("risk", "riskworkflow", "featuregraph", "longitudinal", "panel"):
                importlib.import_module(f"MSDTInferenceLib.{name}")
            importlib.import_module("sklearn.ensemble")
            importlib.import_module("threadpoolctl")
        except ModuleNotFoundError as error:
            topLevel = (error.name or "").split(".")[0]
            if topLevel in _PIP_NAMES:
                return _PIP_NAMES[topLevel]
            raise
        return None

    @staticmethod
    def showChart(chart) -> None:
        """Show ``chart`` in the plot view of the layout (Slicer application only)."""
        if chart is None or not hasattr(slicer, "app") or slicer.app is None:
            return
        slicer.modules.plots.logic().ShowChartInLayout(chart)

    # ------------------------------------------------------------------ model

    def train(self, cohortPath, target, positive=None, modelDir=None):
        """Train and cross-validate the risk model on ``cohortPath`` (outcome column ``target``, ``positive`` its
        value meaning surgery; empty: 1 of a 0/1 outcome) and save it in ``modelDir``; returns the summary dict."""
        from MSDTInferenceLib import riskworkflow
        from MSDTLib.errors import MSDTError

        if not str(cohortPath or "").strip():
            raise MSDTError(_("Choose a cohort CSV."))
        if not str(target or "").strip():
            raise MSDTError(_("Enter the name of the outcome column of the cohort CSV."))
        if not str(modelDir or "").strip():
            raise MSDTError(_("Choose a model folder."))
        positive = str(positive or "").strip() or None
        return riskworkflow.train_from_csv(
            str(cohortPath).strip(), str(target).strip(), positive, str(modelDir).strip()
        )

    @staticmethod
    def modelText(summary) -> str:
        """Cross-validated performance of the model and of the baseline, in a few lines."""
        if not summary:
            return _("No model trained.")
        cv = summary.get("cv") or {}
        lines = [
            _("{n} patients ({positive} '{label}'), {features} features").format(
                n=int(summary.get("n") or 0),
                positive=int(summary.get("n_positive") or 0),
                label=summary.get("positive", ""),
                features=len(summary.get("features") or []),
            )
        ]
        model = cv.get("model")
        if model:
            lines.append(
                _(
                    "CV AUC {auc:.3f} ± {sd:.3f}, Brier {brier:.3f}, calibration slope {slope:.2f}, ECE {ece:.3f}"
                ).format(
                    auc=model["auc"]["mean"],
                    sd=model["auc"]["sd"],
                    brier=model["brier"]["mean"],
                    slope=model["calibration_slope"]["mean"],
                    ece=model["ece"]["mean"],
                )
            )
        baseline = cv.get("baseline")
        if baseline:
            lines.append(
                _("Baseline (gradient boosting) AUC {auc:.3f} ± {sd:.3f}").format(
                    auc=baseline["auc"]["mean"], sd=baseline["auc"]["sd"]
                )
            )
        if cv:
            lines.append(
                _("{repeats} × {folds}-fold cross-validation").format(
                    repeats=cv.get("repeats", "?"), folds=cv.get("folds", "?")
                )
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ patient

    def predict(self, patientPath, modelDir, scene=None):
        """Risk of the patient of ``patientPath`` (PATIENT.json) with the model saved in ``modelDir``; returns
        ``(result, nodes)``: the ``riskworkflow.predict_patient`` dict (plus ``panel``: caption -> PNG of the
        risk gauge, contributions and chord diagram) and ``{"contributions": table, "featureGraph": table or
        None}`` (the feature graph when the patient file lists summaries)."""
        from MSDTInferenceLib import riskreport, riskworkflow
        from MSDTInferenceLib.featuregraph import FeatureGraph
        from MSDTLib.errors import MSDTError

        if not str(patientPath or "").strip():
            raise MSDTError(_("Choose a PATIENT.json file."))
        if not str(modelDir or "").strip():
            raise MSDTError(_("Choose the model folder."))
        patientPath = str(patientPath).strip()
        result = riskworkflow.predict_patient(patientPath, str(modelDir).strip())
        patientId = str(result.get("patient_id") or "Patient")
        scene = scene or slicer.mrmlScene

        table = riskreport.contributions_table(scene, result)
        result["panel"] = {caption: str(path) for caption, path in riskreport.panel_pictures(
            result, str(modelDir).strip(), tempfile.mkdtemp(prefix="msdt_risk_panel_")).items()}
        nodes = {"contributions": table, "featureGraph": None}

        with open(patientPath, encoding="utf-8") as fh:
            patient = json.load(fh)
        summaries = patient.get("summaries") or []
        if summaries:
            base = os.path.dirname(os.path.abspath(patientPath))
            paths = [s if os.path.isabs(s) else os.path.join(base, s) for s in summaries]
            graph = FeatureGraph.from_summaries(patientId, paths, patient.get("date"))
            nodes["featureGraph"] = graph.to_scene(scene, INFERENCE_STUDY)
        result["date"] = patient.get("date")
        result["features"] = {
            k: v for k, v in (patient.get("features") or {}).items() if isinstance(v, (int, float))
        }
        return result, nodes

    @staticmethod
    def riskText(result) -> str:
        """Risk with its 90 % interval, the missing features and the most informative next exam."""
        if not result:
            return _("No risk estimated.")
        low, high = result.get("interval") or (float("nan"), float("nan"))
        lines = [
            _("{patient}: risk of surgery {risk:.0%} (90 % interval {low:.0%} to {high:.0%})").format(
                patient=result.get("patient_id") or _("Patient"), risk=result["risk"], low=low, high=high
            )
        ]
        missing = result.get("missing") or []
        lines.append(
            _("Missing features: {names}").format(names=", ".join(missing))
            if missing
            else _("No missing feature.")
        )
        suggestions = result.get("suggested_exams") or []
        if suggestions:
            best = suggestions[0]
            lines.append(
                _("Suggested next exam: {exam} (interval narrower by {width:.0%} on average)").format(
                    exam=best["exam"], width=best.get("expected_interval_width_reduction", 0.0)
                )
            )
        for warning in result.get("warnings") or []:
            lines.append(_("Warning: {warning}").format(warning=warning))
        return "\n".join(lines)

    # ------------------------------------------------------------------ history

    def addVisit(self, result, date=None, scene=None):
        """Add the estimate ``result`` (from :meth:`predict`) as a visit of its patient (``date``: the result's, else
        today) and return the risk trajectory chart."""
        from MSDTInferenceLib import longitudinal
        from MSDTLib.errors import MSDTError

        if not result:
            raise MSDTError(_("Estimate a risk first."))
        patientId = str(result.get("patient_id") or "Patient")
        history = self.histories.setdefault(patientId, longitudinal.PatientHistory(patientId))
        date = date or result.get("date") or datetime.date.today().isoformat()
        history.add_visit(date, result.get("features") or {}, result)
        return longitudinal.trajectory_plot(scene or slicer.mrmlScene, history, INFERENCE_STUDY)


#
# MSDTInferenceTest
#


class MSDTInferenceTest(ScriptedLoadableModuleTest):
    """Self-test, run by "Reload and Test" and by ctest (slicer_add_python_unittest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MSDTInference_SyntheticCohort()
        self.setUp()
        self.test_MSDTInference_Texts()

    def test_MSDTInference_SyntheticCohort(self):
        """A synthetic cohort whose outcome follows one feature gives a good model and a sensible patient risk."""
        import csv

        import numpy as np

        self.delayDisplay("Training on a synthetic cohort")
        rng = np.random.default_rng(0)
        x = rng.standard_normal((200, 3))
        y = (x[:, 0] + 0.3 * rng.standard_normal(200) > 0).astype(int)
        logic = MSDTInferenceLogic()
        with tempfile.TemporaryDirectory() as folder:
            cohort = os.path.join(folder, "cohort.csv")
            with open(cohort, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["a", "b", "c", "surgery"])
                writer.writerows([[*row, label] for row, label in zip(x.tolist(), y.tolist(), strict=True)])
            modelDir = os.path.join(folder, "model")
            summary = logic.train(cohort, "surgery", "", modelDir)
            self.assertGreater(summary["cv"]["model"]["auc"]["mean"], 0.85)
            patient = os.path.join(folder, "PATIENT.json")
            with open(patient, "w", encoding="utf-8") as fh:
                json.dump({"patient_id": "P1", "date": "2024-01-01", "features": {"a": 2.0, "b": 0.0}}, fh)
            result, nodes = logic.predict(patient, modelDir)
            self.assertGreater(result["risk"], 0.5)
            self.assertEqual(result["missing"], ["c"])
            self.assertEqual(nodes["contributions"].GetNumberOfRows(), 3)
            chart = logic.addVisit(result)
            self.assertTrue(chart.IsA("vtkMRMLPlotChartNode"))
        self.delayDisplay(MSDTInferenceLogic.modelText(summary))
        self.delayDisplay(MSDTInferenceLogic.riskText(result))

    def test_MSDTInference_Texts(self):
        self.delayDisplay("Status lines")
        self.assertEqual(MSDTInferenceLogic.riskText(None), "No risk estimated.")
        self.assertEqual(MSDTInferenceLogic.modelText(None), "No model trained.")
        text = MSDTInferenceLogic.riskText(
            {"patient_id": "P", "risk": 0.25, "interval": [0.1, 0.4], "missing": ["x"], "suggested_exams": []}
        )
        self.assertEqual(text, "P: risk of surgery 25% (90 % interval 10% to 40%)\nMissing features: x")
        self.delayDisplay("Test passed")
