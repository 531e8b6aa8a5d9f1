"""What produced a report: the code (version, git commit), the seed, the libraries and the machine.

A number in a report is only worth what its provenance says: the synthetic benchmark's figures hold per
machine and per seed, so every report states both.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit(folder: Path = PACKAGE_DIR) -> str:
    """The commit of the git checkout holding ``folder`` (the l2g package), with "+ local changes" when
    its tracked files differ from it; "unknown (...)" outside a checkout or without git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{commit} + local changes" if dirty else commit


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_description() -> str:
    """'Intel(R) Xeon(R) ..., 2 cores, Linux-6.1 (x86_64)'."""
    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()} ({platform.machine()})"


def run_facts(runs: list[Path]) -> tuple[list[str], list[str]]:
    """(devices, commits) recorded in the runs' ``train_metrics.json`` (runs without one are skipped)."""
    devices, commits = [], []
    for run in runs:
        try:
            metrics = json.loads((Path(run) / "train_metrics.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(metrics, dict):
            devices += [str(metrics["device"])] if "device" in metrics else []
            commits += [str(metrics["commit"])] if "commit" in metrics else []
    return devices, commits


def provenance_rows(seeds: list[int] | tuple[int, ...], runs: list[Path] = ()) -> list[list[str]]:
    """(name, value) rows: l2g version and commit, seed(s), Python, torch, CUDA, machine, date, and what the
    training runs recorded (their devices and the commit that trained them)."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    unique = sorted(set(int(s) for s in seeds))
    devices, commits = run_facts(list(runs))
    rows = [
        ["l2g", package_version("l2g")],
        ["commit (this report)", git_commit()],
        ["commit (training runs)", ", ".join(sorted(set(commits))) or "not recorded"],
        ["seed", ", ".join(map(str, unique)) if unique else "–"],
        ["python", sys.version.split()[0]],
        ["torch", torch.__version__],
        ["torchvision", package_version("torchvision")],
        ["numpy", package_version("numpy")],
        ["CUDA GPU", gpu],
        ["machine", machine_description()],
        ["torch threads", str(torch.get_num_threads())],
        ["training device(s)", ", ".join(sorted(set(devices))) or "not recorded"],
        ["report written", time.strftime("%Y-%m-%d %H:%M:%S %Z")],
    ]
    return rows
