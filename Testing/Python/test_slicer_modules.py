"""Static checks of the four Slicer scripted modules, runnable without Slicer.

- every module script and every file of its ``<Module>Lib`` package byte-compiles;
- every ``.ui`` loads with PySide6's ``QUiLoader`` (Slicer's qMRML*/ctk* widgets replaced by the base class that
  the ``.ui`` declares for them) and holds every ``self.ui.<name>`` the module script uses;
- each module's ``CMakeLists.txt`` lists exactly the Lib's python files (explicitly, no ``file(GLOB)``) plus the
  icon and ``.ui``, and the top-level ``CMakeLists.txt`` adds the four modules;
- each module script defines ``<M>``, ``<M>Widget``, ``<M>Logic`` and ``<M>Test``.

Each checker is a plain function returning a list of problems, and each has a negative test that feeds it a
broken synthetic input, so that a checker that can no longer fail is noticed.
"""

from __future__ import annotations

import ast
import os
import py_compile
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

# Set before PySide6 is imported anywhere in this process: no window may open during the tests.
os.environ["QT_QPA_PLATFORM"] = "offscreen"

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["MSDT", "MSDTFusion", "MSDTMotion", "MSDTInference"]
ICON_SIZE = (128, 128)

# Widgets the MSDT (Anatomy) panel must have: objectName -> accepted declared classes.
MSDT_WIDGETS = {
    "inputVolumeSelector": {"qMRMLNodeComboBox"},
    "labelMapSelector": {"qMRMLNodeComboBox"},
    "modalityComboBox": {"QComboBox"},
    "skinThresholdSpinBox": {"ctkDoubleSpinBox", "QDoubleSpinBox"},
    "boneThresholdSpinBox": {"ctkDoubleSpinBox", "QDoubleSpinBox"},
    "useTotalSegmentatorCheckBox": {"QCheckBox"},
    "applyButton": {"QPushButton"},
    "progressBar": {"QProgressBar"},
    "resultsTableView": {"qMRMLTableView"},
    "exportDirectoryButton": {"ctkDirectoryButton"},
    "exportFormatComboBox": {"QComboBox"},
    "exportCoordinateComboBox": {"QComboBox"},
    "exportButton": {"QPushButton"},
    "sphereRadiusSpinBox": {"ctkDoubleSpinBox", "QDoubleSpinBox"},
    "textureCheckBox": {"QCheckBox"},
    "characteriseSpineButton": {"QPushButton"},
    "spineSummaryLabel": {"QLabel"},
    "spineTableView": {"qMRMLTableView"},
}
MSDT_SECTIONS = ["Inputs", "Parameters", "Results", "Spine characterisation", "Export"]


def module_script(module: str) -> Path:
    return ROOT / module / f"{module}.py"


def module_ui(module: str) -> Path:
    return ROOT / module / "Resources" / "UI" / f"{module}.ui"


def module_icon(module: str) -> Path:
    return ROOT / module / "Resources" / "Icons" / f"{module}.png"


def lib_dir(module: str) -> Path:
    return ROOT / module / f"{module}Lib"


