"""The procedural part-labelled generator: breadth, determinism, label coverage, splits, writers, CLI."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import recon_serve.data.procedural as proc
from recon_serve.data.readers import read_shapenetpart_txt, sample_mesh
from recon_serve.data.procedural import (CATEGORIES, generate, generate_dataset, split_seeds, write_ply,
                                 write_shapenetpart_txt)
from recon_serve.data.procedural.primitives import box, merge, rod, shell, torus

N = 512  # small clouds keep the whole file well under a few seconds


def test_at_least_25_categories_each_declaring_lower_case_parts():
    assert len(CATEGORIES) >= 25
    for cat, (builder, parts) in CATEGORIES.items():
        assert callable(builder) and re.fullmatch(r"[a-z_]+", cat)
        assert len(parts) >= 2 and len(set(parts)) == len(parts), cat
        assert all(re.fullmatch(r"[a-z]+", p) for p in parts), (cat, parts)


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_every_declared_part_is_in_every_sample_with_at_least_one_percent(category):
    floor = math.ceil(0.01 * N)
    for seed in range(4):
        s = generate(category, seed, N)
        assert s.category == category and s.part_names == CATEGORIES[category][1]
        assert s.points.shape == (N, 3) and s.points.dtype == np.float32
        assert s.labels.shape == (N,) and s.labels.dtype == np.int64
        counts = np.bincount(s.labels, minlength=len(s.part_names))
        assert len(counts) == len(s.part_names) and counts.min() >= floor, (seed, dict(zip(s.part_names, counts)))
        assert np.isfinite(s.points).all() and np.isfinite(s.normals).all()
        # largest extent 1, centred in x/z, standing on y = 0
        assert np.abs(s.points[:, [0, 2]]).max() <= 0.5 + 1e-5
        assert -1e-5 <= s.points[:, 1].min() and s.points[:, 1].max() <= 1 + 1e-5
        np.testing.assert_allclose(np.linalg.norm(s.normals, axis=1), 1.0, atol=1e-4)


def test_same_seed_same_arrays_and_different_seeds_differ():
    for cat in ("chair", "airplane", "vase", "bicycle"):
        a, b, c = generate(cat, 7, N), generate(cat, 7, N), generate(cat, 8, N)
        for x, y in ((a.points, b.points), (a.labels, b.labels), (a.normals, b.normals)):
            np.testing.assert_array_equal(x, y)
        assert not np.allclose(np.sort(a.points, 0), np.sort(c.points, 0), atol=1e-3)
    # the shapes themselves vary, not only where the points fall: compare part proportions
    shares = {tuple(np.round(np.bincount(generate("table", s, N).labels) / N, 2)) for s in range(6)}
    assert len(shares) > 3


def test_yaw_turns_about_the_vertical_only():
    a, b = generate("car", 3, N), generate("car", 3, N, yaw=True)
    np.testing.assert_allclose(np.sort(a.points[:, 1]), np.sort(b.points[:, 1]), atol=1e-5)
    assert np.abs(b.points).max() <= 1.0


def test_allocation_sums_to_n_and_honours_the_floor():
    counts = proc._allocate(np.array([1000.0, 1.0, 1e-9, 50.0]), 2048, 0.01)
    assert counts.sum() == 2048 and counts.min() >= 21
    assert counts[0] > counts[3] > counts[1] == counts[2] == 21
    with pytest.raises(ValueError):
        proc._allocate(np.ones(30), 100, 0.05)


def test_normals_are_the_faces_sample_mesh_drew():
    for v, f in (box((1, 2, 3)), shell([(0, 0), (1, 0), (1, 1)], 0.1, 24), merge([torus(1, .2), rod((0, 0, 0), (1, 2, 0), .1)])):
        pts = sample_mesh(v, f, 300, seed=4)
        picked = proc._sampled_faces(v, f, 300, 4, pts)
        assert picked is not None  # the replay matches sample_mesh, so no slow search is needed
        searched = proc._nearest_faces(v, f, pts)
        dots = (proc._unit_normals(v, f[picked]) * proc._unit_normals(v, f[searched])).sum(1)
        assert (dots > 0.999).mean() > 0.98  # points on shared edges may pick the neighbour
    v, f = box((1, 1, 1))
    n = proc._unit_normals(v, f)
    assert np.allclose(np.abs(n).max(1), 1) and ((v[f].mean(1) * n).sum(1) > 0).all()  # outward


def test_train_and_test_seeds_never_meet():
    for base in (0, 1, 5):
        train, test = set(split_seeds("train", 1000, base)), set(split_seeds("test", 1000, base))
        assert len(train) == len(test) == 1000 and not train & test
    all_train = {s for b in range(3) for s in split_seeds("train", 500, b)}
    all_test = {s for b in range(3) for s in split_seeds("test", 500, b)}
    assert not all_train & all_test
    with pytest.raises(ValueError):
        split_seeds("val", 3)


def test_generate_dataset_uses_one_shared_label_space():
    cats = ["mug", "chair"]
    ds = generate_dataset(cats, per_category=2, seed=0, split="train", n_points=256)
    assert ds.points.shape == (4, 256, 3) and ds.labels.shape == (4, 256)
    assert ds.category_ids.tolist() == [0, 0, 1, 1] and ds.categories == cats
    assert ds.part_names == ["mug/body", "mug/handle", "chair/seat", "chair/back", "chair/legs"]
    assert ds.category_parts == {"mug": [0, 1], "chair": [2, 3, 4]}
    for lab, ci in zip(ds.labels, ds.category_ids):
        assert set(np.unique(lab)) == set(ds.category_parts[cats[ci]])
    np.testing.assert_array_equal(ds.points[0], generate("mug", split_seeds("train", 1)[0], 256).points)
    test = generate_dataset(cats, per_category=2, split="test", n_points=256)
    assert not np.allclose(test.points, ds.points)
    both = generate_dataset(cats, per_category=2, seed=0, split="train", n_points=256, workers=2)  # two processes
    np.testing.assert_array_equal(both.points, ds.points)
    np.testing.assert_array_equal(both.labels, ds.labels)


def test_shapenetpart_txt_round_trips_exactly(tmp_path):
    s = generate("guitar", 2, N)
    write_shapenetpart_txt(tmp_path / "g.txt", s.points, s.labels + 40, s.normals)
    pts, nrm, lab = read_shapenetpart_txt(tmp_path / "g.txt")
    np.testing.assert_array_equal(pts, s.points)
    np.testing.assert_array_equal(nrm, s.normals)
    np.testing.assert_array_equal(lab, s.labels + 40)
    write_shapenetpart_txt(tmp_path / "z.txt", s.points, s.labels)
    assert not read_shapenetpart_txt(tmp_path / "z.txt")[1].any()  # no normals: zeros


def _parse_ascii_ply(text: str):
    head, body = text.split("end_header\n")
    lines = head.splitlines()
    assert lines[:2] == ["ply", "format ascii 1.0"]
    n = int(next(ln.split()[2] for ln in lines if ln.startswith("element vertex")))
    props = [ln.split()[2] for ln in lines if ln.startswith("property")]
    rows = [ln.split() for ln in body.splitlines()]
    assert len(rows) == n and props == ["x", "y", "z", "label"]
    return np.array([r[:3] for r in rows], dtype=np.float32), np.array([r[3] for r in rows], dtype=np.int64)


def test_ply_writer_parses_back_with_the_same_labels(tmp_path):
    s = generate("umbrella", 1, N)
    write_ply(tmp_path / "u.ply", s.points, s.labels)
    pts, lab = _parse_ascii_ply((tmp_path / "u.ply").read_text())
    np.testing.assert_array_equal(pts, s.points)
    np.testing.assert_array_equal(lab, s.labels)
    trimesh = pytest.importorskip("trimesh")
    cloud = trimesh.load(tmp_path / "u.ply")
    np.testing.assert_allclose(cloud.vertices, s.points, atol=1e-6)
    np.testing.assert_array_equal(np.ravel(cloud.metadata["_ply_raw"]["vertex"]["data"]["label"]), s.labels)


def test_cli_generate_writes_shapenetpart_files_and_parts_json(tmp_path):
    from training.cli import main

    main(["generate", "--out", str(tmp_path), "--per-category", "2", "--points", "128",
          "--split", "test", "--categories", "mug", "bed"])
    parts = json.loads((tmp_path / "parts.json").read_text())
    assert parts["categories"] == {"bed": ["frame", "mattress", "headboard", "pillows"], "mug": ["body", "handle"]}
    assert parts["part_names"][4:] == ["mug/body", "mug/handle"] and parts["label_offsets"] == {"bed": 0, "mug": 4}
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.txt"))
    assert files == ["bed/00000001.txt", "bed/00000003.txt", "mug/00000001.txt", "mug/00000003.txt"]
    pts, nrm, lab = read_shapenetpart_txt(tmp_path / "mug" / "00000003.txt")
    assert pts.shape == (128, 3) and set(lab.tolist()) == {4, 5}
    np.testing.assert_array_equal(pts, generate("mug", 3, 128).points)


def test_winding_number_is_one_inside_a_closed_mesh_and_zero_outside():
    from recon_serve.data.procedural.primitives import box, ellipsoid, inside, winding_number

    cube = box((2, 2, 2))
    w = winding_number(np.array([[0.0, 0, 0], [0.9, -0.9, 0.5], [3.0, 0, 0], [0, 1.01, 0]]), cube)
    np.testing.assert_allclose(w, [1, 1, 0, 0], atol=1e-9)
    ball = ellipsoid((1, 1, 1), segments=24, rings=12)
    assert inside(np.array([[0.0, 0, 0], [0, 0.9, 0], [0, 1.2, 0]]), [cube, ball]).tolist() == [True, True, False]


@pytest.mark.parametrize("category", ["sofa", "car", "bed", "house", "dresser"])
def test_only_the_outer_surface_is_sampled(category):
    """No point lies buried in another part's solid, and a face two parts share keeps one label."""
    from recon_serve.data.procedural import assemble
    from recon_serve.data.procedural.primitives import inside

    for seed in split_seeds("test", 3):
        s = generate(category, seed, 1024)
        prims = assemble(category, seed)[0]
        for i in range(len(prims)):
            p, n = s.points[s.labels == i].astype(np.float64), s.normals[s.labels == i]
            others = [m for j, part in enumerate(prims) if j != i for m in part]
            assert not inside(p + 1e-4 * n, others).any(), (category, seed, s.part_names[i])
            assert not inside(p - 1e-4 * n, [m for part in prims[i + 1:] for m in part]).any()


def test_whole_surface_sampling_buries_points_that_outer_sampling_does_not():
    from training.buried_points import buried_fraction

    seed = split_seeds("test", 1)[0]
    assert buried_fraction("sofa", seed, 1024, outer_only=False) > 0.1
    assert buried_fraction("sofa", seed, 1024, outer_only=True) == 0.0
