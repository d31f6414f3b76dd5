"""`recon-serve embed`: a real library folder, a real index on disk, a killed run resumed."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recon_serve.batch.embed import JobOptions, embed_library
from recon_serve.index import ShapeIndex

GOOD_MESHES = ["chair_model.obj", "teapot.stl", "bunny.ply", "ballA.off", "Duck.glb", "points_bin.ply"]
BROKEN = ["empty.obj", "notenoughindices.obj"]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    import torch

    from recon_serve.model.checkpoint import save_checkpoint
    from recon_serve.model.factory import create_model

    d = tmp_path_factory.mktemp("micro")
    for seed in (0, 1):
        torch.manual_seed(seed)
        model, _ = create_model("micro", num_classes=2)
        save_checkpoint(d / f"micro{seed}.pt", model, class_names=["a", "b"])
    return d


def _library(root: Path, shared: Path, n_clouds: int) -> set[str]:
    """Mixed formats in sub-folders plus broken files; returns the ids that must end in the index."""
    expect = set()
    for name in GOOD_MESHES + BROKEN:
        (root / "meshes").mkdir(parents=True, exist_ok=True)
        (root / "meshes" / name).write_bytes((shared / "meshes" / name).read_bytes())
        if name in GOOD_MESHES:
            expect.add(f"meshes/{name}")
    clouds = sorted((shared / "modelnet10" / "chair" / "test").glob("*.pcd")) + \
        sorted((shared / "modelnet10" / "table" / "test").glob("*.pcd"))
    for i in range(n_clouds):
        src = clouds[i % len(clouds)]
        cls = src.parent.parent.name
        (root / cls).mkdir(exist_ok=True)
        (root / cls / f"{i:04d}_{src.name}").write_bytes(src.read_bytes())
        expect.add(f"{cls}/{i:04d}_{src.name}")
    (root / "notes.txt").write_text("not a shape")  # unknown extension: not listed
    return expect


def _run(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "recon_serve.cli", "embed", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _rows(manifest: Path) -> int:
    try:
        with sqlite3.connect(manifest) as c:
            return c.execute("SELECT count(*) FROM files").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_killed_run_resumes_with_exactly_the_expected_ids(tmp_path, shared_data, micro):
    """Must-show: SIGKILL midway, run again: every id once, no id missing, broken files reported."""
    lib, idx = tmp_path / "lib", tmp_path / "index"
    expect = _library(lib, shared_data, 150)
    env = {**os.environ, "RECON_CACHE_DIR": str(tmp_path / "cache")}
    args = [lib, "--index", idx, "--checkpoint", micro / "micro0.pt", "--workers", "2", "--batch-size", "2",
            "--no-progress"]
    proc = _run(args, env)
    deadline = time.monotonic() + 300
    while _rows(idx / "embed_manifest.sqlite") < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)  # the job only: its workers must not outlive it
    proc.wait()
    deadline = time.monotonic() + 20
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    orphans = _group_alive(proc.pid)
    if orphans:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not orphans, "worker processes outlived the killed job"
    done_before = _rows(idx / "embed_manifest.sqlite")
    assert 20 <= done_before < len(expect) + len(BROKEN)

    rerun = _run(args + ["--json", tmp_path / "report.json"], env)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["files"] == len(expect) + len(BROKEN)
    assert report["skipped"] >= done_before - len(BROKEN) - 4  # at most the last unrecorded chunks again
    assert report["failed"] == len(BROKEN) and report["index_size"] == len(expect)
    assert sorted(e["id"] for e in report["errors"]) == sorted(f"meshes/{b}" for b in BROKEN)
    assert "failed: meshes/empty.obj" in err
    with ShapeIndex.open(idx) as index:
        ids = index.ids()
        assert len(ids) == len(set(ids)) == len(expect) and set(ids) == expect
        assert index.get("chair/0000_" + sorted((shared_data / "modelnet10/chair/test").glob("*.pcd"))[0].name) \
            .metadata["category"] == "chair"


def test_rerun_skips_unchanged_files_and_redoes_changed_ones(tmp_path, shared_data, micro):
    lib, idx = tmp_path / "lib", tmp_path / "index"
    expect = _library(lib, shared_data, 8)
    (tmp_path / "meta.csv").write_text("id,owner\nmeshes/teapot.stl,kitchen\n")
    kw = dict(checkpoint=micro / "micro0.pt", workers=1, progress=False, cache_dir=tmp_path / "cache",
              metadata_csv=tmp_path / "meta.csv")
    first = embed_library(lib, idx, **kw)
    assert first["embedded"] == len(expect) and first["failed"] == len(BROKEN)
    (lib / "meshes" / "ballA.off").write_bytes((shared_data / "meshes" / "comments.off").read_bytes())
    second = embed_library(lib, idx, **kw)
    assert (second["embedded"], second["skipped"], second["failed"]) == (1, len(expect) - 1, len(BROKEN))
    # the Parquet file holds what the index holds
    import pyarrow.parquet as pq

    table = pq.read_table(idx / "embeddings.parquet")
    with ShapeIndex.open(idx) as index:
        assert sorted(table.column("id").to_pylist()) == sorted(index.ids())
        row = table.column("id").to_pylist().index("meshes/teapot.stl")
        vec = np.asarray(table.column("embedding")[row].as_py(), np.float32)
        np.testing.assert_allclose(vec, index.embedding("meshes/teapot.stl"), atol=1e-6)
        meta = index.get("meshes/teapot.stl").metadata
    assert meta == {"path": "meshes/teapot.stl", "format": "stl", "folder": "meshes", "category": "meshes",
                    "owner": "kitchen"}
    assert json.loads(table.column("metadata")[row].as_py()) == meta


def test_new_model_reembeds_and_reindex_reads_the_recorded_source(tmp_path, shared_data, micro):
    lib, idx = tmp_path / "lib", tmp_path / "index"
    expect = _library(lib, shared_data, 4)
    kw = dict(workers=1, progress=False, cache_dir=tmp_path / "cache")
    a = embed_library(lib, idx, checkpoint=micro / "micro0.pt", **kw)
    b = embed_library(None, idx, checkpoint=micro / "micro1.pt", reindex=True, **kw)  # source from the manifest
    assert a["model_version"] != b["model_version"]
    assert b["embedded"] == len(expect) and b["stale_embeddings"] == {}
    with ShapeIndex.open(idx) as index:
        assert index.model_versions() == {b["model_version"]: len(expect)}


def test_list_file_source_and_ray_engine_agree_with_local(tmp_path, shared_data, micro):
    """--engine ray on a local Ray instance gives the same index as the local pool."""
    pytest.importorskip("ray")
    lib = tmp_path / "lib"
    expect = _library(lib, shared_data, 6)
    listing = tmp_path / "files.txt"
    listing.write_text("# ids are relative to this file's folder\n" +
                       "\n".join(f"lib/{i}" for i in sorted(expect)) + "\nlib/meshes/empty.obj\n")
    kw = dict(checkpoint=micro / "micro0.pt", progress=False, cache_dir=tmp_path / "cache",
              options=JobOptions(batch_size=4))
    local = embed_library(listing, tmp_path / "local", workers=1, **kw)
    ray_report = embed_library(listing, tmp_path / "ray", workers=2, engine="ray", **kw)
    assert local["failed"] == ray_report["failed"] == 1
    with ShapeIndex.open(tmp_path / "local") as a, ShapeIndex.open(tmp_path / "ray") as b:
        assert sorted(a.ids()) == sorted(b.ids()) == sorted(f"lib/{i}" for i in expect)
        for id_ in a.ids():
            np.testing.assert_allclose(a.embedding(id_), b.embedding(id_), atol=1e-5)


def test_bad_source_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "recon_serve.cli", "embed", str(tmp_path / "nope"), "--index",
                        str(tmp_path / "i")], capture_output=True, text=True)
    assert r.returncode == 2 and "no such folder or list file" in r.stderr
    r = subprocess.run([sys.executable, "-m", "recon_serve.cli", "embed", "--index", str(tmp_path / "i")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "SOURCE" in r.stderr
