"""Draw the MSDT extension icon and the four module icons (128x128 PNG) with Qt's QPainter.

The icons are committed; run this again only to change them:

    QT_QPA_PLATFORM=offscreen python Utilities/make_icons.py

Every icon is the same stylised spine (vertebral bodies on an S-shaped curve with discs between them)
on a rounded tile; the modules differ by tile colour and a small badge in the lower right corner.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6 import QtCore, QtGui  # noqa: E402

SIZE = 128
ROOT = Path(__file__).resolve().parents[1]

BONE = QtGui.QColor("#f4ead2")
BONE_EDGE = QtGui.QColor("#6b5a3a")
DISC = QtGui.QColor("#8fd3f4")
BADGE = QtGui.QColor("#ffffff")

# module -> (tile top colour, tile bottom colour, badge kind)
STYLES = {
    "MSDT": ("#2f6db5", "#173a66", None),
    "MSDTFusion": ("#7a3fb0", "#3d1d5c", "fusion"),
    "MSDTMotion": ("#2e9a5d", "#155032", "motion"),
    "MSDTInference": ("#c2622d", "#6b2e10", "inference"),
}


def _tile(painter: QtGui.QPainter, top: str, bottom: str) -> None:
    gradient = QtGui.QLinearGradient(0, 0, 0, SIZE)
    gradient.setColorAt(0.0, QtGui.QColor(top))
    gradient.setColorAt(1.0, QtGui.QColor(bottom))
    painter.setPen(QtCore.Qt.PenStyle.NoPen)
    painter.setBrush(QtGui.QBrush(gradient))
    painter.drawRoundedRect(QtCore.QRectF(4, 4, SIZE - 8, SIZE - 8), 22, 22)


def _spine(painter: QtGui.QPainter) -> None:
    """Seven vertebral bodies on a gentle S-curve, widest at the bottom (lumbar), with discs between them."""
    count = 7
    top, bottom = 14.0, 114.0
    pitch = (bottom - top) / count
    for index in range(count):
        t = index / (count - 1)  # 0 = top (thoracic), 1 = bottom (lumbar)
        cy = top + pitch * (index + 0.5)
        cx = 48 + 9 * math.sin(math.pi * (1.6 * t - 0.3))
        width = 26 + 16 * t
        height = pitch * 0.68
        # disc below each body except the last
        if index < count - 1:
            painter.setPen(QtCore.Qt.PenStyle.NoPen)
            painter.setBrush(DISC)
            painter.drawRoundedRect(QtCore.QRectF(cx - width * 0.42, cy + height / 2 - 1, width * 0.84, pitch - height + 2), 3, 3)
        painter.setPen(QtGui.QPen(BONE_EDGE, 2.0))
        painter.setBrush(BONE)
        painter.drawRoundedRect(QtCore.QRectF(cx - width / 2, cy - height / 2, width, height), 5, 5)
        # spinous process pointing to the right (posterior in a sagittal view)
        painter.drawRoundedRect(QtCore.QRectF(cx + width / 2 - 2, cy - height * 0.18, 10 + 4 * t, height * 0.36), 2, 2)


def _badge(painter: QtGui.QPainter, kind: str | None) -> None:
    if kind is None:
        return
    pen = QtGui.QPen(BADGE, 4.0)
    pen.setCapStyle(QtCore.Qt.PenCapStyle.RoundCap)
    painter.setPen(pen)
    painter.setBrush(QtCore.Qt.BrushStyle.NoBrush)
    if kind == "fusion":  # two overlapping rings: images brought together
        painter.drawEllipse(QtCore.QPointF(92, 96), 12, 12)
        painter.drawEllipse(QtCore.QPointF(106, 96), 12, 12)
    elif kind == "motion":  # an arc with an arrow head: the spine bends
        path = QtGui.QPainterPath()
        path.moveTo(84, 110)
        path.quadTo(112, 108, 112, 80)
        painter.drawPath(path)
        painter.drawLine(QtCore.QPointF(112, 80), QtCore.QPointF(104, 90))
        painter.drawLine(QtCore.QPointF(112, 80), QtCore.QPointF(119, 91))
    elif kind == "inference":  # a tiny three-layer network
        layers = [[84, 108], [96], [108, 84]]
        nodes = []
        for column, ys in enumerate(layers):
            nodes.append([QtCore.QPointF(86 + 14 * column, y) for y in ys])
        thin = QtGui.QPen(BADGE, 2.0)
        painter.setPen(thin)
        for left, right in zip(nodes[:-1], nodes[1:], strict=True):
            for a in left:
                for b in right:
                    painter.drawLine(a, b)
        painter.setBrush(BADGE)
        for column in nodes:
            for point in column:
                painter.drawEllipse(point, 4.5, 4.5)
    else:
        raise ValueError(f"unknown badge {kind!r}")


def draw(module: str) -> QtGui.QImage:
    top, bottom, badge = STYLES[module]
    image = QtGui.QImage(SIZE, SIZE, QtGui.QImage.Format.Format_ARGB32)
    image.fill(QtCore.Qt.GlobalColor.transparent)
    painter = QtGui.QPainter(image)
    painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    _tile(painter, top, bottom)
    _spine(painter)
    _badge(painter, badge)
    painter.end()
    return image


def main() -> int:
    QtGui.QGuiApplication.instance() or QtGui.QGuiApplication(sys.argv[:1])
    targets = {ROOT / "MSDT.png": "MSDT"}
    for module in STYLES:
        targets[ROOT / module / "Resources" / "Icons" / f"{module}.png"] = module
    for path, module in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not draw(module).save(str(path), "PNG"):
            print(f"could not write {path}", file=sys.stderr)
            return 1
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