def lib_files(module_dir: Path, lib_name: str) -> tuple[list[str], list[str]]:
    """(python files, other data files) of the Lib package, as paths relative to the module folder."""
    python, data = [], []
    lib = module_dir / lib_name
    for path in sorted(lib.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in {".pyc", ".pyo"}:
            continue
        relative = path.relative_to(module_dir).as_posix()
        (python if path.suffix == ".py" else data).append(relative)
    return python, data


# --------------------------------------------------------------------------------------------------------------
# byte compilation
# --------------------------------------------------------------------------------------------------------------


def compile_problems(paths: list[Path], scratch: Path) -> list[str]:
    problems = []
    for index, path in enumerate(paths):
        try:
            py_compile.compile(str(path), cfile=str(scratch / f"{index}.pyc"), doraise=True)
        except py_compile.PyCompileError as error:
            problems.append(f"{path}: {error.msg}")
    return problems


@pytest.mark.parametrize("module", MODULES)
def test_module_and_lib_byte_compile(module, tmp_path):
    python, _ = lib_files(ROOT / module, f"{module}Lib")
    paths = sorted((ROOT / module).glob("*.py")) + [ROOT / module / relative for relative in python]
    assert module_script(module) in paths and f"{module}Lib/__init__.py" in python, f"{module}Lib is not a package"
    assert compile_problems(paths, tmp_path) == []


def test_compile_check_reports_syntax_error(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n    pass\n")
    good = tmp_path / "good.py"
    good.write_text("x = 1\n")
    problems = compile_problems([good, broken], tmp_path)
    assert len(problems) == 1 and "broken.py" in problems[0]


# --------------------------------------------------------------------------------------------------------------
# module classes (ast)
# --------------------------------------------------------------------------------------------------------------

EXPECTED_BASES = {
    "": "ScriptedLoadableModule",
    "Widget": "ScriptedLoadableModuleWidget",
    "Logic": "ScriptedLoadableModuleLogic",
    "Test": "ScriptedLoadableModuleTest",
}


def _base_names(node: ast.ClassDef) -> set[str]:
    names = set()
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.add(base.id)
        elif isinstance(base, ast.Attribute):
            names.add(base.attr)
    return names


def class_problems(source: str, module: str) -> list[str]:
    classes = {node.name: node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}
    problems = []
    for suffix, base in EXPECTED_BASES.items():
        name = module + suffix
        if name not in classes:
            problems.append(f"class {name} missing")
        elif base not in _base_names(classes[name]):
            problems.append(f"class {name} does not derive from {base}")
    return problems


@pytest.mark.parametrize("module", MODULES)
def test_module_defines_the_four_classes(module):
    source = module_script(module).read_text(encoding="utf-8")
    assert class_problems(source, module) == []
    tree = ast.parse(source)
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Widget")
    assert "VTKObservationMixin" in _base_names(widget)


def test_class_check_reports_missing_class():
    source = (
        "class Foo(ScriptedLoadableModule): pass\n"
        "class FooWidget(ScriptedLoadableModuleWidget): pass\n"
        "class FooLogic(object): pass\n"
    )
    assert class_problems(source, "Foo") == [
        "class FooLogic does not derive from ScriptedLoadableModuleLogic",
        "class FooTest missing",
    ]


# --------------------------------------------------------------------------------------------------------------
# .ui files
# --------------------------------------------------------------------------------------------------------------


def ui_names_used(source: str) -> set[str]:
    """Names ``<n>`` of every ``self.ui.<n>`` and ``ui.<n>`` in a module script."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if isinstance(owner, ast.Attribute) and owner.attr == "ui" and isinstance(owner.value, ast.Name):
            if owner.value.id == "self":
                names.add(node.attr)
        elif isinstance(owner, ast.Name) and owner.id == "ui":
            names.add(node.attr)
    return names


def ui_widget_classes(ui_root: ET.Element) -> dict[str, str]:
    """objectName -> declared class of every widget in a parsed .ui."""
    return {w.get("name"): w.get("class") for w in ui_root.iter("widget")}


def missing_ui_names(source: str, available: set[str]) -> list[str]:
    return sorted(ui_names_used(source) - available)


def parameter_names_in_ui(ui_root: ET.Element) -> dict[str, str]:
    """objectName -> SlicerParameterName of the widgets bound to the parameter node."""
    bound = {}
    for widget in ui_root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[widget.get("name")] = prop.findtext("string")
    return bound


def parameter_node_fields(source: str) -> set[str] | None:
    """Annotated fields of the class decorated with ``@parameterNodeWrapper`` (None if there is none)."""
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        decorators = {d.id if isinstance(d, ast.Name) else getattr(d, "attr", "") for d in node.decorator_list}
        if "parameterNodeWrapper" in decorators:
            return {
                stmt.target.id
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            }
    return None


def parameter_binding_problems(source: str, ui_root: ET.Element) -> list[str]:
    bound = parameter_names_in_ui(ui_root)
    fields = parameter_node_fields(source)
    if fields is None:
        return [f"{w} is bound to '{p}' but the module has no @parameterNodeWrapper class" for w, p in bound.items()]
    return [f"{w} is bound to unknown parameter '{p}'" for w, p in sorted(bound.items()) if p not in fields]


def connection_problems(ui_root: ET.Element) -> list[str]:
    names = set(ui_widget_classes(ui_root))
    problems = []
    for connection in ui_root.iter("connection"):
        for role in ("sender", "receiver"):
            name = connection.findtext(role)
            if name not in names:
                problems.append(f"connection {role} '{name}' is not a widget of the .ui")
    return problems


@pytest.fixture(scope="session")
def qt():
    """PySide6 modules with one offscreen QApplication for the whole session."""
    from PySide6 import QtCore, QtUiTools, QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["pytest"])
    assert app.platformName() == "offscreen"
    return QtCore, QtUiTools, QtWidgets


def load_ui(qt, ui_path: Path):
    """Load a .ui with QUiLoader; unknown (Slicer) classes become the base class the .ui declares for them.

    Returns (root widget or None, problems). Qt warnings printed while loading count as problems.
    """
    QtCore, QtUiTools, QtWidgets = qt
    root = ET.parse(ui_path).getroot()
    extends = {cw.findtext("class"): cw.findtext("extends") for cw in root.iter("customwidget")}
    problems: list[str] = []

    class FallbackLoader(QtUiTools.QUiLoader):
        def __init__(self):
            super().__init__()
            self.known = set(self.availableWidgets())

        def createWidget(self, className, parent=None, name=""):
            resolved, seen = className, []
            while resolved not in self.known:
                if resolved in seen or not extends.get(resolved):
                    problems.append(f"widget '{name}': class {className} is unknown and declares no known base")
                    return None
                seen.append(resolved)
                resolved = extends[resolved]
            return super().createWidget(resolved, parent, name)

    # The connections use Slicer signals/slots (mrmlSceneChanged -> setMRMLScene) that the stand-in base
    # classes lack; connection_problems() checks them statically instead.
    for connections in root.findall("connections"):
        root.remove(connections)
    buffer = QtCore.QBuffer()
    buffer.setData(QtCore.QByteArray(ET.tostring(root, encoding="utf-8")))
    buffer.open(QtCore.QIODevice.OpenModeFlag.ReadOnly)

    def onMessage(kind, context, message):
        if kind != QtCore.QtMsgType.QtDebugMsg:
            problems.append(f"Qt: {message}")

    previous = QtCore.qInstallMessageHandler(onMessage)
    try:
        loader = FallbackLoader()
        widget = loader.load(buffer)
    finally:
        QtCore.qInstallMessageHandler(previous)
    if widget is None:
        problems.append(f"QUiLoader failed: {loader.errorString()}")
    return widget, problems


@pytest.mark.parametrize("module", MODULES)
def test_ui_loads_and_has_the_widgets_the_module_uses(qt, module):
    _, _, QtWidgets = qt
    ui_path = module_ui(module)
    ui_root = ET.parse(ui_path).getroot()
    widget, problems = load_ui(qt, ui_path)
    assert problems == []
    assert widget.objectName() == module

    source = module_script(module).read_text(encoding="utf-8")
    used = ui_names_used(source)
    assert used, f"{module}.py uses no self.ui.<widget>: the checker would pass vacuously"
    assert missing_ui_names(source, set(ui_widget_classes(ui_root))) == []
    for name in sorted(used):
        assert widget.findChild(QtWidgets.QWidget, name) is not None, f"{name} not in the loaded widget tree"

    assert parameter_binding_problems(source, ui_root) == []
    assert connection_problems(ui_root) == []
    assert "loadUI" in source and f"UI/{module}.ui" in source and "childWidgetVariables" in source

    titles = [
        b.findtext("property[@name='text']/string")
        for b in ui_root.iter("widget")
        if b.get("class") == "ctkCollapsibleButton"
    ]
    assert titles, "no ctkCollapsibleButton section"
    widget.deleteLater()


def test_msdt_ui_has_the_required_widgets(qt):
    _, _, QtWidgets = qt
    ui_root = ET.parse(module_ui("MSDT")).getroot()
    declared = ui_widget_classes(ui_root)
    for name, classes in MSDT_WIDGETS.items():
        assert declared.get(name) in classes, f"{name}: declared {declared.get(name)}, expected one of {classes}"

    sections = [
        b.findtext("property[@name='text']/string")
        for b in ui_root.iter("widget")
        if b.get("class") == "ctkCollapsibleButton"
    ]
    assert sections == MSDT_SECTIONS
    assert any(s.findtext("property[@name='orientation']/enum") == "Qt::Vertical" for s in ui_root.iter("spacer"))

    def prop(name, key):
        widget = next(w for w in ui_root.iter("widget") if w.get("name") == name)
        return widget.find(f"property[@name='{key}']")

    assert [s.text for s in prop("inputVolumeSelector", "nodeTypes").iter("string")] == ["vtkMRMLScalarVolumeNode"]
    assert {s.text for s in prop("labelMapSelector", "nodeTypes").iter("string")} == {
        "vtkMRMLLabelMapVolumeNode",
        "vtkMRMLScalarVolumeNode",
    }
    assert prop("labelMapSelector", "noneEnabled").findtext("bool") == "true"
    assert prop("skinThresholdSpinBox", "specialValueText").findtext("string") == "auto"

    widget, problems = load_ui(qt, module_ui("MSDT"))
    assert problems == []

    def items(name):
        combo = widget.findChild(QtWidgets.QComboBox, name)
        return [combo.itemText(i) for i in range(combo.count())]

    assert items("modalityComboBox") == ["CT", "MR"]
    assert items("exportFormatComboBox") == ["STL", "OBJ"]
    assert items("exportCoordinateComboBox") == ["RAS", "LPS"]
    # The "auto" special value shows at the minimum, which is the spin box's initial value.
    skin = widget.findChild(QtWidgets.QDoubleSpinBox, "skinThresholdSpinBox")
    assert skin.value() == skin.minimum() and skin.text() == "auto"

    radius = widget.findChild(QtWidgets.QDoubleSpinBox, "sphereRadiusSpinBox")
    assert (radius.minimum(), radius.maximum(), radius.value(), radius.suffix()) == (2.0, 20.0, 8.0, " mm")
    assert parameter_names_in_ui(ui_root)["sphereRadiusSpinBox"] == "sphereRadiusMM"
    assert widget.findChild(QtWidgets.QLabel, "spineSummaryLabel").wordWrap()
    assert not widget.findChild(QtWidgets.QPushButton, "characteriseSpineButton").isEnabled()
    texture = widget.findChild(QtWidgets.QCheckBox, "textureCheckBox")
    assert texture.text() == "Map grey levels onto skin and vertebra surfaces"
    widget.deleteLater()


@pytest.mark.parametrize("module", ["MSDTFusion", "MSDTMotion", "MSDTInference"])
def test_placeholder_ui_has_status_label(qt, module):
    _, _, QtWidgets = qt
    widget, problems = load_ui(qt, module_ui(module))
    assert problems == []
    label = widget.findChild(QtWidgets.QLabel, "statusLabel")
    assert label is not None and len(label.text()) > 20
    widget.deleteLater()


def test_ui_name_check_reports_missing_widget():
    source = (
        "class W:\n"
        "    def setup(self):\n"
        "        self.ui.applyButton.enabled = True\n"
        "        self.ui.doesNotExist.text = 'x'\n"
        "        ui = object()\n"
        "        ui.alsoMissing\n"
    )
    assert ui_names_used(source) == {"applyButton", "doesNotExist", "alsoMissing"}
    assert missing_ui_names(source, {"applyButton"}) == ["alsoMissing", "doesNotExist"]


def test_ui_loader_reports_undeclared_widget_class(qt, tmp_path):
    ui = tmp_path / "Broken.ui"
    ui.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><ui version="4.0"><class>Broken</class>'
        '<widget class="qMRMLWidget" name="Broken"><layout class="QVBoxLayout" name="layout">'
        '<item><widget class="qFooWidget" name="foo"/></item></layout></widget>'
        "<customwidgets><customwidget><class>qMRMLWidget</class><extends>QWidget</extends>"
        "<header>qMRMLWidget.h</header></customwidget></customwidgets></ui>"
    )
    _, problems = load_ui(qt, ui)
    assert any("qFooWidget" in p for p in problems), problems


def test_parameter_binding_check_reports_unknown_parameter():
    source = (
        "@parameterNodeWrapper\n"
        "class P:\n"
        "    inputVolume: object\n"
    )
    ui_root = ET.fromstring(
        '<ui><widget class="QWidget" name="top">'
        '<widget class="QComboBox" name="a"><property name="SlicerParameterName" stdset="0">'
        "<string>inputVolume</string></property></widget>"
        '<widget class="QComboBox" name="b"><property name="SlicerParameterName" stdset="0">'
        "<string>typo</string></property></widget>"
        "</widget>"
        "<connections><connection><sender>top</sender><receiver>gone</receiver></connection></connections></ui>"
    )
    assert parameter_binding_problems(source, ui_root) == ["b is bound to unknown parameter 'typo'"]
    assert connection_problems(ui_root) == ["connection receiver 'gone' is not a widget of the .ui"]


# --------------------------------------------------------------------------------------------------------------
# CMakeLists.txt
# --------------------------------------------------------------------------------------------------------------


def _strip_cmake_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def cmake_set_lists(text: str) -> dict[str, list[str]]:
    """Values of every ``set(NAME v1 v2 ...)``, with ``${MODULE_NAME}`` and quotes resolved."""
    code = _strip_cmake_comments(text)
    values = {}
    for match in re.finditer(r"\bset\s*\(\s*(\w+)([^)]*)\)", code, flags=re.IGNORECASE):
        values[match.group(1)] = [token.strip('"') for token in match.group(2).split()]
    module_name = values.get("MODULE_NAME", [""])[0]
    return {
        name: [token.replace("${MODULE_NAME}", module_name) for token in tokens] for name, tokens in values.items()
    }


def module_cmake_problems(module_dir: Path) -> list[str]:
    module = module_dir.name
    cmake = module_dir / "CMakeLists.txt"
    if not cmake.is_file():
        return [f"{cmake} missing"]
    text = cmake.read_text(encoding="utf-8")
    code = _strip_cmake_comments(text)
    values = cmake_set_lists(text)
    problems = []
    if values.get("MODULE_NAME") != [module]:
        problems.append(f"MODULE_NAME is {values.get('MODULE_NAME')}, expected {module}")
    if re.search(r"file\s*\(\s*GLOB", code, flags=re.IGNORECASE):
        problems.append("file(GLOB ...) used: list the files explicitly")

    scripts = values.get("MODULE_PYTHON_SCRIPTS", [])
    resources = values.get("MODULE_PYTHON_RESOURCES", [])
    python, data = lib_files(module_dir, f"{module}Lib")
    helpers = sorted(p.name for p in module_dir.glob("*.py") if p.name != f"{module}.py")  # GUI helper scripts
    expected_scripts = [f"{module}.py"] + helpers + python
    for missing in sorted(set(expected_scripts) - set(scripts)):
        problems.append(f"{missing} exists but is not in MODULE_PYTHON_SCRIPTS")
    for extra in sorted(set(scripts) - set(expected_scripts)):
        problems.append(f"MODULE_PYTHON_SCRIPTS lists {extra}, which is not a python file of the module")
    if len(scripts) != len(set(scripts)):
        problems.append("MODULE_PYTHON_SCRIPTS lists a file twice")

    expected_resources = [f"Resources/Icons/{module}.png", f"Resources/UI/{module}.ui"] + data
    for missing in sorted(set(expected_resources) - set(resources)):
        problems.append(f"{missing} is not in MODULE_PYTHON_RESOURCES")
    for listed in scripts + resources:
        if not (module_dir / listed).is_file():
            problems.append(f"{listed} is listed but does not exist")

    build = re.search(r"slicerMacroBuildScriptedModule\s*\(([^)]*)\)", code)
    if build is None:
        problems.append("slicerMacroBuildScriptedModule(...) missing")
    else:
        arguments = build.group(1).split()
        for pair in (
            ["NAME", "${MODULE_NAME}"],
            ["SCRIPTS", "${MODULE_PYTHON_SCRIPTS}"],
            ["RESOURCES", "${MODULE_PYTHON_RESOURCES}"],
        ):
            index = arguments.index(pair[0]) if pair[0] in arguments else -1
            if index < 0 or arguments[index + 1 : index + 2] != pair[1:]:
                problems.append(f"slicerMacroBuildScriptedModule lacks {' '.join(pair)}")
        if "WITH_GENERIC_TESTS" not in arguments:
            problems.append("slicerMacroBuildScriptedModule lacks WITH_GENERIC_TESTS")
    if not re.search(
        r"if\s*\(\s*BUILD_TESTING\s*\)(?:(?!endif).)*slicer_add_python_unittest\s*\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py",
        code,
        flags=re.DOTALL,
    ):
        problems.append("no slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py) inside if(BUILD_TESTING)")
    return problems


@pytest.mark.parametrize("module", MODULES)
def test_module_cmakelists_lists_every_file(module):
    assert module_cmake_problems(ROOT / module) == []


def test_cmake_check_reports_unlisted_and_missing_files(tmp_path):
    module_dir = tmp_path / "Foo"
    (module_dir / "FooLib").mkdir(parents=True)
    (module_dir / "FooLib" / "__init__.py").write_text("")
    (module_dir / "FooLib" / "new_algorithm.py").write_text("")
    (module_dir / "FooLib" / "table.json").write_text("{}")
    (module_dir / "Foo.py").write_text("")
    (module_dir / "CMakeLists.txt").write_text(
        "set(MODULE_NAME Foo)\n"
        "set(MODULE_PYTHON_SCRIPTS\n  ${MODULE_NAME}.py\n  ${MODULE_NAME}Lib/__init__.py\n"
        "  ${MODULE_NAME}Lib/removed.py\n  )\n"
        "set(MODULE_PYTHON_RESOURCES\n  Resources/UI/${MODULE_NAME}.ui\n  )\n"
        "file(GLOB EXTRA ${MODULE_NAME}Lib/*.py)\n"
        "slicerMacroBuildScriptedModule(NAME ${MODULE_NAME} SCRIPTS ${MODULE_PYTHON_SCRIPTS})\n"
    )
    problems = module_cmake_problems(module_dir)
    expected_fragments = [
        "file(GLOB",
        "FooLib/new_algorithm.py exists but is not in MODULE_PYTHON_SCRIPTS",
        "MODULE_PYTHON_SCRIPTS lists FooLib/removed.py",
        "Resources/Icons/Foo.png is not in MODULE_PYTHON_RESOURCES",
        "FooLib/table.json is not in MODULE_PYTHON_RESOURCES",
        "FooLib/removed.py is listed but does not exist",
        "Resources/UI/Foo.ui is listed but does not exist",
        "lacks RESOURCES",
        "lacks WITH_GENERIC_TESTS",
        "slicer_add_python_unittest",
    ]
    for fragment in expected_fragments:
        assert any(fragment in p for p in problems), (fragment, problems)


def top_level_cmake_problems(root: Path, modules: list[str]) -> list[str]:
    code = _strip_cmake_comments((root / "CMakeLists.txt").read_text(encoding="utf-8"))
    problems = []
    required = [
        r"cmake_minimum_required\s*\(",
        r"project\s*\(\s*MSDT\s*\)",
        r"find_package\s*\(\s*Slicer\s+REQUIRED\s*\)",
        r"include\s*\(\s*\$\{Slicer_USE_FILE\}\s*\)",
        r"include\s*\(\s*\$\{Slicer_EXTENSION_GENERATE_CONFIG\}\s*\)",
        r"include\s*\(\s*\$\{Slicer_EXTENSION_CPACK\}\s*\)",
    ]
    problems += [f"top-level CMakeLists.txt lacks {pattern}" for pattern in required if not re.search(pattern, code)]
    for variable in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ):
        if not re.search(rf"set\s*\(\s*{variable}\s+\S", code):
            problems.append(f"{variable} is not set")
    added = re.findall(r"add_subdirectory\s*\(\s*(\w+)\s*\)", code)
    for module in modules:
        if module not in added:
            problems.append(f"add_subdirectory({module}) missing")
        elif not (root / module / "CMakeLists.txt").is_file():
            problems.append(f"{module}/CMakeLists.txt missing")
    return problems


def test_top_level_cmakelists_adds_the_modules():
    assert top_level_cmake_problems(ROOT, MODULES) == []
    code = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert 'set(EXTENSION_HOMEPAGE "https://github.com/msdt-project/SlicerMSDT")' in code
    assert 'set(EXTENSION_CATEGORY "Digital Twin")' in code
    assert 'set(EXTENSION_DEPENDS "NA")' in code


def test_top_level_check_reports_missing_module(tmp_path):
    (tmp_path / "CMakeLists.txt").write_text("project(MSDT)\nadd_subdirectory(MSDT)\n# add_subdirectory(Other)\n")
    problems = top_level_cmake_problems(tmp_path, ["MSDT", "Other"])
    assert "add_subdirectory(Other) missing" in problems
    assert "MSDT/CMakeLists.txt missing" in problems
    assert "EXTENSION_ICONURL is not set" in problems


# --------------------------------------------------------------------------------------------------------------
# MSDTLogic against the real library, headless
# --------------------------------------------------------------------------------------------------------------

SAMPLE_DATA = ROOT / "Testing" / "Data" / "totalsegmentator_ct_mr_spine"


def import_module_headless(monkeypatch, module_name: str, lib_folders: tuple[str, ...]):
    """A module's .py imported outside Slicer: the GUI-only imports (qt, ctk, ScriptedLoadableModule, i18n,
    parameterNodeWrapper, markups wrapping, VTKObservationMixin) are inert stand-ins; MRML and the Libs are
    real."""
    import importlib.util
    import sys
    import types

    import slicer
    import slicer.util

    def inert(name):
        return type(name, (), {"__init__": lambda self, *args, **kwargs: None})

    def stub(name, **attributes):
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)

    stub("qt")
    stub("ctk")
    stub("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text)
    stub(
        "slicer.parameterNodeWrapper",
        parameterNodeWrapper=lambda cls: cls,
        Choice=inert("Choice"),
        Default=inert("Default"),
        WithinRange=inert("WithinRange"),
    )
    stub(
        "slicer.ScriptedLoadableModule",
        ScriptedLoadableModule=inert("ScriptedLoadableModule"),
        ScriptedLoadableModuleWidget=inert("ScriptedLoadableModuleWidget"),
        ScriptedLoadableModuleLogic=inert("ScriptedLoadableModuleLogic"),
        ScriptedLoadableModuleTest=inert("ScriptedLoadableModuleTest"),
    )
    stub("vtkSlicerMarkupsModuleMRMLPython", vtkMRMLMarkupsFiducialNode=slicer.vtkMRMLMarkupsFiducialNode)
    monkeypatch.setattr(slicer.util, "VTKObservationMixin", inert("VTKObservationMixin"), raising=False)
    for folder in lib_folders:
        monkeypatch.syspath_prepend(str(ROOT / folder))
    spec = importlib.util.spec_from_file_location(f"{module_name}_slicer_module_under_test", module_script(module_name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_self_test_headless(monkeypatch, test_class) -> list[str]:
    """Run a module's ScriptedLoadableModuleTest as Slicer does, on a fresh headless scene; returns the messages
    it displayed."""
    import unittest

    import slicer

    from MSDTLib.app import new_scene, shutdown_scene

    scene = new_scene()
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    messages = []

    class SelfTest(unittest.TestCase, test_class):
        setUp = test_class.setUp

        def delayDisplay(self, message, msec=None):
            messages.append(message)

    try:
        SelfTest("runTest").runTest()
    finally:
        shutdown_scene(scene)
    return messages


@pytest.fixture
def msdt_module(monkeypatch):
    """MSDT/MSDT.py imported outside Slicer (see import_module_headless)."""
    return import_module_headless(monkeypatch, "MSDT", ("MSDT",))


def test_msdt_logic_runs_the_library_headless(msdt_module, tmp_path):
    """The module's Logic calls the MSDTLib API with the right names: build, bad input, export."""
    import SimpleITK as sitk

    from MSDTLib import app, io
    from MSDTLib.errors import MSDTError

    logic = msdt_module.MSDTLogic()
    assert logic.skinThresholdOrAuto(msdt_module.SKIN_THRESHOLD_AUTO) is None
    assert logic.skinThresholdOrAuto(-450.0) == -450.0

    scene = app.new_scene()
    try:
        volume = io.load_volume(scene, SAMPLE_DATA / "example_ct_sm.nii.gz")
        labels = io.volume_node_from_image(
            scene, sitk.ReadImage(str(SAMPLE_DATA / "example_seg.nii.gz")), "segmentation", labelmap=True
        )
        calls = []
        result = logic.process(
            volume,
            labelMap=labels,
            modality="CT",
            skinThreshold=None,
            boneThresholdHU=200.0,
            progress=lambda fraction, message: calls.append((fraction, message)),
            scene=scene,
        )
        assert calls and calls[-1][0] == pytest.approx(1.0)
        assert result.segmentation_node.GetSegmentation().GetNumberOfSegments() > 0
        assert result.landmarks_node.GetNumberOfControlPoints() > 0
        assert result.table_node.GetNumberOfRows() > 0
        assert result.skin_model_node is not None
        assert isinstance(result.summary(), dict)

        nodes = scene.GetNumberOfNodes()
        with pytest.raises(MSDTError):
            logic.process(None, scene=scene)
        with pytest.raises(MSDTError):
            logic.process(volume, modality="PET", scene=scene)
        assert scene.GetNumberOfNodes() == nodes

        paths = logic.exportSegments(result.segmentation_node, tmp_path, fileFormat="OBJ", coordinateSystem="RAS")
        assert paths and all(Path(p).suffix == ".obj" and Path(p).stat().st_size > 0 for p in paths)
        with pytest.raises(MSDTError):
            logic.exportSegments(None, tmp_path)
    finally:
        app.shutdown_scene(scene)


def test_msdt_logic_characterises_the_spine_headless(msdt_module):
    """characteriseSpine on the full sample CT (T11-S1) and its vertebra labels: real measurements, tables, lines
    and chart; bad input is refused without touching the scene; the surfaces of the twin get textured."""
    from MSDTLib import app, io
    from MSDTLib.errors import MSDTError

    logic = msdt_module.MSDTLogic()
    scene = app.new_scene()
    try:
        volume = io.load_volume(scene, SAMPLE_DATA / "example_ct.nii.gz")
        labels = io.volume_node_from_image(
            scene, io.read_image(SAMPLE_DATA / "spine_report" / "totalseg.nii.gz"), "labels", labelmap=True
        )

        nodes = scene.GetNumberOfNodes()
        for bad in (
            dict(inputVolume=None, labelMap=labels),
            dict(inputVolume=volume, labelMap=None),
            dict(inputVolume=volume, labelMap=labels, modality="PET"),
            dict(inputVolume=volume, labelMap=labels, sphereRadiusMM=0.0),
        ):
            with pytest.raises(MSDTError):
                logic.characteriseSpine(scene=scene, **bad)
        assert scene.GetNumberOfNodes() == nodes
        # A label map without vertebrae: the library refuses it and its transaction leaves the scene as it was.
        no_vertebrae = io.volume_node_from_image(
            scene,
            io.read_image(SAMPLE_DATA / "example_seg_tissue_types" / "skeletal_muscle.nii.gz"),
            "muscle",
            labelmap=True,
        )
        nodes = scene.GetNumberOfNodes()
        with pytest.raises(MSDTError):
            logic.characteriseSpine(volume, no_vertebrae, scene=scene)
        assert scene.GetNumberOfNodes() == nodes

        calls = []
        result = logic.characteriseSpine(
            volume,
            labels,
            modality="CT",
            sphereRadiusMM=8.0,
            progress=lambda fraction, message: calls.append((fraction, message)),
            scene=scene,
        )
        assert calls and calls[-1][0] == pytest.approx(1.0)
        summary = result.summary
        assert 35.0 < summary["lordosis_deg"] < 65.0
        assert summary["lordosis"]["upper"] == "L1"
        # No T4 in this field of view: kyphosis has no value but a reason.
        assert summary["kyphosis_deg"] is None and summary["kyphosis"]["reason"]
        assert "L1" in summary["vertebrae"] and summary["vertebrae"]["L1"]["height_middle_mm"] > 15.0
        assert summary["vertebrae"]["L1"]["hu_sphere_radius_mm"] == pytest.approx(8.0)
        assert summary["osteoporosis"]["hu"] is not None and summary["osteoporosis"]["category"]
        assert set(result.tables) >= {"bodies", "curvature", "discs", "density"}
        bodies = result.tables["bodies"]
        assert bodies.GetScene() is scene and bodies.GetNumberOfRows() == len(summary["vertebrae"]) >= 5
        assert result.lines and all(line.GetNumberOfControlPoints() == 2 for line in result.lines)
        assert result.chart_node is not None and result.chart_node.IsA("vtkMRMLPlotChartNode")
        msdt_module.MSDTLogic.showSpineResult(result)  # no plots module headless: only the lines are shown

        text = msdt_module.MSDTLogic.spineSummaryText(summary)
        assert f"lordosis {summary['lordosis_deg']:.1f}°" in text
        assert "kyphosis n/a (" + summary["kyphosis"]["reason"] + ")" in text
        assert "L1 " in text and " HU: " in text and text.startswith("Cobb ")

        # A smaller sphere changes the density measurement, not the geometry.
        small = logic.characteriseSpine(volume, labels, sphereRadiusMM=4.0, scene=scene)
        assert small.summary["vertebrae"]["L1"]["hu_sphere_radius_mm"] == pytest.approx(4.0)
        assert small.summary["lordosis_deg"] == pytest.approx(summary["lordosis_deg"])

        # Texture mapping onto the surfaces of the anatomy twin.
        with pytest.raises(MSDTError):
            logic.textureSurfaces(volume, None, scene=scene)
        twin = logic.process(volume, labelMap=labels, modality="CT", scene=scene)
        textured = logic.textureSurfaces(
            volume, twin.skin_model_node, segmentation=twin.segmentation_node, scene=scene
        )
        assert set(textured) == {"skin", "vertebrae"}
        skin_model, skin_stats = textured["skin"]
        assert (
            skin_model is twin.skin_model_node
            and skin_stats.reducer == "mean"
            and skin_stats.colormap == "grey"
        )
        assert skin_stats.depth_range_mm == (-4.0, 0.0)
        vertebrae_model, vertebrae_stats = textured["vertebrae"]
        assert vertebrae_model.GetPolyData().GetPointData().GetArray("MSDT.Texture") is not None
        assert vertebrae_stats.mean > skin_stats.mean  # bone cortex is brighter than the skin and fat
        nodes = scene.GetNumberOfNodes()
        again = logic.textureSurfaces(
            volume,
            twin.skin_model_node,
            segmentation=twin.segmentation_node,
            vertebraeModel=vertebrae_model,
            scene=scene,
        )
        assert again["vertebrae"][0] is vertebrae_model and scene.GetNumberOfNodes() == nodes
    finally:
        app.shutdown_scene(scene)


def test_spine_summary_text_shows_reasons_for_missing_values(msdt_module):
    text_of = msdt_module.MSDTLogic.spineSummaryText
    full = {
        "cobb": [
            {"angle_deg": 7.08, "upper": "L1", "lower": "L5", "apex": "L4"},
            {"angle_deg": 3.0, "upper": "T11", "lower": "L1", "apex": "T12"},
        ],
        "lordosis_deg": 51.49,
        "lordosis": {"angle_deg": 51.49, "upper": "L1", "lower": "S1"},
        "kyphosis_deg": None,
        "kyphosis": {"angle_deg": None, "reason": "T4 is not in the field of view"},
        "osteoporosis": {"level": "L1", "hu": 127.4, "category": "indeterminate", "reason": None},
    }
    assert text_of(full) == (
        "Cobb 7.1° (L1-L5, apex L4); lordosis 51.5°; kyphosis n/a (T4 is not in the field of view); "
        "L1 127 HU: indeterminate"
    )
    empty = {
        "cobb": [{"angle_deg": None, "reason": "a Cobb angle needs two vertebrae"}],
        "lordosis_deg": None,
        "lordosis": {"angle_deg": None, "reason": "no L1"},
        "kyphosis_deg": None,
        "kyphosis": {"angle_deg": None, "reason": "no T4"},
        "osteoporosis": {"level": "L1", "hu": None, "category": None, "reason": "MR is not in HU"},
        "notes": ["only one vertebra"],
    }
    assert text_of(empty) == (
        "Cobb n/a (a Cobb angle needs two vertebrae); lordosis n/a (no L1); kyphosis n/a (no T4); "
        "L1 HU n/a (MR is not in HU); only one vertebra"
    )
    # Only the flat keys, no reasons, no Cobb list: still one readable line.
    assert text_of({"cobb": [], "lordosis_deg": 40.0, "kyphosis_deg": None}) == (
        "Cobb n/a; lordosis 40.0°; kyphosis n/a"
    )
    assert text_of(None) == "Cobb n/a; lordosis n/a; kyphosis n/a"


# --------------------------------------------------------------------------------------------------------------
# icons
# --------------------------------------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


@pytest.mark.parametrize("path", [ROOT / "MSDT.png"] + [module_icon(m) for m in MODULES], ids=lambda p: p.name)
def test_icons_are_128px_png(path):
    assert png_size(path) == ICON_SIZE


# ==============================================================================================================
# MSDTFusion: markerless registration and OpenIGTLink panel, and its Logic against the real library, headless
# (this section only concerns MSDTFusion; it shares nothing with the MSDT tests above but the helpers)
# ==============================================================================================================

PLUS_SWEEP = ROOT / "Testing" / "Data" / "plus_tracked_ultrasound" / "SpinePhantomFreehand.igs.mha"

# Widgets the Fusion panel must have: objectName -> accepted declared classes.
FUSION_WIDGETS = {
    "fixedModelSelector": {"qMRMLNodeComboBox"},
    "movingModelSelector": {"qMRMLNodeComboBox"},
    "movingCloudPathLineEdit": {"ctkPathLineEdit"},
    "fixedLandmarksSelector": {"qMRMLNodeComboBox"},
    "movingLandmarksSelector": {"qMRMLNodeComboBox"},
    "outputTransformSelector": {"qMRMLNodeComboBox"},
    "registerButton": {"QPushButton"},
    "registrationResultLabel": {"QLabel"},
    "hostLineEdit": {"QLineEdit"},
    "portSpinBox": {"QSpinBox"},
    "referenceToMriSelector": {"qMRMLNodeComboBox"},
    "connectButton": {"QPushButton"},
    "igtStatusLabel": {"QLabel"},
    "recordButton": {"QPushButton"},
    "recordingDirectoryButton": {"ctkDirectoryButton"},
    "saveRecordingButton": {"QPushButton"},
}
FUSION_SECTIONS = ["Markerless registration", "OpenIGTLink"]
FUSION_NODE_TYPES = {
    "fixedModelSelector": (["vtkMRMLModelNode"], None),
    "movingModelSelector": (["vtkMRMLModelNode"], "true"),
    "fixedLandmarksSelector": (["vtkMRMLMarkupsFiducialNode"], "true"),
    "movingLandmarksSelector": (["vtkMRMLMarkupsFiducialNode"], "true"),
    "outputTransformSelector": (["vtkMRMLLinearTransformNode"], "true"),
    "referenceToMriSelector": (["vtkMRMLLinearTransformNode"], "true"),
}


def test_fusion_ui_has_the_registration_and_igt_widgets(qt):
    _, _, QtWidgets = qt
    ui_root = ET.parse(module_ui("MSDTFusion")).getroot()
    declared = ui_widget_classes(ui_root)
    for name, classes in FUSION_WIDGETS.items():
        assert declared.get(name) in classes, f"{name}: declared {declared.get(name)}, expected one of {classes}"
    # Every one of these widgets is driven by the module script or bound to its parameter node.
    used = ui_names_used(module_script("MSDTFusion").read_text(encoding="utf-8"))
    bound = parameter_names_in_ui(ui_root)
    assert set(FUSION_WIDGETS) <= used | set(bound), sorted(set(FUSION_WIDGETS) - used - set(bound))
    assert bound == {
        "fixedModelSelector": "fixedModel",
        "movingModelSelector": "movingModel",
        "fixedLandmarksSelector": "fixedLandmarks",
        "movingLandmarksSelector": "movingLandmarks",
        "outputTransformSelector": "outputTransform",
        "hostLineEdit": "host",
        "portSpinBox": "port",
        "referenceToMriSelector": "referenceToMri",
        "recordingDirectoryButton": "recordingDirectory",
    }

    sections = [
        b.findtext("property[@name='text']/string")
        for b in ui_root.iter("widget")
        if b.get("class") == "ctkCollapsibleButton"
    ]
    assert sections == FUSION_SECTIONS

    def prop(name, key):
        widget = next(w for w in ui_root.iter("widget") if w.get("name") == name)
        return widget.find(f"property[@name='{key}']")

    for name, (types, none_enabled) in FUSION_NODE_TYPES.items():
        assert [s.text for s in prop(name, "nodeTypes").iter("string")] == types, name
        if none_enabled is not None:
            assert prop(name, "noneEnabled").findtext("bool") == none_enabled, name
    # Every node selector gets the scene from the top widget.
    receivers = {c.findtext("receiver") for c in ui_root.iter("connection")}
    assert set(FUSION_NODE_TYPES) <= receivers

    widget, problems = load_ui(qt, module_ui("MSDTFusion"))
    assert problems == []
    assert widget.findChild(QtWidgets.QLineEdit, "hostLineEdit").text() == "127.0.0.1"
    port = widget.findChild(QtWidgets.QSpinBox, "portSpinBox")
    assert (port.minimum(), port.maximum(), port.value()) == (1, 65535, 18944)
    for name in ("connectButton", "recordButton"):
        assert widget.findChild(QtWidgets.QPushButton, name).isCheckable(), name
    for name in ("registerButton", "recordButton", "saveRecordingButton"):
        assert not widget.findChild(QtWidgets.QPushButton, name).isEnabled(), name
    for name in ("registrationResultLabel", "igtStatusLabel"):
        assert widget.findChild(QtWidgets.QLabel, name).wordWrap(), name
    widget.deleteLater()


@pytest.fixture
def fusion_module(monkeypatch):
    """MSDTFusion/MSDTFusion.py imported outside Slicer (see import_module_headless)."""
    return import_module_headless(monkeypatch, "MSDTFusion", ("MSDT", "MSDTFusion"))


def _fusion_rigid(angle_deg, axis, translation):
    import numpy as np

    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    angle = np.radians(angle_deg)
    matrix = np.eye(4)
    matrix[:3, :3] = np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * k @ k
    matrix[:3, 3] = translation
    return matrix


def _fusion_apply(matrix, points):
    import numpy as np

    return np.asarray(points, float) @ np.asarray(matrix)[:3, :3].T + np.asarray(matrix)[:3, 3]


def _fusion_posterior_cloud(polydata, count=6000, seed=0):
    """Points of the skin that face backwards (outward normal towards -A), as a camera behind the patient sees."""
    import numpy as np
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    normals = vtk.vtkPolyDataNormals()
    normals.SetInputData(polydata)
    normals.ComputePointNormalsOn()
    normals.SplittingOff()
    normals.ConsistencyOn()
    normals.Update()
    output = normals.GetOutput()
    points = vtk_to_numpy(output.GetPoints().GetData()).astype(float)
    vectors = vtk_to_numpy(output.GetPointData().GetNormals()).astype(float)
    if np.mean(np.einsum("ij,ij->i", vectors, points - points.mean(axis=0))) < 0:
        vectors = -vectors  # make them point outwards
    posterior = points[vectors[:, 1] < -0.5]
    return posterior[np.random.default_rng(seed).choice(len(posterior), min(count, len(posterior)), replace=False)]


def test_fusion_logic_registers_the_ct_skin_headless(fusion_module, ct_twin, tmp_path):
    """registerSurface on the sample CT's skin: a posterior partial cloud moved by a known rigid transform comes
    back within 1 mm / 0.5 deg, with a CameraToMRI transform, the cloud under it and the TRE of the landmarks."""
    import numpy as np
    import slicer
    import vtk

    from MSDTFusionLib import pointclouds, registration
    from MSDTLib.app import new_scene, shutdown_scene
    from MSDTLib.errors import MSDTError

    logic = fusion_module.MSDTFusionLogic()
    _, twin = ct_twin
    surface = vtk.vtkPolyData()
    surface.DeepCopy(twin.skin_model_node.GetPolyData())
    skin_points = _fusion_posterior_cloud(surface)
    camera_from_skin = _fusion_rigid(20.0, (0.4, -0.3, 0.85), (30.0, -40.0, 25.0))
    cloud = _fusion_apply(camera_from_skin, skin_points)
    truth = np.linalg.inv(camera_from_skin)

    scene = new_scene()
    try:
        skin = scene.AddNewNodeByClass("vtkMRMLModelNode", "Skin")
        skin.SetAndObservePolyData(surface)
        # Landmarks inside the body (as vertebral centroids would be), never used by the registration itself.
        centre = skin_points.mean(axis=0)
        targets = centre + np.array([[0.0, 60.0, -80.0], [10.0, 70.0, 0.0], [-5.0, 65.0, 90.0]])
        fixed_landmarks = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Skin landmarks")
        moving_landmarks = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Camera landmarks")
        for index, (target, moved) in enumerate(zip(targets, _fusion_apply(camera_from_skin, targets), strict=True)):
            fixed_landmarks.AddControlPoint(vtk.vtkVector3d(*target), f"T{index + 1}")
            moving_landmarks.AddControlPoint(vtk.vtkVector3d(*moved), f"T{index + 1}")

        # Missing or half-given inputs are refused and leave the scene as it was.
        nodes_before = scene.GetNumberOfNodes()
        for bad in (
            dict(fixedModel=None, movingPoints=cloud),
            dict(fixedModel=skin, movingPoints=None),
            dict(fixedModel=skin, movingPoints=cloud, fixedLandmarks=fixed_landmarks),
        ):
            with pytest.raises(MSDTError):
                logic.registerSurface(scene=scene, **bad)
        with pytest.raises(MSDTError):
            logic.movingPoints(None, "")
        assert scene.GetNumberOfNodes() == nodes_before

        result, nodes, tre = logic.registerSurface(
            skin, cloud, fixedLandmarks=fixed_landmarks, movingLandmarks=moving_landmarks, scene=scene
        )
        assert result.converged and result.reliable, result.message
        assert registration.rotation_angle_deg(result.matrix, truth) < 0.5
        assert np.abs(_fusion_apply(result.matrix, cloud) - skin_points).max() < 1.0
        assert np.abs(result.matrix[:3, 3] - truth[:3, 3]).max() < 1.0

        transform = nodes["transform"]
        assert transform.IsA("vtkMRMLLinearTransformNode") and transform.GetName() == "CameraToMRI"
        assert scene.IsNodePresent(transform)
        np.testing.assert_allclose(slicer.util.arrayFromTransformMatrix(transform), result.matrix, atol=1e-6)
        moving = nodes["moving"]
        assert moving.IsA("vtkMRMLModelNode") and scene.IsNodePresent(moving)
        assert moving.GetPolyData().GetNumberOfPoints() == len(cloud)
        assert moving.GetTransformNodeID() == transform.GetID()
        assert nodes["fixed"] is skin and scene.GetFirstNodeByName("Skin surface (fixed)") is None
        # The cloud model is the camera cloud again, in its own frame.
        np.testing.assert_allclose(logic.movingPoints(moving), cloud, atol=1e-9)

        assert tre is not None and tre["count"] == 3 and tre["max_mm"] < 1.0
        text = logic.resultText(result, tre)
        assert text.startswith("Registered: RMS ") and "converged: yes" in text and "Reliable" in text
        assert "TRE over 3 landmark(s)" in text and "ambiguous" not in text

        # A chosen output transform receives the matrix (the start from the last result keeps this quick); the
        # file of a cloud wins over the model.
        path = pointclouds.write_point_cloud(tmp_path / "camera.xyz", cloud)
        from_file = logic.movingPoints(skin, str(path))
        np.testing.assert_allclose(from_file, cloud, atol=1e-5)
        chosen = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Chosen")
        again, again_nodes, again_tre = logic.registerSurface(
            skin,
            from_file,
            scene=scene,
            outputTransform=chosen,
            options=registration.RegistrationOptions(initial_matrix=result.matrix),
        )
        assert again_tre is None and again.converged
        assert again_nodes["transform"] is chosen and scene.IsNodePresent(again_nodes["moving"])
        assert again_nodes["moving"].GetTransformNodeID() == chosen.GetID()
        np.testing.assert_allclose(slicer.util.arrayFromTransformMatrix(chosen), again.matrix, atol=1e-6)
        assert chosen.GetAttribute("MSDT.converged") == "True"
    finally:
        shutdown_scene(scene)


def test_fusion_result_text_in_plain_words(fusion_module):
    import numpy as np

    from MSDTFusionLib.registration import RegistrationResult

    text_of = fusion_module.MSDTFusionLogic.resultText

    def result(converged=True, message="Registered", **uncertainty):
        return RegistrationResult(
            matrix=np.eye(4),
            rms_mm=0.834,
            inlier_fraction=0.951,
            overlap=0.987,
            converged=converged,
            uncertainty={"ambiguous": False, "degenerate": False, "second_best": None, **uncertainty},
            seconds=0.4,
            iterations=12,
            message=message,
        )

    good = text_of(
        result(translation_sd_mm=[0.1, 0.12, 0.3], rotation_sd_deg=[0.05, 0.02, 0.04]),
        tre={"count": 2, "mean_mm": 1.234, "max_mm": 1.5, "worst": "L1"},
    )
    assert good.splitlines() == [
        "Registered: RMS 0.83 mm, inliers 95 %, overlap 99 %, converged: yes.",
        "Reliable: one clear pose, constrained in every direction.",
        "Pose SD: translation R-L 0.10, A-P 0.12, S-I 0.30 mm; rotation R-L 0.05, A-P 0.02, S-I 0.04°.",
        "TRE over 2 landmark(s): mean 1.23 mm, max 1.50 mm (worst: L1).",
    ]

    ambiguous = text_of(
        result(ambiguous=True, second_best={"rotation_deg": 179.6, "translation_mm": 12.2, "score_ratio": 1.01})
    )
    assert "Reliable" not in ambiguous
    assert "Warning, ambiguous: another pose (180° and 12 mm away) fits the skin almost as well" in ambiguous

    weak = text_of(result(degenerate=True, weakest_direction={"kind": "translation", "axis": "S-I"}))
    assert "Warning, weakly constrained: the surface hardly fixes the translation along S-I" in weak

    failed = text_of(
        result(
            converged=False,
            message="Registration failed: RMS 4.00 mm; only 20 % of the cloud lies within 10 mm of the surface",
        )
    )
    assert failed.startswith("Registration failed: RMS 0.83 mm") and "converged: no" in failed
    assert "do not use this transform. Why: only 20 % of the cloud lies within 10 mm of the surface." in failed
    assert text_of(None) == ""


def test_fusion_status_text(fusion_module):
    status_of = fusion_module.MSDTFusionLogic.statusText
    assert status_of(None) == "Not connected."
    statistics = {
        "status": "connected to 127.0.0.1:18944",
        "connected": True,
        "reconnects": 2,
        "errors": 0,
        "last_error": None,
        "received": 630,
        "dropped": 3,
        "image_fps": 29.968,
        "latency_median_ms": 1.249,
        "devices": {"Image_Image": {"type": "IMAGE", "fps": 29.968}},
    }
    assert status_of(statistics) == (
        "Connected to 127.0.0.1:18944\n"
        "Image 30.0 fps, latency 1.2 ms (median), 3 dropped, 2 reconnect(s), 630 message(s)"
    )
    tracking_only = dict(
        statistics,
        status="waiting for 10.0.0.2:18944 (retry in 0.4 s)",
        image_fps=None,
        latency_median_ms=None,
        errors=1,
        last_error="CRC mismatch in TRANSFORM message 'ProbeToTracker'",
        devices={"ProbeToTracker": {"type": "TRANSFORM", "fps": 59.9}, "StylusToTracker": {"fps": None}},
    )
    assert status_of(tracking_only, recordedFrames=42) == (
        "Waiting for 10.0.0.2:18944 (retry in 0.4 s)\n"
        "Tracking 59.9 fps, latency n/a, 3 dropped, 2 reconnect(s), 630 message(s), "
        "1 error(s), last: CRC mismatch in TRANSFORM message 'ProbeToTracker', recorded 42 frame(s)"
    )
    nothing_yet = status_of({"status": "connecting to 127.0.0.1:18944", "devices": {}})
    assert nothing_yet == (
        "Connecting to 127.0.0.1:18944\nNo frame rate yet, latency n/a, 0 dropped, 0 reconnect(s), 0 message(s)"
    )


def test_fusion_logic_receives_and_records_openigtlink(fusion_module, tmp_path):
    """connect / processPending / record / save / disconnect against the PLUS replay simulator on a free port."""
    import time

    import slicer

    from MSDTFusionLib.igt import free_port
    from MSDTFusionLib.igtsim import IgtSimulator
    from MSDTLib.app import new_scene, shutdown_scene
    from MSDTLib.errors import MSDTError

    logic = fusion_module.MSDTFusionLogic()
    scene = new_scene()
    simulator = None

    def pump(seconds, until=lambda: False):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            logic.processPending()
            time.sleep(0.02)  # like the widget's timer

    try:
        assert logic.processPending() == 0 and logic.statistics() is None and not logic.isConnected()
        for host, port in (("", 18944), ("127.0.0.1", 0), ("127.0.0.1", "port")):
            with pytest.raises(MSDTError):
                logic.connect(host, port, scene=scene)
        with pytest.raises(MSDTError):
            logic.startRecording()

        port = free_port()
        simulator = IgtSimulator(PLUS_SWEEP, port, fps=30, loop=True).start()
        camera_to_mri = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "CameraToMRI")
        logic.connect("127.0.0.1", port, camera_to_mri, scene=scene, retry_interval=0.02)
        assert logic.isConnected()

        def arrived():
            image = scene.GetFirstNodeByName("Image_Image")
            probe = scene.GetFirstNodeByName("ProbeToTracker")
            return image is not None and probe is not None

        pump(1.0)
        pump(10.0, arrived)  # a slow machine gets more time
        image = scene.GetFirstNodeByName("Image_Image")
        probe = scene.GetFirstNodeByName("ProbeToTracker")
        assert image is not None and image.IsA("vtkMRMLScalarVolumeNode")
        assert slicer.util.arrayFromVolume(image).size > 0
        assert probe is not None and probe.IsA("vtkMRMLLinearTransformNode")
        # The PLUS chain hangs under the Reference-to-MRI transform.
        assert scene.GetFirstNodeByName("TrackerToReference").GetTransformNodeID() == camera_to_mri.GetID()
        statistics = logic.statistics()
        assert statistics["connected"] and statistics["received"] > 0
        assert logic.statusText(statistics).startswith(f"Connected to 127.0.0.1:{port}\n")

        other = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "OtherToMRI")
        logic.setReferenceToMri(other)
        assert scene.GetFirstNodeByName("TrackerToReference").GetTransformNodeID() == other.GetID()

        logic.startRecording()
        assert logic.isRecording()
        pump(10.0, lambda: logic.recordedFrames() >= 3)
        logic.stopRecording()
        assert not logic.isRecording() and logic.recordedFrames() >= 3
        with pytest.raises(MSDTError):
            logic.saveRecording("")
        written = logic.saveRecording(tmp_path / "recording")
        assert written["mrb"].is_file() and written["seq_nrrd"] and all(p.is_file() for p in written["seq_nrrd"])

        logic.disconnect()
        assert not logic.isConnected() and logic.processPending() == 0
        assert logic.statistics()["status"] == "stopped"
        assert logic.statusText(logic.statistics()).startswith("Stopped\n")
        logic.disconnect()  # twice is harmless
    finally:
        logic.disconnect()
        if simulator is not None:
            simulator.stop()
        shutdown_scene(scene)


