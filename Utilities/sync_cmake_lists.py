"""Rewrite the MODULE_PYTHON_SCRIPTS list of each module's CMakeLists.txt from the files on disk (the module
script, GUI helper scripts beside it, and every Lib file).

Run after adding, renaming or removing a Lib file: ``python Utilities/sync_cmake_lists.py``.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("MSDT", "MSDTFusion", "MSDTMotion", "MSDTInference")


def scripts_block(module: str) -> str:
    lib = ROOT / module / f"{module}Lib"
    files = sorted(p.relative_to(lib).as_posix() for p in lib.rglob("*.py") if "__pycache__" not in p.parts)
    helpers = sorted(p.name for p in (ROOT / module).glob("*.py") if p.name != f"{module}.py")
    lines = ["  ${MODULE_NAME}.py"] + [f"  {name}" for name in helpers]
    lines += [f"  ${{MODULE_NAME}}Lib/{name}" for name in files]
    return "set(MODULE_PYTHON_SCRIPTS\n" + "\n".join(lines) + "\n  )"


def main() -> None:
    for module in MODULES:
        path = ROOT / module / "CMakeLists.txt"
        text = path.read_text()
        updated = re.sub(r"set\(MODULE_PYTHON_SCRIPTS\n.*?\n  \)", scripts_block(module), text, count=1, flags=re.S)
        if updated != text:
            path.write_text(updated)
            print(f"updated {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
