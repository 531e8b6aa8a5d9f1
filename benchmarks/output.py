"""Writing a benchmark's report (torch-free, so benchmarks that only start subprocesses stay light)."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(report: dict, table: str, out: str | Path, note: str = "") -> None:
    """Print a benchmark's table and write the report (with the table) as JSON to ``out``."""
    print("\n" + table)
    report["table"] = table
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}{note}")