def test_fusion_self_test_runs_headless(fusion_module, monkeypatch):
    """The module's own self-test (synthetic back and sphere registrations, status line), run as Slicer runs it
    but on a headless scene, so that a broken self-test is noticed without Slicer."""
    messages = run_self_test_headless(monkeypatch, fusion_module.MSDTFusionTest)
    assert messages[-1] == "Test passed"
    assert any("Reliable" in message for message in messages)
    assert any("weakly constrained" in message for message in messages)


# ==============================================================================================================
# MSDTMotion: recording, sEMG, IMU and live serial stream panel, and its Logic against the real library, headless
# (this section only concerns MSDTMotion; it shares nothing with the tests above but the helpers)
# ==============================================================================================================

MOTION_C3D = ROOT / "Testing" / "Data" / "pyomeca_c3d_markers_emg" / "markers_analogs.c3d"
MOTION_BROAD = ROOT / "Testing" / "Data" / "broad_imu_optical_reference"
MOTION_BROAD = MOTION_BROAD / "02_undisturbed_slow_rotation_B.hdf5"

# Widgets the Motion panel must have: objectName -> accepted declared classes.
MOTION_WIDGETS = {
    "recordingPathLineEdit": {"ctkPathLineEdit"},
    "sampleRateSpinBox": {"QDoubleSpinBox", "ctkDoubleSpinBox"},
    "loadRecordingButton": {"QPushButton"},
    "recordingInfoLabel": {"QLabel"},
    "channelsLineEdit": {"QLineEdit"},
    "windowSpinBox": {"QDoubleSpinBox", "ctkDoubleSpinBox"},
    "analyseEmgButton": {"QPushButton"},
    "emgResultLabel": {"QLabel"},
    "imuPathLineEdit": {"ctkPathLineEdit"},
    "analyseImuButton": {"QPushButton"},
    "imuResultLabel": {"QLabel"},
    "serialPortLineEdit": {"QLineEdit"},
    "baudRateSpinBox": {"QSpinBox", "ctkSpinBox"},
    "connectSerialButton": {"QPushButton"},
    "serialStatusLabel": {"QLabel"},
}


