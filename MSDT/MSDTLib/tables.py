"""Results tables as MRML table nodes: one row per structure, typed columns with unit labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VTK_INT, VTK_DOUBLE, VTK_STRING = 6, 11, 13


@dataclass
class Column:
    """A table column: name, unit label ("" for none), short description, value type (str, float or int)."""

    name: str
    unit: str = ""
    description: str = ""
    kind: type = float


def _text(value, kind: type) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and not np.isfinite(value)):
        return "nan" if kind is float else ""  # a number column has no empty cell: "" would read as 0
    if kind is float:
        return f"{float(value):.4g}" if abs(float(value)) < 1e-3 else f"{float(value):.3f}"
    return str(value)


def table_from_rows(scene, name: str, columns, rows: list[dict]):
    """Table node ``name`` with ``columns`` (units as column unit labels) filled from ``rows`` (dicts).

    Missing numbers are NaN (a notes column says why), missing text is empty.
    """
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for column in columns:
        table.AddColumn().SetName(column.name)
        table.SetColumnType(column.name, {str: VTK_STRING, int: VTK_INT}.get(column.kind, VTK_DOUBLE))
        if column.unit:
            table.SetColumnUnitLabel(column.name, column.unit)
        if column.description:
            table.SetColumnDescription(column.name, column.description)
    for row in rows:
        index = table.AddEmptyRow()
        for position, column in enumerate(columns):
            table.SetCellText(index, position, _text(row.get(column.name), column.kind))
    return table
