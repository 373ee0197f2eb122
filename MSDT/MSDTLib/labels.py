"""Label-map class tables: TotalSegmentator "total" (CT) and "total_mr" built in, any other from a file.

A class table maps integer label values to segment names. Colours come from :func:`segment_color`, which
gives bone an ivory tone, vertebrae a distinct hue each (so neighbours differ) and other classes a stable
colour derived from the name.
"""

from __future__ import annotations

import colorsys
import json
import re
import zlib
from pathlib import Path

from .errors import MSDTError

_VERTEBRA_LEVELS = ["C1", "C2", "C3", "C4", "C5", "C6", "C7"] + [f"T{i}" for i in range(1, 13)] + \
    [f"L{i}" for i in range(1, 6)] + ["S1"]
VERTEBRA_ORDER = {level: index for index, level in enumerate(_VERTEBRA_LEVELS)}  # cranial (0) to caudal

_TOTAL_ORGANS = (
    "spleen kidney_right kidney_left gallbladder liver stomach pancreas adrenal_gland_right adrenal_gland_left "
    "lung_upper_lobe_left lung_lower_lobe_left lung_upper_lobe_right lung_middle_lobe_right lung_lower_lobe_right "
    "esophagus trachea thyroid_gland small_bowel duodenum colon urinary_bladder prostate kidney_cyst_left "
    "kidney_cyst_right sacrum"
).split()
_TOTAL_VESSELS_TO_RIBS = (
    "heart aorta pulmonary_vein brachiocephalic_trunk subclavian_artery_right subclavian_artery_left "
    "common_carotid_artery_right common_carotid_artery_left brachiocephalic_vein_left brachiocephalic_vein_right "
    "atrial_appendage_left superior_vena_cava inferior_vena_cava portal_vein_and_splenic_vein iliac_artery_left "
    "iliac_artery_right iliac_vena_left iliac_vena_right humerus_left humerus_right scapula_left scapula_right "
    "clavicula_left clavicula_right femur_left femur_right hip_left hip_right spinal_cord gluteus_maximus_left "
    "gluteus_maximus_right gluteus_medius_left gluteus_medius_right gluteus_minimus_left gluteus_minimus_right "
    "autochthon_left autochthon_right iliopsoas_left iliopsoas_right brain skull"
).split()


def _total_classes() -> dict[int, str]:
    """TotalSegmentator v2 "total" task, 117 classes (totalsegmentator/map_to_binary.py)."""
    names = list(_TOTAL_ORGANS)
    names += [f"vertebrae_{level}" for level in reversed(_VERTEBRA_LEVELS)]  # 26 S1 ... 50 C1
    names += _TOTAL_VESSELS_TO_RIBS
    names += [f"rib_{side}_{i}" for side in ("left", "right") for i in range(1, 13)]
    names += ["sternum", "costal_cartilages"]
    return {index + 1: name for index, name in enumerate(names)}


_TOTAL_MR = (
    "spleen kidney_right kidney_left gallbladder liver stomach pancreas adrenal_gland_right adrenal_gland_left "
    "lung_left lung_right esophagus small_bowel duodenum colon urinary_bladder prostate sacrum vertebrae "
    "intervertebral_discs spinal_cord heart aorta inferior_vena_cava portal_vein_and_splenic_vein "
    "iliac_artery_left iliac_artery_right iliac_vena_left iliac_vena_right humerus_left humerus_right "
    "scapula_left scapula_right clavicula_left clavicula_right femur_left femur_right hip_left hip_right "
    "gluteus_maximus_left gluteus_maximus_right gluteus_medius_left gluteus_medius_right gluteus_minimus_left "
    "gluteus_minimus_right autochthon_left autochthon_right iliopsoas_left iliopsoas_right brain"
).split()

CLASS_TABLES: dict[str, dict[int, str]] = {
    "total": _total_classes(),
    "total_mr": {index + 1: name for index, name in enumerate(_TOTAL_MR)},
}


def vertebra_level(name: str) -> str | None:
    """Return the level ("L1", "T12", "S1", ...) a segment name refers to, or None if it is not one vertebra."""
    match = re.fullmatch(r"(?:vertebrae?_)?([CTLS]\d{1,2})", name.strip(), flags=re.IGNORECASE)
    if not match:
        return None
    level = match.group(1).upper()
    return level if level in VERTEBRA_ORDER else None


def load_class_table(spec: str | Path | dict | None, modality: str = "ct") -> dict[int, str]:
    """Return a class table from a built-in name ("total", "total_mr"), a dict, or a file.

    Files: JSON (``{"1": "spleen", ...}``) or text with one ``<value> <name>`` per line (a Slicer colour
    table ``.ctbl``/``.txt`` works: extra colour columns are ignored). ``None`` picks the TotalSegmentator
    table for the modality.
    """
    if spec is None:
        return dict(CLASS_TABLES["total_mr" if modality == "mr" else "total"])
    if isinstance(spec, dict):
        return {int(k): str(v) for k, v in spec.items()}
    if str(spec) in CLASS_TABLES:
        return dict(CLASS_TABLES[str(spec)])
    path = Path(spec)
    if not path.is_file():
        raise MSDTError(f"Label name table '{spec}' is neither a built-in table ({', '.join(CLASS_TABLES)}) "
                        "nor an existing file.")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".json":
        try:
            return {int(k): str(v) for k, v in json.loads(text).items()}
        except (ValueError, AttributeError) as error:
            raise MSDTError(f"Label name table '{path}' is not a JSON object of value -> name: {error}") from None
    table = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.lstrip().startswith("#") and fields[0].isdigit():
            table[int(fields[0])] = fields[1]
    if not table:
        raise MSDTError(f"Label name table '{path}' holds no '<value> <name>' lines.")
    return table


def segment_color(name: str) -> tuple[float, float, float]:
    """Return an RGB colour (0-1) for a segment name: stable across runs, anatomically suggestive."""
    level = vertebra_level(name)
    if level is not None:
        hue = (VERTEBRA_ORDER[level] * 0.13) % 1.0
        return colorsys.hsv_to_rgb(hue, 0.45, 0.95)
    lowered = name.lower()
    if lowered in ("skin", "body"):
        return (0.94, 0.78, 0.66)
    if lowered in ("bone", "sacrum", "skull", "sternum", "costal_cartilages") or lowered.startswith(
            ("rib_", "hip_", "femur_", "humerus_", "scapula_", "clavicula_")):
        return (0.95, 0.91, 0.80)
    hue = (zlib.crc32(name.encode()) % 997) / 997.0
    return colorsys.hsv_to_rgb(hue, 0.55, 0.85)
