"""Per-patient feature graph: the numbers of the twin as nodes of a networkx graph.

Nodes are of three kinds (node attribute ``kind``):

- ``feature``: one measured number (``name``, ``value``, ``unit``, ``scale`` macro/meso/micro/nano, ``region``,
  ``source`` (file or summary it came from), optional ``source_node`` (MRML node id) and ``date``);
- ``region``: an anatomical region or organ ("L4", "L4-L5", "lumbar spine", "left erector spinae", "trunk");
- ``source``: a file or MRML node the features were read from.

Edges (a ``MultiDiGraph`` keyed by kind, attribute ``kind``) are ``anatomy`` (feature -> region it belongs to,
region -> larger region), ``provenance`` (feature -> feature or source it was derived from) and ``association``
(feature -> feature, correlation ``weight`` = Pearson r in a cohort, ``n`` subjects).

:meth:`FeatureGraph.from_summaries` reads the JSON summaries written by ``msdt segment``, ``msdt spine``,
``msdt emg`` and ``msdt imu`` (recognised by their keys).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import networkx as nx
import numpy as np

from MSDTLib.errors import MSDTError

GRAPH_ATTRIBUTE = "MSDT.FeatureGraph"
PATIENT_ATTRIBUTE = "MSDT.PatientID"
SCALES = ("macro", "meso", "micro", "nano")
EDGE_KINDS = ("anatomy", "provenance", "association")

# Key suffix -> unit, longest first (so "_pct_per_min" wins over "_min").
_SUFFIX_UNITS = (
    ("_pct_per_min", "%/min"), ("_hz_per_s", "Hz/s"), ("_deg_s", "deg/s"), ("_cm2", "cm2"), ("_mm3", "mm3"),
    ("_ml", "ml"), ("_mm", "mm"), ("_deg", "deg"), ("_hz", "Hz"), ("_hu", "HU"), ("_pct", "%"), ("_s", "s"),
    ("_kg", "kg"), ("_cm", "cm"), ("_years", "years"),
)
_CLINICAL_UNITS = {"age": "years", "bmi": "kg/m2", "height": "cm", "weight": "kg", "pain": "0-10",
                   "pain_score": "0-10", "vas": "0-10", "nrs": "0-10", "odi": "%"}


def unit_of(key: str) -> str:
    """Unit from a summary key: ``height_middle_mm`` -> mm, ``hu_mean`` / ``hu`` -> HU, ``mdf_hz`` -> Hz."""
    key = key.lower()
    if key == "hu" or key.startswith("hu_") and not key.endswith(("_mm", "_ml")):
        return "HU"
    for suffix, unit in _SUFFIX_UNITS:
        if key.endswith(suffix):
            return unit
    return ""


def _number(value):
    """``value`` as a finite float, or None (bools, text, None, NaN are not features)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def spine_region(level: str) -> str:
    """Spine segment of a vertebra or disc level ("L4" / "L4-L5" -> "lumbar spine")."""
    first = level.split("-")[0][:1].upper()
    return {"C": "cervical spine", "T": "thoracic spine", "L": "lumbar spine", "S": "sacrum"}.get(first, "spine")


def muscle_region(channel: str) -> str:
    """Trunk side of an EMG channel name ("left erector spinae" -> "trunk left")."""
    lower = channel.lower()
    if re.search(r"(^|[^a-z])(left|l)([^a-z]|$)", lower):
        return "trunk left"
    if re.search(r"(^|[^a-z])(right|r)([^a-z]|$)", lower):
        return "trunk right"
    return "trunk"


# Region -> larger region (the anatomy tree above the leaves).
_PARENTS = {"cervical spine": "spine", "thoracic spine": "spine", "lumbar spine": "spine", "sacrum": "spine",
            "spine": "trunk", "skin": "trunk", "bone": "trunk", "trunk left": "trunk", "trunk right": "trunk",
            "trunk": "body", "patient": None, "body": None}