def test_motion_ui_has_the_recording_emg_imu_and_serial_widgets(qt):
    _, _, QtWidgets = qt
    ui_root = ET.parse(module_ui("MSDTMotion")).getroot()
    classes = ui_widget_classes(ui_root)
    for name, accepted in MOTION_WIDGETS.items():
        assert classes.get(name) in accepted, f"{name}: {classes.get(name)} not in {accepted}"
    used = ui_names_used(module_script("MSDTMotion").read_text(encoding="utf-8"))
    bound = parameter_names_in_ui(ui_root)
    # Each widget is either driven by the code (self.ui.<name>) or bound to the parameter node.
    assert set(MOTION_WIDGETS) <= used | set(bound), sorted(set(MOTION_WIDGETS) - used - set(bound))
    assert missing_ui_names(module_script("MSDTMotion").read_text(encoding="utf-8"), set(classes)) == []
    assert bound == {
        "sampleRateSpinBox": "sampleRate",
        "channelsLineEdit": "channels",
        "windowSpinBox": "windowS",
        "serialPortLineEdit": "serialPort",
        "baudRateSpinBox": "baudRate",
    }

    titles = {
        b.findtext("property[@name='text']/string")
        for b in ui_root.iter("widget")
        if b.get("class") == "ctkCollapsibleButton"
    }
    assert {"Recording", "sEMG", "IMU", "Live serial stream"} <= titles

    widget, problems = load_ui(qt, module_ui("MSDTMotion"))
    assert problems == []
    assert widget.findChild(QtWidgets.QDoubleSpinBox, "windowSpinBox").value() == 1.0
    assert widget.findChild(QtWidgets.QDoubleSpinBox, "sampleRateSpinBox").value() == 0.0
    assert widget.findChild(QtWidgets.QSpinBox, "baudRateSpinBox").value() == 115200
    assert widget.findChild(QtWidgets.QPushButton, "connectSerialButton").isCheckable()
    widget.deleteLater()


