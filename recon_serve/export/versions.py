"""Which version of a model repository is live: deploy a new one, roll back to the one before.

The live version is written where Triton itself reads it, as `version_policy: { specific: ... }`
in each model's config.pbtxt, so a Triton server (model-control API `load`) and the in-process
ONNX Runtime backend agree on it. `deployments.json` at the repository root keeps the order of
deploys (a stack: rollback pops it) and a log of every action. Without a policy line (a fresh
`recon-serve export`), the newest version is live, as Triton's default policy has it.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from recon_serve.export.triton_repo import ONNX_MODEL, PYTHON_MODEL, TRT_MODEL, latest_version, version_dirs

STATE_FILE = "deployments.json"
_POLICY = re.compile(r"^version_policy:.*\n?", re.M)


def _configs(repo: Path) -> list[Path]:
    return [repo / m / "config.pbtxt" for m in (PYTHON_MODEL, ONNX_MODEL, TRT_MODEL) if (repo / m / "config.pbtxt").is_file()]


def versions(repo) -> list[int]:
    return sorted(int(p.name) for p in version_dirs(Path(repo) / PYTHON_MODEL))


def current_version(repo) -> int:
    """The live version: the config's specific version policy, else the newest."""
    repo = Path(repo)
    for cfg in _configs(repo):
        m = re.search(r"^version_policy:.*versions:\s*\[\s*(\d+)\s*\]", cfg.read_text(), re.M)
        if m:
            return int(m.group(1))
    return int(latest_version(repo / PYTHON_MODEL).name)


def version_dir(repo, version: int | None = None) -> Path:
    """recon_python/<version> (default: the live one), holding model.onnx and model_card.json."""
    v = current_version(repo) if version is None else version
    d = Path(repo) / PYTHON_MODEL / str(v)
    if not d.is_dir():
        raise FileNotFoundError(f"{repo} has no version {v}")
    return d


def set_current(repo, version: int) -> None:
    """Make `version` live in every config.pbtxt (atomic rewrite of each)."""
    repo = Path(repo)
    version_dir(repo, version)
    line = f"version_policy: {{ specific: {{ versions: [ {version} ] }} }}\n"
    for cfg in _configs(repo):
        text = _POLICY.sub("", cfg.read_text())
        _write_atomic(cfg, text.rstrip("\n") + "\n" + line)


def state(repo) -> dict:
    try:
        return json.loads((Path(repo) / STATE_FILE).read_text())
    except FileNotFoundError:
        return {"stack": [], "log": []}


def deploy(checkpoint, repo, *, note: dict | None = None, mode: str = "auto",
           python_site_packages: str | None = None) -> dict:
    """Export `checkpoint` as the next version (which keeps a copy of it) and make it live.
    python_site_packages: as for write_model_repository (the Triton python backend's packages)."""
    from recon_serve.export.triton_repo import write_model_repository

    repo = Path(repo)
    before = current_version(repo) if versions(repo) else None
    summary = write_model_repository(checkpoint, repo, mode=mode, python_site_packages=python_site_packages)
    v = summary["version"]
    set_current(repo, v)
    st = state(repo)
    if not st["stack"] and before is not None:
        st["stack"].append(before)
    st["stack"].append(v)
    _log(repo, st, "deploy", v, before, note)
    return {"version": v, "previous": before, "mode": summary["mode"]}


def rollback(repo) -> dict:
    """Make the version deployed before the live one live again."""
    repo = Path(repo)
    st = state(repo)
    if len(st["stack"]) < 2:
        raise RuntimeError(f"nothing to roll back to in {repo}: deploy a version first")
    gone = st["stack"].pop()
    v = st["stack"][-1]
    set_current(repo, v)
    _log(repo, st, "rollback", v, gone, None)
    return {"version": v, "previous": gone}


def _log(repo: Path, st: dict, action: str, version: int, previous, note) -> None:
    st["log"].append({"action": action, "version": version, "previous": previous,
                      "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **({"note": note} if note else {})})
    st["current"] = version
    _write_atomic(repo / STATE_FILE, json.dumps(st, indent=2) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
