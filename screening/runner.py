"""Deprecated: use :mod:`screening.prepare` (preparing a screen) and :mod:`workers.driver` (running it on Ray).

``screening.runner`` held both before the package was laid out by stage; it now re-exports their
public names so code that imports it keeps working. It will be removed in a future release.
"""

from screening.prepare import (
    PreparedScreen,
    check_model_tracks,
    input_provenance,
    load_configured_model,
    open_inputs,
    prepare_screen,
    screen_regions,
)
from workers.driver import ScreenCancelled, ScreenProgress, ScreenSummary, check_cluster_resources, run_screen

__all__ = [
    "PreparedScreen", "ScreenCancelled", "ScreenProgress", "ScreenSummary", "check_cluster_resources",
    "check_model_tracks", "input_provenance", "load_configured_model", "open_inputs", "prepare_screen", "run_screen",
    "screen_regions",
]