@pytest.fixture
def motion_module(monkeypatch):
    """MSDTMotion/MSDTMotion.py imported outside Slicer (see import_module_headless)."""
    return import_module_headless(monkeypatch, "MSDTMotion", ("MSDT", "MSDTMotion"))


@pytest.fixture
def motion_scene():
    from MSDTLib.app import new_scene, shutdown_scene

    scene = new_scene()
    yield scene
    shutdown_scene(scene)


def test_motion_logic_loads_and_analyses_the_c3d_emg_headless(motion_module, motion_scene):
    from MSDTLib.errors import MSDTError

    logic = motion_module.MSDTMotionLogic()
    assert logic.missingPythonPackage() is None
    with pytest.raises(MSDTError):
        logic.loadRecording("", scene=motion_scene)

    recording, nodes = logic.loadRecording(MOTION_C3D, scene=motion_scene)
    assert nodes["signals"].IsA("vtkMRMLTableNode")
    assert motion_scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems() >= 1
    assert "Delt_ant.EMG1" in recording.signals and "Biceps.EMG4" in recording.signals
    assert recording.name in logic.recordingText(recording, nodes)

    channels = "Delt_ant.EMG1,Biceps.EMG4"
    summary, charts = logic.analyseEmg(recording, channels, windowS=1.0, scene=motion_scene)
    assert list(summary["channels"]) == ["Delt_ant.EMG1", "Biceps.EMG4"]
    for result in summary["channels"].values():
        assert not result.get("error")
        assert 20.0 < result["mdf_hz"] < 200.0
    assert len(charts) == 2 and all(chart.IsA("vtkMRMLPlotChartNode") for chart in charts)
    text = logic.emgText(summary)
    assert "Delt_ant.EMG1: MDF" in text and "Biceps.EMG4: MDF" in text
    assert "Hz/s" in text and "%/min" in text

    with pytest.raises(MSDTError):
        logic.analyseEmg(recording, "NoSuchChannel", scene=motion_scene)
    with pytest.raises(MSDTError):
        logic.analyseEmg(None)


