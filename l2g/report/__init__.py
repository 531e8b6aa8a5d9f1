"""Offline reports (index.html + report.md + PNGs): the demo's comparison (:mod:`.html_report`) and the
pipeline run's (:mod:`.run_report`), built from :mod:`.document` blocks, :mod:`.plots` figures,
:mod:`.examples` (which images to show) and :mod:`.provenance` (what produced them)."""
