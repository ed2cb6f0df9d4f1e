"""What a run ran on: Python, OS, CPU/GPU, library versions and the code's git commit.

Saved as ``environment.json`` in every run folder, so a number in a report can be traced to
the machine and code that produced it. Collection is cheap (well under 0.2 s): versions come
from package metadata instead of importing packages, and git gets a short timeout. Nothing
here may fail a run, so every probe degrades to ``None`` or an absent key. The hostname is
deliberately not recorded: run folders get shared.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import trainlab

__all__ = ["collect_environment"]

# Distributions whose versions affect results or speed. Optional ones are recorded when
# installed and skipped otherwise.
_PACKAGES = ("numpy", "pydantic", "safetensors", "pillow", "pyyaml")
_OPTIONAL_PACKAGES = (
    "optuna",
    "onnxruntime",
    "onnx",
    "transformers",
    "torchvision",
    "scikit-learn",
)
_GIT_TIMEOUT_S = 2.0


def collect_environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """A JSON-serialisable description of this machine and process.

    ``device`` is the device the run uses; it is recorded, and for a CUDA device so is the
    name of that particular GPU.
    """
    return {
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "platform": _platform(),
        "cpu": _cpu(),
        "torch": _torch(),
        "cuda": _cuda(),
        "mps": _mps_available(),
        "device": _device(device),
        "packages": _package_versions(),
        "git": _git(Path.cwd()),
    }


def _platform() -> dict[str, Any]:
    uname = platform.uname()
    return {
        "system": uname.system,
        "release": uname.release,
        "machine": uname.machine,
        "distribution": _distribution(),
        "memory_gb": _memory_gb(),
    }


def _distribution() -> str | None:
    """The Linux distribution ("Ubuntu 24.04 LTS"), or the macOS/Windows version."""
    system = platform.system()
    if system == "Linux":
        try:
            return platform.freedesktop_os_release().get("PRETTY_NAME")
        except (OSError, AttributeError):  # no os-release file; Python < 3.10
            return None
    if system == "Darwin":
        return f"macOS {platform.mac_ver()[0]}"
    if system == "Windows":
        return f"Windows {platform.version()}"
    return None


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):  # not available on Windows
        return None


def _cpu() -> dict[str, Any]:
    return {"model": _cpu_model(), "logical_cores": os.cpu_count()}


def _cpu_model() -> str | None:
    # /proc/cpuinfo names the CPU on Linux; platform.processor() is a vaguer fallback elsewhere
    # ("arm", "Intel64 Family 6 ...") and runs a subprocess on some systems, so it comes second.
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip() or None
    except OSError:
        pass
    return platform.processor() or None


def _torch() -> dict[str, Any]:
    return {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "debug": bool(torch.version.debug),
    }


def _cuda() -> dict[str, Any]:
    available = torch.cuda.is_available()
    info: dict[str, Any] = {
        "available": available,
        "version": torch.version.cuda,  # the CUDA torch was built with; None for CPU builds
        "cudnn": torch.backends.cudnn.version() if available else None,
        "devices": [],
    }
    if available:
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            info["devices"].append(
                {
                    "name": properties.name,
                    "memory_gb": round(properties.total_memory / 2**30, 1),
                    "capability": f"{properties.major}.{properties.minor}",
                }
            )
    return info


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _device(device: torch.device | str | None) -> dict[str, Any] | None:
    if device is None:
        return None
    device = torch.device(device)
    info: dict[str, Any] = {"type": device.type, "name": str(device)}
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        info["gpu"] = torch.cuda.get_device_name(index)
    return info


def _package_versions() -> dict[str, str]:
    versions = {"torch": torch.__version__, "trainlab": trainlab.__version__}
    for name in (*_PACKAGES, *_OPTIONAL_PACKAGES):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _git(cwd: Path) -> dict[str, Any] | None:
    """Commit and dirty flag of the checkout containing ``cwd``; None outside git (or no git)."""
    commit = _run_git(cwd, "rev-parse", "HEAD")
    if commit is None:
        return None
    # Only tracked files count as dirty: untracked run folders and caches in the checkout
    # would otherwise mark every run dirty.
    status = _run_git(cwd, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _run_git(cwd: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None