def test_motion_logic_analyses_the_broad_imu_headless(motion_module, motion_scene):
    logic = motion_module.MSDTMotionLogic()
    summary, chart = logic.analyseImu(MOTION_BROAD, scene=motion_scene)
    assert summary["rmse_deg"]["vqf"]["total"] <= 2.5
    assert set(summary["trunk_angles"]["range_of_motion"]) == {"flexion", "lateral_bending", "axial_rotation"}
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == 3
    text = logic.imuText(summary)
    assert "RMSE vs reference: total" in text and "inclination" in text
    assert "Trunk range of motion: flexion" in text


def test_motion_texts_in_plain_words(motion_module):
    logic = motion_module.MSDTMotionLogic
    assert logic.emgText({"channels": {}}) == "No channel analysed."
    assert logic.emgText(
        {
            "channels": {
                "A": {"mdf_hz": 80.04, "mdf_slope_hz_per_s": -0.1234, "mdf_slope_pct_per_min": -9.25},
                "B": {"error": "too short"},
                "C": {"mdf_hz": None, "mdf_slope_hz_per_s": None, "mdf_slope_pct_per_min": None},
            }
        }
    ) == ("A: MDF 80.0 Hz, slope -0.123 Hz/s, -9.2 %/min\nB: too short\nC: MDF n/a, slope n/a, n/a %/min")

    imu_summary = {
        "name": "trial",
        "duration_s": 12.0,
        "fs_hz": 286.0,
        "mode": "9D",
        "rmse_deg": {"vqf": {"total": 1.234, "inclination": 0.567, "heading": 1.0}},
        "trunk_angles": {
            "range_of_motion": {
                "flexion": {"range": 30.04},
                "lateral_bending": {"range": 10.0},
                "axial_rotation": {"range": float("nan")},
            }
        },
    }
    assert logic.imuText(imu_summary) == (
        "trial: 12.0 s at 286 Hz, 9D\n"
        "RMSE vs reference: total 1.23 deg, inclination 0.57 deg\n"
        "Trunk range of motion: flexion 30.0 deg, lateral bending 10.0 deg, axial rotation n/a"
    )
    del imu_summary["rmse_deg"]
    assert "No reference orientation" in logic.imuText(imu_summary)

    assert logic.serialText(None) == "Not connected."
    streaming = {"status": "streaming", "received": 10, "dropped": 1, "corrupt": 2, "rate_hz": 99.96}
    assert logic.serialText(streaming) == "Streaming\n10 received, 1 dropped, 2 corrupt, 100.0 Hz"
    from MSDTMotionLib.serialstream import StreamStatistics

    assert logic.serialText(StreamStatistics("disconnected", 5, 0, 0, 3, 0.0, "gone")) == (
        "Disconnected\n5 received, 0 dropped, 0 corrupt, 0.0 Hz, 3 overrun (last error: gone)"
    )