_LEVEL = re.compile(r"^[CTLS]\d+(-[CTLS]\d+)?$")


def summary_kind(summary: dict) -> str:
    """Which MSDT command wrote ``summary``: "spine", "segment", "emg", "imu" or "demo" (segment + spine)."""
    if "channels" in summary and isinstance(summary["channels"], dict):
        return "emg"
    if "trunk_angles" in summary or "rmse_deg" in summary or "orientation" in summary and "fs_hz" in summary:
        return "imu"
    if any(k in summary for k in ("discs", "cobb", "lordosis_deg", "osteoporosis")):
        return "spine"
    if "skin" in summary and "vertebrae" in summary:
        return "demo" if isinstance(summary.get("spine"), dict) else "segment"
    raise MSDTError("Unrecognised summary: expected the JSON of 'msdt segment', 'msdt spine', 'msdt emg' or "
                    f"'msdt imu' (keys found: {', '.join(sorted(summary)[:12])}).")


class FeatureGraph:
    """The feature graph of one patient (``self.graph``: a networkx ``MultiDiGraph``)."""

    def __init__(self, patient_id: str = "Patient", date: str | None = None):
        self.graph = nx.MultiDiGraph(patient_id=str(patient_id))
        if date:
            self.graph.graph["date"] = str(date)

    # ---------------------------------------------------------------------------------------- basics

    @property
    def patient_id(self) -> str:
        return self.graph.graph.get("patient_id", "Patient")

    @property
    def date(self) -> str | None:
        return self.graph.graph.get("date")

    @staticmethod
    def feature_id(name: str) -> str:
        return f"feature:{name}"

    @staticmethod
    def region_id(name: str) -> str:
        return f"region:{name}"

    def add_region(self, name: str, scale: str = "macro", parent: str | None = None) -> str:
        """Region node ``name`` (and its parents up the anatomy tree); returns its node id.

        The parent is ``parent`` when given, else the known one ("L4" -> "lumbar spine" -> "spine" -> "trunk")."""
        node = self.region_id(name)
        if node not in self.graph:
            self.graph.add_node(node, kind="region", name=name, scale=scale)
        if parent is None:
            if name in _PARENTS:
                parent = _PARENTS[name]
            elif _LEVEL.match(name):
                parent = spine_region(name)
            else:
                parent = "trunk"
        if parent and not self.graph.has_edge(node, self.region_id(parent), "anatomy"):
            self.graph.add_edge(node, self.add_region(parent, "macro"), key="anatomy", kind="anatomy")
        return node

    def add_feature(self, name: str, value, unit: str = "", scale: str = "macro", region: str | None = None,
                    source: str | None = None, source_node: str | None = None, date: str | None = None,
                    derived_from=()) -> str:
        """Add (or replace) feature ``name``; anatomy edge to ``region``, provenance to ``source`` and to the
        features in ``derived_from``. Returns the node id."""
        if scale not in SCALES:
            raise MSDTError(f"Unknown scale '{scale}' for feature '{name}'; expected one of {', '.join(SCALES)}.")
        node = self.feature_id(name)
        attributes = {"kind": "feature", "name": name, "unit": unit or "", "scale": scale,
                      "region": region or "", "source": source or "", "source_node": source_node or "",
                      "date": str(date or self.date or "")}
        number = _number(value)
        if number is not None:
            attributes["value"] = number
        elif value is not None:
            attributes["text"] = str(value)
        if node in self.graph:
            self.graph.remove_edges_from([(node, v, k) for _, v, k in self.graph.out_edges(node, keys=True)
                                          if k != "association"])
            self.graph.nodes[node].clear()
        self.graph.add_node(node, **attributes)
        if region:
            self.graph.add_edge(node, self.add_region(region, "meso" if _LEVEL.match(region) else "macro"),
                                key="anatomy", kind="anatomy")
        for origin in [source, source_node]:
            if origin:
                source_id = f"source:{origin}"
                if source_id not in self.graph:
                    self.graph.add_node(source_id, kind="source", name=origin)
                self.graph.add_edge(node, source_id, key="provenance", kind="provenance")
        for other in derived_from:
            if self.feature_id(other) in self.graph:
                self.graph.add_edge(node, self.feature_id(other), key="provenance", kind="provenance")
        return node

    def features(self) -> dict[str, dict]:
        """``{name: attributes}`` of every feature node."""
        return {d["name"]: dict(d) for _, d in self.graph.nodes(data=True) if d.get("kind") == "feature"}

    def feature_names(self) -> list[str]:
        return sorted(self.features())

    def regions(self) -> list[str]:
        return sorted(d["name"] for _, d in self.graph.nodes(data=True) if d.get("kind") == "region")

    def value(self, name: str):
        data = self.graph.nodes.get(self.feature_id(name))
        return None if data is None else data.get("value", data.get("text"))

    def edges(self, kind: str) -> list[tuple[str, str, dict]]:
        """Edges of ``kind`` as (from name, to name, attributes)."""
        names = self.graph.nodes
        return [(names[u].get("name", u), names[v].get("name", v), dict(d))
                for u, v, k, d in self.graph.edges(keys=True, data=True) if k == kind]

    def feature_vector(self, names=None) -> dict[str, float]:
        """``{name: value}`` of the numeric features among ``names`` (all when None); missing ones are absent."""
        features = self.features()
        wanted = sorted(features) if names is None else names
        return {n: features[n]["value"] for n in wanted if n in features and "value" in features[n]}

    # ------------------------------------------------------------------------------------ builders

    @classmethod
    def from_summaries(cls, patient_id: str, summaries, date: str | None = None) -> FeatureGraph:
        """Graph of ``patient_id`` from MSDT JSON summaries (dicts or paths of summary.json files)."""
        graph = cls(patient_id, date)
        if isinstance(summaries, (dict, str, Path)):
            summaries = [summaries]
        for index, item in enumerate(summaries):
            if isinstance(item, (str, Path)):
                path = Path(item)
                try:
                    summary = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as error:
                    raise MSDTError(f"Summary '{path}' could not be read: {error}") from error
                source = str(path)
            elif isinstance(item, dict):
                summary, source = item, None
            else:
                raise MSDTError(f"Summary {index}: expected a dict or a path, got {type(item).__name__}.")
            graph.add_summary(summary, source or f"summary {index + 1}")
        return graph

    def add_summary(self, summary: dict, source: str = "summary") -> str:
        """Add the features of one MSDT summary; returns its kind ("spine", "segment", "emg", "imu", "demo")."""
        kind = summary_kind(summary)
        if kind == "demo":
            self._add_segment(summary, source)
            self._add_spine(summary["spine"], f"{source}#spine")
        else:
            getattr(self, f"_add_{kind}")(summary, source)
        return kind

    def _add_numbers(self, prefix: str, values: dict, scale: str, region: str, source: str,
                     skip=(), units=None) -> None:
        for key, value in (values or {}).items():
            if key in skip or _number(value) is None:
                continue
            unit = (units or {}).get(key) or unit_of(key)
            self.add_feature(f"{prefix}.{key}", value, unit, scale, region, source)

    def _add_segment(self, summary: dict, source: str) -> None:
        self._add_numbers("skin", summary.get("skin"), "macro", "skin", source,
                          skip=("threshold", "components", "fov_cap_area_cm2"))
        if isinstance(summary.get("bone"), dict):
            self._add_numbers("bone", summary["bone"], "macro", "bone", source, skip=("threshold_hu",))
        for level, vertebra in (summary.get("vertebrae") or {}).items():
            self._add_numbers(level, vertebra, "meso", level, source, skip=("label", "voxel_count"))
            for landmark, depth in (vertebra.get("skin_depth_mm") or {}).items():
                if _number(depth) is not None:
                    self.add_feature(f"{level}.skin_depth_{landmark}_mm", depth, "mm", "macro", level, source)
        for structure, volume in (summary.get("structures_ml") or {}).items():
            if _number(volume) is not None:
                self.add_feature(f"{structure}.volume_ml", volume, "ml", "meso", structure, source)

    def _add_spine(self, summary: dict, source: str) -> None:
        for level, vertebra in (summary.get("vertebrae") or {}).items():
            for key, value in vertebra.items():
                if _number(value) is None or key in ("hu_sphere_radius_mm", "label", "voxel_count"):
                    continue
                scale = "micro" if key.startswith("hu") else "meso"
                unit = "HU" if key.startswith("hu") else unit_of(key)
                self.add_feature(f"{level}.{key}", value, unit, scale, level, source)
        for level, disc in (summary.get("discs") or {}).items():
            self._add_numbers(level, disc, "meso", level, source)
        for index, cobb in enumerate(summary.get("cobb") or []):
            name = "spine.cobb" if index == 0 else f"spine.cobb_{index + 1}"
            for key in ("angle_deg", "angle_3d_deg"):
                if _number(cobb.get(key)) is not None:
                    self.add_feature(f"{name}_{key}", cobb[key], "deg", "macro", "spine", source)
        for key, region in (("lordosis", "lumbar spine"), ("kyphosis", "thoracic spine")):
            block = summary.get(key) if isinstance(summary.get(key), dict) else {}
            value = summary.get(f"{key}_deg", block.get("angle_deg"))
            if _number(value) is not None:
                self.add_feature(f"spine.{key}_deg", value, "deg", "macro", region, source)
            if _number(block.get("angle_3d_deg")) is not None:
                self.add_feature(f"spine.{key}_3d_deg", block["angle_3d_deg"], "deg", "macro", region, source)
        osteoporosis = summary.get("osteoporosis") or {}
        if _number(osteoporosis.get("hu")) is not None:
            level = osteoporosis.get("level") or "L1"
            self.add_feature("osteoporosis.hu", osteoporosis["hu"], "HU", "micro", level, source,
                             derived_from=[f"{level}.hu_mean"])
        anatomy = summary.get("anatomy") or {}
        if anatomy:
            self._add_segment({"modality": summary.get("modality", "ct"), **anatomy}, source)
        for surface, texture in (summary.get("texture") or {}).items():
            if isinstance(texture, dict):
                region = "skin" if surface == "skin" else "spine"
                for key in ("mean", "min", "max"):
                    if _number(texture.get(key)) is not None:
                        self.add_feature(f"texture.{surface}.{key}", texture[key], "HU", "micro", region, source)

    def _add_emg(self, summary: dict, source: str) -> None:
        for channel, result in (summary.get("channels") or {}).items():
            if not isinstance(result, dict) or result.get("error"):
                continue
            units = {"rms": result.get("unit", ""), "iemg": f"{result.get('unit', '')}*s".lstrip("*")}
            self.add_region(channel, "meso", parent=muscle_region(channel))
            self._add_numbers(f"emg.{channel}", result, "meso", channel, source,
                              skip=("fs_hz", "n_samples", "duration_s", "clipped_fraction", "nan_fraction"),
                              units=units)
        for pair, values in (summary.get("symmetry") or {}).items():
            if isinstance(values, dict):
                for key, value in values.items():
                    if _number(value) is not None:
                        self.add_feature(f"emg.symmetry.{pair}.{key}", value, "%", "meso", "trunk", source)
            elif _number(values) is not None:
                self.add_feature(f"emg.symmetry.{pair}", values, "%", "meso", "trunk", source)

    def _add_imu(self, summary: dict, source: str) -> None:
        angles = summary.get("trunk_angles") or {}
        for motion, rom in (angles.get("range_of_motion") or {}).items():
            if isinstance(rom, dict) and _number(rom.get("range")) is not None:
                self.add_feature(f"imu.{motion}_range_deg", rom["range"], "deg", "macro", "trunk", source)
        for motion, peak in (angles.get("peak_angular_velocity_deg_s") or {}).items():
            if _number(peak) is not None:
                self.add_feature(f"imu.{motion}_peak_velocity_deg_s", peak, "deg/s", "macro", "trunk", source)
        rmse = summary.get("rmse_deg") or {}
        for key, value in (rmse.items() if isinstance(rmse, dict) else []):
            if _number(value) is not None:
                self.add_feature(f"imu.rmse_{key}_deg", value, "deg", "macro", "trunk", source)

    def add_clinical(self, table: dict, source: str = "clinical") -> list[str]:
        """Clinical values ``{name: value}`` or ``{name: {"value": .., "unit": ..}}`` (age, sex, pain score..),
        as macro features of the region "patient". Returns the feature names."""
        names = []
        for name, entry in table.items():
            value, unit = (entry.get("value"), entry.get("unit")) if isinstance(entry, dict) else (entry, None)
            if value is None:
                continue
            if isinstance(value, (bool, np.bool_)):
                value = float(value)
            unit = unit if unit is not None else _CLINICAL_UNITS.get(name.lower(), unit_of(name))
            self.add_feature(f"clinical.{name}", value, unit, "macro", "patient", source)
            names.append(f"clinical.{name}")
        return names

    def add_associations(self, cohort_X, names, min_abs_r: float = 0.3, add_missing: bool = False) -> list:
        """Association edges (weight = Pearson r over a cohort) between features with ``|r| >= min_abs_r``.

        ``cohort_X`` is (subjects, features) with columns ``names``; NaN entries are left out pairwise.
        Features absent from this patient's graph get edges only with ``add_missing`` (as value-less nodes).
        Returns [(name_a, name_b, r)] of the edges added.
        """
        x = np.asarray(cohort_X, float)
        names = list(names)
        if x.ndim != 2 or x.shape[1] != len(names):
            raise MSDTError(f"cohort_X must be (subjects, {len(names)}) for {len(names)} names; got {x.shape}.")
        r, n = association_matrix(x)
        added = []
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                if not np.isfinite(r[i, j]) or abs(r[i, j]) < min_abs_r:
                    continue
                nodes = [self.feature_id(names[i]), self.feature_id(names[j])]
                if not all(node in self.graph for node in nodes):
                    if not add_missing:
                        continue
                    for name, node in zip((names[i], names[j]), nodes, strict=True):
                        if node not in self.graph:
                            self.graph.add_node(node, kind="feature", name=name, unit="", scale="macro",
                                                region="", source="cohort", source_node="", date="")
                self.graph.add_edge(nodes[0], nodes[1], key="association", kind="association",
                                    weight=float(r[i, j]), n=int(n[i, j]))
                added.append((names[i], names[j], float(r[i, j])))
        return added

    def association_matrix(self, names) -> np.ndarray:
        """Symmetric matrix of the association weights among ``names`` (0 where no edge)."""
        index = {name: i for i, name in enumerate(names)}
        matrix = np.zeros((len(names), len(names)))
        for a, b, data in self.edges("association"):
            if a in index and b in index:
                matrix[index[a], index[b]] = matrix[index[b], index[a]] = data["weight"]
        return matrix

    # -------------------------------------------------------------------------------------- export

    def to_dict(self) -> dict:
        return nx.node_link_data(self.graph, edges="edges")

    @classmethod
    def from_dict(cls, data: dict) -> FeatureGraph:
        graph = cls()
        graph.graph = nx.node_link_graph(data, directed=True, multigraph=True, edges="edges")
        return graph

    def to_json(self, path=None) -> str:
        """Node-link JSON of the graph (written to ``path`` when given); returns the text."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, path_or_text) -> FeatureGraph:
        """Graph from :meth:`to_json` output: a path or the JSON text itself."""
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            try:
                text = Path(path_or_text).read_text(encoding="utf-8")
            except OSError as error:
                raise MSDTError(f"Feature graph '{path_or_text}' could not be read: {error}") from error
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, KeyError, nx.NetworkXError) as error:
            raise MSDTError(f"Not a feature graph JSON: {error}") from error

    def to_graphml(self, path) -> Path:
        path = Path(path)
        nx.write_graphml(self.graph, path)
        return path

    @classmethod
    def from_graphml(cls, path) -> FeatureGraph:
        graph = cls()
        graph.graph = nx.read_graphml(path, force_multigraph=True)
        return graph

    # --------------------------------------------------------------------------------------- scene

    def dominant_scale(self) -> str:
        counts = Counter(d["scale"] for d in self.features().values())
        return counts.most_common(1)[0][0] if counts else "macro"

    def to_scene(self, scene, study: str = "Inference", scale: str | None = None, name: str | None = None):
        """Table node (one row per feature) holding the graph JSON in attribute ``MSDT.FeatureGraph``, placed
        under patient / ``scale`` (default: the most frequent scale of the features) / ``study``."""
        from MSDTLib.hierarchy import TwinHierarchy
        from MSDTLib.tables import Column, table_from_rows

        columns = [Column("name", kind=str), Column("value"), Column("text", kind=str), Column("unit", kind=str),
                   Column("scale", kind=str), Column("region", kind=str), Column("source", kind=str),
                   Column("source_node", kind=str), Column("date", kind=str)]
        rows = [{key: data.get(key) for key in ("name", "value", "text", "unit", "scale", "region", "source",
                                                 "source_node", "date")}
                for _, data in sorted(self.features().items())]
        table = table_from_rows(scene, name or f"Feature graph {self.patient_id}", columns, rows)
        table.SetAttribute(GRAPH_ATTRIBUTE, json.dumps(self.to_dict(), separators=(",", ":")))
        table.SetAttribute(PATIENT_ATTRIBUTE, self.patient_id)
        TwinHierarchy(scene, self.patient_id).place(table, scale or self.dominant_scale(), study)
        return table

    @classmethod
    def from_scene(cls, table_node) -> FeatureGraph:
        """Graph stored by :meth:`to_scene`; rebuilt from the table rows when the attribute is missing."""
        text = table_node.GetAttribute(GRAPH_ATTRIBUTE)
        if text:
            return cls.from_json(text)
        table = table_node.GetTable()
        columns = [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())]
        if "name" not in columns or "value" not in columns:
            raise MSDTError(f"'{table_node.GetName()}' is not a feature graph table (no name/value columns).")
        graph = cls(table_node.GetAttribute(PATIENT_ATTRIBUTE) or "Patient")
        for row in range(table.GetNumberOfRows()):
            cell = {c: table_node.GetCellText(row, i) for i, c in enumerate(columns)}
            try:
                value = float(cell["value"])
            except ValueError:
                value = None
            graph.add_feature(cell["name"], value if value is not None and math.isfinite(value)
                              else cell.get("text") or None, cell.get("unit", ""),
                              cell.get("scale") or "macro", cell.get("region") or None, cell.get("source") or None,
                              cell.get("source_node") or None, cell.get("date") or None)
        return graph


def association_matrix(x) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise Pearson r of the columns of ``x`` (NaN rows left out per pair) and the pair counts."""
    x = np.asarray(x, float)
    k = x.shape[1]
    r = np.full((k, k), np.nan)
    n = np.zeros((k, k), int)
    finite = np.isfinite(x)
    for i in range(k):
        r[i, i], n[i, i] = 1.0, int(finite[:, i].sum())
        for j in range(i + 1, k):
            ok = finite[:, i] & finite[:, j]
            n[i, j] = n[j, i] = int(ok.sum())
            if ok.sum() >= 3:
                a, b = x[ok, i] - x[ok, i].mean(), x[ok, j] - x[ok, j].mean()
                denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
                if denominator > 0:
                    r[i, j] = r[j, i] = float((a * b).sum() / denominator)
    return r, n
