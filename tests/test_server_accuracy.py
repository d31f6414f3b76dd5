"""The served model gives the offline evaluation's answers: a real server on the shipped default checkpoint.

One `recon-serve serve` subprocess (ORT backend, the server's default; 2 threads), the ModelNet10
test split from ../shared/data:

* classify: 50 test PCDs (5 per class, first by sorted name) uploaded to /v1/classify agree in
  top-1 with `predict(create_model(checkpoint), clouds)` on the same normalised clouds (all 50),
  and every class probability (over the model's whole vocabulary) is within 1e-3 of the offline softmax.
* text search: all 908 test shapes indexed via POST /v1/shapes (uploads, 8 at a time, metadata
  {"class": name}); /v1/search/text with each plain class name ("night stand") and k=5 must have
  that class in the top 5. Per-class precision@5 is printed (pytest -s to see it).

Skipped with the reason when models/default/recon_default.pt is absent (`recon-train default` builds
it). RECON_ACCURACY_CHECKPOINT=path runs it on another checkpoint (e.g. a training run's, while the
default is being built). The exported graph goes to the server's usual ONNX cache (RECON_CACHE_DIR,
else ~/.cache/recon-serve/onnx), so only the first run after a new checkpoint pays for the export.
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from recon_client import ReconClient  # noqa: E402
from server_util import Server  # noqa: E402

from recon_serve.model.factory import DEFAULT_CHECKPOINT  # noqa: E402

pytestmark = [pytest.mark.data, pytest.mark.slow]

CHECKPOINT = Path(os.environ.get("RECON_ACCURACY_CHECKPOINT") or DEFAULT_CHECKPOINT)
PER_CLASS = 5
PROB_ATOL = 1e-3
K = 5
WORKERS = 8  # concurrent requests: the server batches them into one model call


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    if not CHECKPOINT.is_file():
        pytest.skip(f"shipped model {CHECKPOINT} not found: build it with `recon-train default --run runs/default`, "
                    f"or set RECON_ACCURACY_CHECKPOINT to another checkpoint")
    return CHECKPOINT


@pytest.fixture(scope="module")
def modelnet(shared_data):
    """(points [N,P,3] normalised, labels [N], class names, file ids, PCD paths) of the test split."""
    from recon_serve.data.modelnet import load_modelnet10

    points, labels, classes, ids = load_modelnet10("test", shared_data)
    paths = [shared_data / "modelnet10" / classes[y] / "test" / f"{i}.pcd" for y, i in zip(labels, ids)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"{len(missing)} ModelNet10 test files missing, e.g. {missing[0]}")
    return points, labels, classes, ids, paths


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    from recon_serve.settings import Settings

    d = tmp_path_factory.mktemp("accuracy")
    s = Server(checkpoint, d / "index", Path(Settings.from_env().cache_dir), d / "server.log", ready_timeout=600,
               threads=min(2, os.cpu_count() or 1))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    with ReconClient(server.url, timeout=120) as c:
        yield c


def test_served_classify_equals_offline_predict(client, checkpoint, modelnet):
    from recon_serve.evaluate import predict
    from recon_serve.model.factory import create_model

    points, labels, classes, ids, paths = modelnet
    picks = [int(i) for c in range(len(classes)) for i in np.flatnonzero(labels == c)[:PER_CLASS]]  # ids are sorted
    assert len(picks) == PER_CLASS * len(classes)
    model, ckpt = create_model(checkpoint)
    names = list(ckpt["class_names"])  # the model's whole vocabulary (ModelNet10's ten among them)
    assert client.models()["class_names"] == names

    offline, _ = predict(model, points[picks])  # softmax probabilities [50, K]

    def classify(i: int) -> dict:  # n_points = the cloud's size: the server keeps every point, as offline does
        return client.classify(paths[i], k=len(names), n_points=points.shape[1])

    with ThreadPoolExecutor(WORKERS) as pool:
        served = list(pool.map(classify, picks))

    wrong, far, worst = [], [], 0.0
    for row, i, out in zip(offline, picks, served):
        probs = {l["label"]: l["probability"] for l in out["labels"]}
        served_probs = np.array([probs[c] for c in names])
        top = out["labels"][0]["label"]
        if top != names[int(row.argmax())]:
            wrong.append(f"{ids[i]}: served {top}, offline {names[int(row.argmax())]}")
        err = float(np.abs(served_probs - row).max())
        worst = max(worst, err)
        if err > PROB_ATOL:
            far.append(f"{ids[i]}: max |p_served - p_offline| = {err:.2e}")
    print(f"\nclassify: {len(picks) - len(wrong)}/{len(picks)} top-1 agree; max |p_served - p_offline| = {worst:.1e}")
    assert not wrong, f"{len(wrong)}/{len(picks)} top-1 labels differ: {wrong}"
    assert not far, f"{len(far)}/{len(picks)} probability vectors differ by more than {PROB_ATOL}: {far}"


def test_text_search_finds_every_class(client, modelnet):
    points, labels, classes, ids, paths = modelnet

    def add(i: int) -> str:
        name = classes[labels[i]]
        return client.add_shape(f"{name}/{ids[i]}", paths[i], metadata={"class": name})["id"]

    with ThreadPoolExecutor(WORKERS) as pool:
        added = list(pool.map(add, range(len(paths))))
    assert len(set(added)) == len(paths)
    assert client.ready()["index_size"] == len(paths)

    precision, missed = {}, []
    for name in classes:
        text = name.replace("_", " ")
        hits = client.search_text(text, k=K)["hits"]
        assert len(hits) == K
        found = [h["metadata"]["class"] for h in hits]
        precision[name] = found.count(name) / K
        if name not in found:
            missed.append(f"{text!r} -> {found}")
    print(f"\ntext search precision@{K} over {len(paths)} indexed ModelNet10 test shapes:")
    for name, p in precision.items():
        print(f"  {name.replace('_', ' '):<12} {p:.2f}")
    print(f"  {'mean':<12} {np.mean(list(precision.values())):.2f}")
    assert not missed, f"the top {K} lacks the queried class for: {missed}"