def test_motion_logic_streams_a_serial_pty_headless(motion_module, motion_scene):
    """connect / pump / disconnect against a real pseudo-terminal pair fed with counter,v1,v2 lines."""
    import time

    from MSDTLib.errors import MSDTError
    from MSDTMotionLib.importers import table_column

    logic = motion_module.MSDTMotionLogic()
    assert logic.pumpSerial() == 0 and logic.serialStatistics() is None and not logic.isSerialConnected()
    with pytest.raises(MSDTError):
        logic.connectSerial("", 115200, scene=motion_scene)
    with pytest.raises(MSDTError):
        logic.connectSerial("/dev/null", "fast", scene=motion_scene)

    master, slave = os.openpty()
    try:
        pump = logic.connectSerial(os.ttyname(slave), 115200, scene=motion_scene)
        assert logic.isSerialConnected()

        def pump_until(seconds, until):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not until():
                logic.pumpSerial()
                time.sleep(0.02)  # like the widget's timer

        # Once the port is open nothing written to the master is lost.
        pump_until(5.0, lambda: logic.reader.status == "streaming")
        assert logic.reader.status == "streaming"
        lines = [f"{counter},{counter * 0.5},{-counter}\n" for counter in range(20) if counter != 7]
        lines.insert(10, "garbage,line\n")
        os.write(master, "".join(lines).encode("ascii"))
        pump_until(10.0, lambda: pump.rows_added >= 19)
        assert pump.rows_added == 19
        table = pump.table_node
        assert table.GetNumberOfRows() == 19
        assert list(table_column(table, "ch1")[:3]) == [0.0, 0.5, 1.0]
        statistics = logic.serialStatistics()
        assert (statistics.received, statistics.dropped, statistics.corrupt) == (19, 1, 1)
        text = logic.serialText(statistics)
        assert text.startswith("Streaming\n19 received, 1 dropped, 1 corrupt")

        logic.disconnectSerial()
        assert not logic.isSerialConnected() and logic.pumpSerial() == 0
        assert logic.serialText(logic.serialStatistics()).startswith("Stopped\n19 received")
        logic.disconnectSerial()  # twice is harmless
    finally:
        logic.disconnectSerial()
        os.close(master)
        os.close(slave)


