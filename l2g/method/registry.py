"""The method domain's choice lists, torch-free, so the config validates them without importing torch.

Each list is owned here and read by the code that implements it (:mod:`l2g.method.targets`) and by
:mod:`l2g.config.validation`.
"""

from __future__ import annotations

# method.view_gate: how the local classifier's own score for a class on a view gates that class's target
# on the view (l2g.method.targets.view_presence): "off" (the release: every view inherits every image label
# at full strength), "soft" (scaled by the view's sigmoid score), "hard" (kept where that score > 0.5).
VIEW_GATES = ("off", "soft", "hard")
