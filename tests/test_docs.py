"""The examples of docs/api.md run as written, in order, in one namespace.

They run from a folder holding the tiny synthetic dataset at ``data/synth`` (the path the page uses), and
every ``l2g.load_config`` call gets TINY_SETTINGS first (the page's own overrides still win), so the
page's training runs take seconds; ``l2g.run_pipeline`` goes on past the degenerate pseudo masks such
tiny runs make (``allow_degenerate_masks=True``). Nothing else is changed: the functions, paths and files
are real.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import l2g
from l2g import api
from tests.test_cli import TINY_SETTINGS

pytestmark = pytest.mark.usefixtures("one_thread")

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_api_page_examples_run(tiny_root, tmp_path, monkeypatch, capsys):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 6
    shutil.copytree(tiny_root, tmp_path / "data" / "synth")
    monkeypatch.chdir(tmp_path)

    def tiny_load_config(preset_or_path=None, overrides=None):
        return api.load_config(preset_or_path, [*TINY_SETTINGS, *api.override_strings(overrides)])

    def tiny_run_pipeline(config, out_dir, **options):
        return api.run_pipeline(config, out_dir, **{"allow_degenerate_masks": True, **options})

    monkeypatch.setattr(l2g, "load_config", tiny_load_config)
    monkeypatch.setattr(l2g, "run_pipeline", tiny_run_pipeline)
    namespace: dict = {}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"docs/api.md block {number}", "exec"), namespace)
        except Exception as error:  # name the block in the failure
            raise AssertionError(f"docs/api.md python block {number} failed:\n{block}") from error
    out = capsys.readouterr().out
    assert "best threshold" in out and "segmentation mIoU" in out
    assert (tmp_path / "runs" / "pipeline" / "report" / "index.html").is_file()
    assert (tmp_path / "results.tar.gz").is_file() and len(list((tmp_path / "masks").glob("*.png"))) == 12


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings: lower case, punctuation dropped, spaces to dashes."""
    headings = (line.lstrip("#").strip().lower() for line in page.read_text().splitlines() if line.startswith("#"))
    return {re.sub(r"[^\w\- ]", "", heading).replace(" ", "-") for heading in headings}


def test_every_relative_link_of_the_readme_and_docs_resolves():
    """Moving material between the README and docs/ must not leave a link to a missing file or heading."""
    repo = Path(__file__).resolve().parent.parent
    broken = []
    for page in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]:
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if link.startswith(("http://", "https://", "mailto:")):
                continue
            file, _, anchor = link.partition("#")
            target = (page.parent / file) if file else page
            if not target.exists():
                broken.append(f"{page.name}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in heading_anchors(target):
                broken.append(f"{page.name}: {link} (no such heading)")
    assert not broken, broken