def test_motion_self_test_runs_headless(motion_module, monkeypatch):
    """The module's own self-test, run as Slicer runs it but on a headless scene."""
    messages = run_self_test_headless(monkeypatch, motion_module.MSDTMotionTest)
    assert messages[-1] == "Test passed"
    assert any("EMG: MDF" in message for message in messages)


# ==============================================================================================================
# MSDTInference: model, patient and history panel, and its Logic against the real library, headless
# (this section only concerns MSDTInference; it shares nothing with the tests above but the helpers)
# ==============================================================================================================

INFERENCE_COHORT = ROOT / "Testing" / "Data" / "uci_vertebral_column" / "column_2C_weka.csv"

# Widgets the Inference panel must have: objectName -> accepted declared classes.
INFERENCE_WIDGETS = {
    "cohortPathLineEdit": {"ctkPathLineEdit"},
    "targetLineEdit": {"QLineEdit"},
    "positiveLineEdit": {"QLineEdit"},
    "modelDirectoryButton": {"ctkDirectoryButton"},
    "trainButton": {"QPushButton"},
    "modelInfoLabel": {"QLabel"},
    "patientPathLineEdit": {"ctkPathLineEdit"},
    "predictButton": {"QPushButton"},
    "riskLabel": {"QLabel"},
    "contributionsTableView": {"qMRMLTableView"},
    "addVisitButton": {"QPushButton"},
}


def test_inference_ui_has_the_model_patient_and_history_widgets(qt):
    ui_root = ET.parse(module_ui("MSDTInference")).getroot()
    classes = ui_widget_classes(ui_root)
    for name, accepted in INFERENCE_WIDGETS.items():
        assert classes.get(name) in accepted, f"{name}: {classes.get(name)} not in {accepted}"
    source = module_script("MSDTInference").read_text(encoding="utf-8")
    used = ui_names_used(source)
    bound = parameter_names_in_ui(ui_root)
    assert set(INFERENCE_WIDGETS) <= used | set(bound), sorted(set(INFERENCE_WIDGETS) - used - set(bound))
    assert missing_ui_names(source, set(classes)) == []
    assert bound == {"targetLineEdit": "target", "positiveLineEdit": "positive"}
    assert parameter_binding_problems(source, ui_root) == []
    titles = {
        b.findtext("property[@name='text']/string")
        for b in ui_root.iter("widget")
        if b.get("class") == "ctkCollapsibleButton"
    }
    assert {"Model", "Patient", "History"} <= titles

    widget, problems = load_ui(qt, module_ui("MSDTInference"))
    assert problems == []
    _, _, QtWidgets = qt
    for name in ("trainButton", "predictButton", "addVisitButton"):
        assert not widget.findChild(QtWidgets.QPushButton, name).isEnabled()
    widget.deleteLater()


@pytest.fixture
def inference_module(monkeypatch):
    """MSDTInference/MSDTInference.py imported outside Slicer (see import_module_headless)."""
    return import_module_headless(monkeypatch, "MSDTInference", ("MSDT", "MSDTInference"))


@pytest.fixture
def inference_scene():
    from MSDTLib.app import new_scene, shutdown_scene

    scene = new_scene()
    yield scene
    shutdown_scene(scene)


def _table_column(table, name):
    column = table.GetTable().GetColumnByName(name)
    assert column is not None, name
    return [column.GetValue(i) for i in range(table.GetNumberOfRows())]


def test_inference_logic_trains_predicts_and_follows_a_patient_headless(
    inference_module, inference_scene, tmp_path
):
    import json

    from MSDTLib.errors import MSDTError

    logic = inference_module.MSDTInferenceLogic()
    assert logic.missingPythonPackage() is None
    with pytest.raises(MSDTError):
        logic.train("", "status", "Abnormal", tmp_path / "model")
    with pytest.raises(MSDTError):
        logic.train(INFERENCE_COHORT, "no_such_column", "Abnormal", tmp_path / "model")

    model_dir = tmp_path / "model"
    summary = logic.train(INFERENCE_COHORT, "status", "Abnormal", model_dir)
    assert summary["cv"]["model"]["auc"]["mean"] > 0.85
    assert (model_dir / "summary.json").is_file()
    model_text = logic.modelText(summary)
    assert "CV AUC" in model_text and "±" in model_text and "Brier" in model_text
    assert "calibration slope" in model_text and "ECE" in model_text and "Baseline" in model_text

    patient = tmp_path / "PATIENT.json"
    features = {
        "pelvic_incidence": 63.0,
        "pelvic_tilt numeric": 22.5,
        "lumbar_lordosis_angle": 39.6,
        "sacral_slope": 40.5,
        "pelvic_radius": 98.7,
    }  # degree_spondylolisthesis missing
    patient.write_text(json.dumps({"patient_id": "UCI-1", "date": "2024-03-01", "features": features}))
    result, nodes = logic.predict(patient, model_dir, scene=inference_scene)
    assert 0.0 <= result["risk"] <= 1.0
    low, high = result["interval"]
    assert low <= result["risk"] <= high
    assert result["missing"] == ["degree_spondylolisthesis"]
    from pathlib import Path as _Path

    panel = result["panel"]  # the risk panel pictures the widget shows (chord diagram) and the report uses
    assert {"Feature associations in the cohort", "Per-feature contributions (log-odds)"} <= set(panel)
    assert all(_Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in panel.values())
    table = nodes["contributions"]
    assert table.IsA("vtkMRMLTableNode") and table.GetNumberOfRows() == 6
    assert set(_table_column(table, "feature")) == set(features) | {"degree_spondylolisthesis"}
    assert table.GetColumnUnitLabel("contribution") == "log-odds"
    assert nodes["featureGraph"] is None

    text = logic.riskText(result)
    assert text.startswith("UCI-1: risk of surgery") and "90 % interval" in text
    assert "Missing features: degree_spondylolisthesis" in text
    assert "Suggested next exam: measure degree_spondylolisthesis" in text

    chart = logic.addVisit(result, scene=inference_scene)
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == 3
    logic.addVisit(result, date="2024-09-01", scene=inference_scene)
    assert len(logic.histories["UCI-1"].visits) == 2

    with pytest.raises(MSDTError):
        logic.predict(tmp_path / "missing.json", model_dir, scene=inference_scene)
    with pytest.raises(MSDTError):
        logic.addVisit(None, scene=inference_scene)


def test_inference_texts_in_plain_words(inference_module):
    logic = inference_module.MSDTInferenceLogic
    assert logic.riskText(None) == "No risk estimated."
    assert logic.modelText(None) == "No model trained."
    text = logic.riskText(
        {"patient_id": "P", "risk": 0.5, "interval": [0.25, 0.75], "missing": [], "suggested_exams": []}
    )
    assert text == "P: risk of surgery 50% (90 % interval 25% to 75%)\nNo missing feature."
    metric = {"mean": 0.9, "sd": 0.01}
    cv = {
        "repeats": 5,
        "folds": 5,
        "model": {k: metric for k in ("auc", "brier", "calibration_slope", "ece")},
        "baseline": {"auc": {"mean": 0.88, "sd": 0.02}},
    }
    text = logic.modelText({"n": 10, "n_positive": 4, "positive": "yes", "features": ["a"], "cv": cv})
    assert text.splitlines() == [
        "10 patients (4 'yes'), 1 features",
        "CV AUC 0.900 ± 0.010, Brier 0.900, calibration slope 0.90, ECE 0.900",
        "Baseline (gradient boosting) AUC 0.880 ± 0.020",
        "5 × 5-fold cross-validation",
    ]


def test_inference_self_test_runs_headless(inference_module, monkeypatch):
    """The module's own self-test, run as Slicer runs it but on a headless scene."""
    messages = run_self_test_headless(monkeypatch, inference_module.MSDTInferenceTest)
    assert messages[-1] == "Test passed"
    assert any("CV AUC" in message for message in messages)
