"""Spine statistics plugins: each computes one family of measurements from a :class:`SpineContext`.

``compute_spine_statistics`` runs the registered plugins and merges their summaries (per-vertebra entries
are merged level by level), the pattern of Slicer's Segment Statistics module.
"""

from __future__ import annotations

from .base import Column, PluginResult, SpineContext, SpineStatisticsPlugin
from .bodies import VertebralBodyPlugin
from .bonedensity import BoneDensityPlugin
from .curvature import CurvaturePlugin
from .discspaces import DiscSpacePlugin

PLUGINS: tuple[type[SpineStatisticsPlugin], ...] = (VertebralBodyPlugin, CurvaturePlugin, DiscSpacePlugin,
                                                    BoneDensityPlugin)


def merge_summaries(target: dict, part: dict) -> dict:
    """Merge a plugin summary into ``target``; nested dicts (e.g. per-vertebra entries) merge key by key."""
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_summaries(target[key], value)
        else:
            target[key] = value
    return target


def compute_spine_statistics(context: SpineContext, plugins=PLUGINS) -> tuple[dict, dict]:
    """Run ``plugins``; returns (merged summary, {plugin: (plugin instance, PluginResult)})."""
    summary, results = {}, {}
    for plugin_class in plugins:
        plugin = plugin_class()
        result = plugin.compute(context)
        merge_summaries(summary, result.summary)
        results[plugin.name] = (plugin, result)
    return summary, results


__all__ = ["PLUGINS", "Column", "PluginResult", "SpineContext", "SpineStatisticsPlugin", "compute_spine_statistics"]
