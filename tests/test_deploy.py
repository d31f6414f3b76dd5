"""Retrain -> deploy -> rollback on a model repository, with a real server answering throughout."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from server_util import Server

from recon_serve.export import versions

CLASSES = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]


def _cli(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "recon_serve.cli", *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"recon-serve {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def work(tmp_path_factory, shared_data):
    """A micro model as the current version, and a retrained candidate from two user classes."""
    import torch

    from recon_serve.model.checkpoint import save_checkpoint
    from recon_serve.model.factory import create_model

    d = tmp_path_factory.mktemp("deploy")
    torch.manual_seed(0)
    model, _ = create_model("micro", num_classes=len(CLASSES))
    save_checkpoint(d / "current.pt", model, class_names=CLASSES)
    data = d / "user_shapes"
    for cls in ("chair", "table"):
        (data / cls).mkdir(parents=True)
        for f in sorted((shared_data / "modelnet10" / cls / "train").glob("*.pcd"))[:6]:
            (data / cls / f.name).write_bytes(f.read_bytes())
    (data / "chair" / "broken.obj").write_text("v 0 0 0\nf 1 2\n")
    r = _cli("retrain", data, "--out", d / "run", "--init", d / "current.pt", "--epochs", "1", "--test-fraction", "0.34")
    return {"dir": d, "data": data, "candidate": d / "run" / "candidate.pt", "stdout": r.stdout,
            "report": json.loads((d / "run" / "retrain_report.json").read_text())}


def test_retrain_prints_old_and_new_accuracy(work):
    rep, out = work["report"], work["stdout"]
    assert rep["classes"] == ["chair", "table"] and rep["n_train"] + rep["n_test"] == 12
    assert rep["n_test"] == 4  # 2 of 6 per class held out
    assert any(p.endswith("broken.obj") for p in rep["unreadable"])
    assert "current model" in out and "retrained model" in out and "%" in out
    assert rep["old"]["method"].startswith("text-prompted")  # the old head knows 10 other classes
    assert rep["new"]["method"] == "classification head"
    assert rep["better"] == (rep["new"]["oa"] >= rep["old"]["oa"])
    import torch

    ck = torch.load(work["candidate"], map_location="cpu", weights_only=False)
    assert ck["class_names"] == ["chair", "table"] and ck["metrics"]["retrain"]["held_out"]["oa"] == rep["new"]["oa"]


def test_deploy_refuses_a_worse_or_unevaluated_model(work, tmp_path):
    repo = tmp_path / "repo"
    worse = tmp_path / "worse" / "candidate.pt"
    worse.parent.mkdir()
    worse.write_bytes(work["candidate"].read_bytes())
    rep = {**work["report"], "better": False}
    (worse.parent / "retrain_report.json").write_text(json.dumps(rep))
    r = _cli("deploy", worse, "--repo", repo, check=False)
    assert r.returncode == 3 and "worse" in r.stderr and not repo.exists()
    lone = tmp_path / "lone.pt"
    lone.write_bytes(work["candidate"].read_bytes())
    r = _cli("deploy", lone, "--repo", repo, check=False)
    assert r.returncode == 2 and "--force" in r.stderr and not repo.exists()


def test_versions_deploy_then_rollback(work, tmp_path):
    repo = tmp_path / "repo"
    with pytest.raises(RuntimeError, match="nothing to roll back"):
        versions.rollback(repo)
    a = versions.deploy(work["dir"] / "current.pt", repo)
    b = versions.deploy(work["candidate"], repo)
    assert (a["version"], b["version"], b["previous"]) == (1, 2, 1)
    assert versions.current_version(repo) == 2
    for model in ("recon_python", "recon_onnx"):
        text = (repo / model / "config.pbtxt").read_text()
        assert text.count("version_policy") == 1 and "versions: [ 2 ]" in text
    assert (repo / "recon_python" / "2" / "checkpoint.pt").read_bytes() == work["candidate"].read_bytes()
    assert versions.rollback(repo) == {"version": 1, "previous": 2}
    assert versions.current_version(repo) == 1 and "versions: [ 1 ]" in (repo / "recon_python" / "config.pbtxt").read_text()
    with pytest.raises(RuntimeError):
        versions.rollback(repo)
    log = json.loads((repo / "deployments.json").read_text())["log"]
    assert [e["action"] for e in log] == ["deploy", "deploy", "rollback"]


def test_twenty_clients_see_no_failure_across_deploy_and_rollback(work, tmp_path):
    """Must-show: zero failed requests; each client's answers switch version exactly once each way."""
    repo = tmp_path / "repo"
    versions.deploy(work["dir"] / "current.pt", repo)
    server = Server(repo, tmp_path / "index", tmp_path / "cache", tmp_path / "server.log", api_keys="k", max_wait_ms=5)
    rng = np.random.default_rng(0)
    body = {"points": rng.normal(size=(256, 3)).round(4).tolist(), "k": 1}
    seen: list[list[tuple[int, str]]] = [[] for _ in range(20)]
    stop = threading.Event()

    def client(i):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/classify", json=body)
                    seen[i].append((r.status_code, r.json().get("model_version")))
                except httpx.HTTPError as e:
                    seen[i].append((0, repr(e)))

    try:
        v1 = httpx.get(server.url + "/readyz").json()["model_version"]
        added = httpx.post(server.url + "/v1/shapes", headers={"X-API-Key": "k"},
                           json={"id": "s1", "points": body["points"]})
        assert added.status_code == 201, added.text
        threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        time.sleep(2)
        r = _cli("deploy", work["candidate"], "--repo", repo, "--server", server.url, "--api-key", "k", "--force")
        assert "version 2 is live" in r.stdout
        ready = httpx.get(server.url + "/readyz").json()
        v2 = ready["model_version"]
        assert ready["stale_embeddings"] == {v1: 1} and "--reindex" in ready["detail"]
        time.sleep(3)
        _cli("rollback", "--repo", repo, "--server", server.url, "--api-key", "k")
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join(60)
        assert httpx.get(server.url + "/readyz").json()["model_version"] == v1
        unauth = httpx.post(server.url + "/v1/admin/reload")
        assert unauth.status_code == 401
    finally:
        stop.set()
        server.stop()
    assert v1 != v2
    failures = [s for runs in seen for s in runs if s[0] != 200]
    assert not failures, failures[:5]
    for runs in seen:
        switches = [v for j, (_, v) in enumerate(runs) if j == 0 or v != runs[j - 1][1]]
        assert switches == [v1, v2, v1], switches
    assert sum(map(len, seen)) > 60
