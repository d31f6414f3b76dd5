"""Readers turn each supported file format into the exact float32 arrays it holds."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from recon_serve.data.readers import (
    load_points,
    read_modelnet40_txt,
    read_off,
    read_pcd,
    read_scanobjectnn_h5,
    read_shapenet55_npy,
    read_shapenetpart_txt,
    sample_mesh,
)


def _data_root() -> Path:
    env = os.environ.get("RECON_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


MESHES = _data_root() / "meshes"
MODELNET_PCD = _data_root() / "modelnet10" / "chair" / "test" / "chair_0890.pcd"
needs_meshes = pytest.mark.skipif(not MESHES.is_dir(), reason=f"shared meshes not found at {MESHES}")

XYZ = np.array([[0.5, -1.25, 2.0], [3.0, 0.0, -0.75], [1e-3, 42.0, 7.5]], dtype=np.float32)


def _unit_cube() -> tuple[np.ndarray, np.ndarray]:
    """An axis-aligned cube of side 1 centred on the origin, 12 triangles."""
    v = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    return v, np.array(f)


# ------------------------------------------------------------------ PCD

def test_read_pcd_ascii(tmp_path):
    body = "\n".join(f"{x} {y} {z} 7" for x, y, z in XYZ)
    head = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z label\nSIZE 4 4 4 4\nTYPE F F F U\n"
            "COUNT 1 1 1 1\nWIDTH 3\nHEIGHT 1\nPOINTS 3\nDATA ascii\n")
    (tmp_path / "a.pcd").write_text(head + body + "\n")
    np.testing.assert_array_equal(read_pcd(tmp_path / "a.pcd"), XYZ)


def test_read_pcd_binary_skips_other_fields(tmp_path):
    head = ("VERSION 0.7\nFIELDS intensity x y z\nSIZE 2 4 4 4\nTYPE U F F F\nCOUNT 1 1 1 1\n"
            "WIDTH 3\nHEIGHT 1\nPOINTS 3\nDATA binary\n").encode()
    body = b"".join(struct.pack("<H3f", 9, *p) for p in XYZ)
    (tmp_path / "b.pcd").write_bytes(head + body)
    got = read_pcd(tmp_path / "b.pcd")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, XYZ)
    np.testing.assert_array_equal(read_pcd(head + body), XYZ)


@pytest.mark.data
@pytest.mark.skipif(not MODELNET_PCD.is_file(), reason=f"ModelNet10 not found at {MODELNET_PCD}")
def test_modelnet10_pcd():
    pts = read_pcd(MODELNET_PCD)
    assert pts.shape == (1024, 3) and pts.dtype == np.float32 and np.isfinite(pts).all()
    np.testing.assert_array_equal(load_points(MODELNET_PCD), pts)


# ------------------------------------------------------------------ OFF

OFF_BODY = """
# a comment line
0 0 0
1 0 0
1 1 0
0 1 0   # inline comment
0.5 0.5 1
4 0 1 2 3  255 0 0
3 0 1 4
"""
OFF_VERTS = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0.5, 1]], dtype=np.float32)
OFF_FACES = np.array([[0, 1, 2], [0, 2, 3], [0, 1, 4]])


@pytest.mark.parametrize("header", ["OFF5 2 0", "OFF 5 2 0", "OFF\n5 2 0", "  \tOFF5 2 0 # broken"])
def test_read_off_header_variants_and_quad_fan(tmp_path, header):
    (tmp_path / "m.off").write_text(header + "\n" + OFF_BODY)
    v, f = read_off(tmp_path / "m.off")
    assert v.dtype == np.float32 and f.dtype == np.int64
    np.testing.assert_array_equal(v, OFF_VERTS)
    np.testing.assert_array_equal(f, OFF_FACES)


@pytest.mark.parametrize("text, match", [
    ("OFF5 2 0\n0 0 0\n1 0 0\n", "truncated"),
    ("OFF\n", "truncated"),
    ("PLY\n3 1 0\n", "not an OFF"),
    ("OFF x y 0\n", "counts"),
    ("OFF3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 5\n", "out of range"),
    ("OFF3 1 0\n0 0 0\n1 0 0\n0 1 0\n2 0 1\n", "face line"),
    ("OFF3 1 0\n0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "vertex line"),
])
def test_read_off_rejects_broken_files(text, match):
    with pytest.raises(ValueError, match=match):
        read_off(text.encode())


@needs_meshes
@pytest.mark.data
@pytest.mark.parametrize("name, nv, nf", [("ballA.off", 1900, 3796), ("comments.off", 8, 12),
                                          ("whitespace.off", 8, 12)])
def test_read_off_real_files(name, nv, nf):
    v, f = read_off(MESHES / name)
    assert v.shape == (nv, 3) and f.shape == (nf, 3) and np.isfinite(v).all()


# ------------------------------------------------------------------ data-set formats

def test_read_modelnet40_txt(tmp_path):
    normals = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float32)
    rows = np.hstack([XYZ, normals])
    (tmp_path / "airplane_0001.txt").write_text("\n".join(",".join(f"{x:.6f}" for x in r) for r in rows))
    np.testing.assert_allclose(read_modelnet40_txt(tmp_path / "airplane_0001.txt"), XYZ, atol=1e-6)
    both = read_modelnet40_txt(tmp_path / "airplane_0001.txt", normals=True)
    assert both.shape == (3, 6) and both.dtype == np.float32
    np.testing.assert_array_equal(both[:, 3:], normals)


def test_read_shapenet55_npy(tmp_path):
    np.save(tmp_path / "x.npy", XYZ.astype(np.float64))
    got = read_shapenet55_npy(tmp_path / "x.npy")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, XYZ)
    np.save(tmp_path / "bad.npy", np.zeros(5))
    with pytest.raises(ValueError, match="shape"):
        read_shapenet55_npy(tmp_path / "bad.npy")


def test_read_shapenetpart_txt(tmp_path):
    normals = np.array([[0, 0, 1], [0, -1, 0], [1, 0, 0]], dtype=np.float32)
    labels = np.array([12, 13, 12])
    lines = [" ".join(f"{x:.6f}" for x in (*p, *n, float(lab))) for p, n, lab in zip(XYZ, normals, labels)]
    (tmp_path / "part.txt").write_text("\n".join(lines) + "\n")
    pts, nrm, lab = read_shapenetpart_txt(tmp_path / "part.txt")
    np.testing.assert_allclose(pts, XYZ, atol=1e-6)
    np.testing.assert_array_equal(nrm, normals)
    assert lab.dtype == np.int64
    np.testing.assert_array_equal(lab, labels)
    (tmp_path / "short.txt").write_text("1 2 3 0 0 1\n")
    with pytest.raises(ValueError, match="7 columns"):
        read_shapenetpart_txt(tmp_path / "short.txt")


def test_read_scanobjectnn_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    data = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3) / 7
    mask = np.array([[0, 1, 1, -1], [1, 0, 0, 0]])
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["data"], f["label"], f["mask"] = data, np.array([[3], [14]], dtype=np.uint8), mask
    pts, lab = read_scanobjectnn_h5(tmp_path / "t.h5")
    np.testing.assert_array_equal(pts, data)
    assert lab.dtype == np.int64 and lab.tolist() == [3, 14]
    *_, got_mask = read_scanobjectnn_h5(tmp_path / "t.h5", with_mask=True)
    np.testing.assert_array_equal(got_mask, mask)
    with h5py.File(tmp_path / "nomask.h5", "w") as f:
        f["data"], f["label"] = data, np.array([3, 14])
    assert read_scanobjectnn_h5(tmp_path / "nomask.h5", with_mask=True)[2] is None


# ------------------------------------------------------------------ sampling

def test_sample_mesh_on_cube_surface_and_seeded():
    v, f = _unit_cube()
    pts = sample_mesh(v, f, 2000, seed=3)
    assert pts.shape == (2000, 3) and pts.dtype == np.float32
    np.testing.assert_allclose(np.abs(pts).max(axis=1), 0.5, atol=1e-6)
    on_face = np.isclose(np.abs(pts), 0.5, atol=1e-6) * np.sign(pts)
    faces_hit = {tuple(r) for r in on_face.astype(int)}
    assert len(faces_hit) >= 6  # every side of the cube gets points
    np.testing.assert_array_equal(pts, sample_mesh(v, f, 2000, seed=3))
    assert not np.array_equal(pts, sample_mesh(v, f, 2000, seed=4))


def test_sample_mesh_is_area_weighted():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [10, 0, 0], [13, 0, 0], [10, 2, 0]], float)
    pts = sample_mesh(v, [[0, 1, 2], [3, 4, 5]], 4000, seed=0)  # areas 0.5 and 3
    assert abs((pts[:, 0] >= 10).mean() - 3 / 3.5) < 0.03


def test_sample_mesh_rejects_degenerate():
    with pytest.raises(ValueError, match="area"):
        sample_mesh(np.zeros((3, 3)), [[0, 1, 2]], 10)


# ------------------------------------------------------------------ load_points

def test_load_points_simple_formats(tmp_path):
    cloud = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    np.save(tmp_path / "c.npy", cloud)
    (tmp_path / "c.txt").write_text("\n".join(",".join(map(repr, map(float, p))) + ",0,0,1" for p in cloud))
    for name in ("c.npy", "c.txt"):
        small = load_points(tmp_path / name, n=20)
        assert small.shape == (20, 3)
        assert len({tuple(p) for p in small}) == 20  # no repeats when there are enough points
        assert {tuple(p) for p in small} <= {tuple(p) for p in cloud}
        assert load_points(tmp_path / name, n=80).shape == (80, 3)
    (tmp_path / "m.off").write_text("OFF5 2 0\n" + OFF_BODY)
    pts = load_points(tmp_path / "m.off", n=300, seed=1)
    assert pts.shape == (300, 3) and np.isfinite(pts).all()
    np.testing.assert_array_equal(pts, load_points(tmp_path / "m.off", n=300, seed=1))


@needs_meshes
@pytest.mark.data
@pytest.mark.parametrize("name", ["chair_model.obj", "teapot.stl", "bunny.ply", "Duck.glb",
                                  "ballA.off", "points_bin.ply", "unit_cube.STL"])
def test_load_points_real_meshes(name):
    pts = load_points(MESHES / name)
    assert pts.shape == (1024, 3) and pts.dtype == np.float32 and np.isfinite(pts).all()
    np.testing.assert_array_equal(pts, load_points("upload" + Path(name).suffix,
                                                   data=(MESHES / name).read_bytes()))


@needs_meshes
@pytest.mark.data
def test_load_points_applies_scene_transform():
    trimesh = pytest.importorskip("trimesh")
    lo, hi = trimesh.load(MESHES / "Duck.glb", force="mesh").bounds  # node scales by 0.01
    pts = load_points(MESHES / "Duck.glb")
    assert (pts >= lo - 1e-4).all() and (pts <= hi + 1e-4).all()


@needs_meshes
@pytest.mark.data
def test_load_points_vertex_only_ply_resamples_its_vertices():
    pts = load_points(MESHES / "points_bin.ply")  # 5 vertices, no faces; points_ascii.ply holds the same
    lines = (MESHES / "points_ascii.ply").read_text().split("end_header")[1].split("\n")
    expected = np.array([ln.split() for ln in lines if ln.strip()], dtype=np.float32)
    assert expected.shape == (5, 3)
    assert {tuple(p) for p in pts} == {tuple(p) for p in expected}


@needs_meshes
@pytest.mark.data
@pytest.mark.parametrize("name", ["empty.stl", "empty.obj", "empty.ply"])
def test_load_points_empty_meshes(name):
    with pytest.raises(ValueError, match="is empty"):
        load_points(MESHES / name)


def test_load_points_rejects_unknown_extension(tmp_path):
    (tmp_path / "model.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 26)
    with pytest.raises(ValueError, match=r"supported: .*\.obj"):
        load_points(tmp_path / "model.zip")
    with pytest.raises(ValueError, match="unsupported"):
        load_points("noext", data=b"solid x\nendsolid x\n")


def test_load_points_empty_point_files(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 3), np.float32))
    (tmp_path / "e.txt").write_text("")
    for name in ("e.npy", "e.txt"):
        with pytest.raises(ValueError, match="empty"):
            load_points(tmp_path / name)
