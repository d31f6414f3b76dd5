"""Upload decoding (recon_serve.geometry.decode), its errors, and the shared preprocessing path."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recon_serve.errors import (
    ERRORS, BadRequest, BrokenFile, DecodeTimeout, EmptyShape, InvalidPoints, NonFiniteCoordinates,
    PayloadTooLarge, ShapeError, TooManyFaces, TooManyPoints, UnknownLabelSet, UnsupportedFormat,
)
from recon_serve.geometry.decode import (
    DecodeLimits, Decoded, Decoder, decode_points_json, decode_upload, sniff_archive,
)
from recon_serve.geometry.preprocess import MODEL_UP_AXIS, prepare, up_rotation

DATA = Path(os.environ["RECON_DATA"]) if os.environ.get("RECON_DATA") else \
    Path(__file__).resolve().parents[2] / "shared" / "data"
MESHES = DATA / "meshes"
needs_meshes = pytest.mark.skipif(not MESHES.is_dir(), reason=f"shared meshes not found at {MESHES}")
HAS_STEP = importlib.util.find_spec("cascadio") is not None

TRI_OBJ = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"


@pytest.fixture(scope="module")
def decoder():
    with Decoder() as d:
        yield d


# ------------------------------------------------------------------ errors

def test_error_table():
    table = {cls.__name__: (cls.code, cls.status) for cls in ERRORS}
    assert table == {
        "UnsupportedFormat": ("unsupported_format", 415),
        "EmptyShape": ("empty_shape", 422),
        "BrokenFile": ("broken_file", 422),
        "NonFiniteCoordinates": ("non_finite_coordinates", 422),
        "TooManyPoints": ("too_many_points", 413),
        "TooManyFaces": ("too_many_faces", 413),
        "PayloadTooLarge": ("payload_too_large", 413),
        "DecodeTimeout": ("decode_timeout", 422),
        "InvalidPoints": ("invalid_points", 422),
        "BadRequest": ("bad_request", 400),
        "InvalidMetadata": ("invalid_metadata", 400),
        "UnknownLabelSet": ("unknown_label_set", 400),
        "NotFound": ("not_found", 404),
        "Unauthorized": ("unauthorized", 401),
        "ForbiddenOrigin": ("forbidden_origin", 403),
        "RequestTimeout": ("request_timeout", 408),
        "ReloadFailed": ("reload_failed", 409),
    }
    err = UnknownLabelSet("no label set 'foo'")
    assert isinstance(err, ShapeError) and err.to_dict() == {"error": "unknown_label_set", "detail": "no label set 'foo'"}


# ------------------------------------------------------------------ the shared mesh files

OK = None
STEP = None if HAS_STEP else UnsupportedFormat  # STEP needs the optional reader cascadio
# Expectation per file in ../shared/data/meshes, with the reasoning for the awkward ones.
EXPECT: dict[str, type[ShapeError] | None] = {
    # plain shapes
    "chair_model.obj": OK, "fandisk.obj": OK, "bunny.ply": OK, "teapot.stl": OK, "Duck.glb": OK,
    "pins.glb": OK, "angle_block.STL": OK, "idler_riser.STL": OK, "quadknot.obj": OK,
    "torus.STL": OK, "unit_cube.STL": OK, "ballA.off": OK, "featuretype.3MF": OK,
    "box_sides.STEP": STEP, "featuretype.STEP": STEP,
    # awkward but valid
    "multibody.stl": OK,  # two solids in one file: both kept (20 vertices, 32 faces)
    "soup.stl": OK,  # unconnected triangles: still a surface to sample
    "two_objects.obj": OK,  # 'o cube' + 'o tetra': both kept, 16 faces
    "comments.off": OK, "whitespace.off": OK,  # comments / odd whitespace: the OFF reader copes
    "points_ascii.ply": OK, "points_bin.ply": OK,  # vertices only: a 5-point cloud, faces None
    # empty: EmptyShape (422)
    "empty.stl": EmptyShape,  # 'solid Empty' / 'endsolid Empty', no facets
    "empty.obj": EmptyShape,  # a comment line only
    "empty.ply": EmptyShape,  # a valid header declaring 0 vertices and 0 faces
    # listed as broken in shared/data/README.md; decided per file:
    # 'f 1// 2//' is a face with two vertices. trimesh silently drops it and returns the one
    # remaining triangle, which is not the shape in the file: the file is malformed -> 422.
    "notenoughindices.obj": BrokenFile,
    # Negative (relative) indices are standard OBJ: -1 is the last vertex read so far. All 8
    # vertices come before the faces, so -1..-8 are in range: a valid 2x2x2 cube (12 triangles,
    # area 24), which trimesh reads correctly. Decodes.
    "negative_indices.obj": OK,
    # The NaNs are in the optional per-vertex colour of one vertex ('v x y z r g b'); its
    # coordinates and all others are finite, and the model reads xyz only: a unit cube. Decodes.
    "nancolor.obj": OK,
    # 'mtllib nonexistent.mtl' (missing material, irrelevant to geometry) and faces 'v/vt/' with
    # an empty normal slot (non-standard, unambiguous): a complete unit cube. Decodes.
    "jacked.obj": OK,
}


@needs_meshes
def test_every_shared_mesh_file_has_an_expectation():
    assert sorted(p.name for p in MESHES.iterdir() if p.is_file()) == sorted(EXPECT)


@needs_meshes
@pytest.mark.data
@pytest.mark.parametrize("name", sorted(EXPECT))
def test_shared_mesh_file(decoder, name):
    path = MESHES / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    expected = EXPECT[name]
    if expected is not None:
        with pytest.raises(expected) as err:
            decoder.decode(name, path.read_bytes())
        assert type(err.value) is expected and err.value.detail
        return
    d = decoder.decode(name, path.read_bytes())
    assert d.vertices.dtype == np.float32 and d.vertices.ndim == 2 and d.vertices.shape[1] == 3
    assert len(d.vertices) > 0 and np.isfinite(d.vertices).all()
    if d.faces is not None:
        assert d.faces.dtype == np.int64 and d.faces.shape[1] == 3 and len(d.faces) > 0
        assert d.faces.min() >= 0 and d.faces.max() < len(d.vertices)
    # the trusted in-process path gives the same arrays
    same = decoder.decode(name, path.read_bytes(), isolate=False)
    np.testing.assert_array_equal(same.vertices, d.vertices)
    assert (same.faces is None) == (d.faces is None)


def _area(d: Decoded) -> float:
    t = d.vertices.astype(np.float64)[d.faces]
    return float(0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum())


@needs_meshes
@pytest.mark.data
def test_shared_edge_case_geometry(decoder):
    neg = decoder.decode("n.obj", (MESHES / "negative_indices.obj").read_bytes())
    assert len(neg.faces) == 12 and np.isclose(_area(neg), 24.0)
    assert np.allclose(neg.vertices.min(0), -1) and np.allclose(neg.vertices.max(0), 1)
    for name in ("nancolor.obj", "jacked.obj"):
        cube = decoder.decode(name, (MESHES / name).read_bytes())
        assert len(cube.vertices) == 8 and len(cube.faces) == 12 and np.isclose(_area(cube), 6.0)
        assert np.allclose(np.abs(cube.vertices), 0.5)  # all 8 corners, none dropped
    pts = decoder.decode("p.ply", (MESHES / "points_bin.ply").read_bytes())
    assert pts.faces is None and pts.vertices.shape == (5, 3)
    two = decoder.decode("t.obj", (MESHES / "two_objects.obj").read_bytes())
    assert len(two.faces) == 16


@needs_meshes
@pytest.mark.data
def test_step_without_cad_reader_names_the_package():
    if HAS_STEP:
        pytest.skip("cascadio is installed")
    with pytest.raises(UnsupportedFormat, match="cascadio"):
        decode_upload("part.stp", (MESHES / "featuretype.STEP").read_bytes())


# ------------------------------------------------------------------ checks before parsing

@pytest.mark.parametrize("name", ["model.zip", "model.fbx", "model", "", "model.obj.gz"])
def test_unknown_extensions_are_refused(name):
    with pytest.raises(UnsupportedFormat, match="supported"):
        decode_upload(name, TRI_OBJ)


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_renamed_to_obj_is_refused_fast():
    # the shape of the DoS in the dependency notes: a small zip holding a lot of OBJ text
    bomb = _zip_bytes({"model.obj": b"v 0.5 0.5 0.5\n" * 1_500_000})
    assert len(bomb) < 200_000
    with Decoder() as dec:  # a fresh decoder: refused before any worker starts
        start = time.perf_counter()
        with pytest.raises(UnsupportedFormat, match="zip archive"):
            dec.decode("model.obj", bomb)
        assert time.perf_counter() - start < 1.0
        assert not dec._idle


def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("a.obj")
        info.size = len(TRI_OBJ)
        tf.addfile(info, io.BytesIO(TRI_OBJ))
    return buf.getvalue()


@pytest.mark.parametrize("kind, data", [
    ("gzip", b"\x1f\x8b\x08\x00" + b"\x00" * 40),
    ("7z", b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 40),
    ("rar", b"Rar!\x1a\x07\x01\x00" + b"\x00" * 40),
    ("tar", _tar_bytes()),
])
def test_other_archives_are_refused_whatever_their_name(kind, data):
    assert sniff_archive(data) == kind
    for name in ("x.stl", "x.ply", "x.3mf", "x.npy"):
        with pytest.raises((UnsupportedFormat, BrokenFile), match=kind):
            decode_upload(name, data)


def test_oversized_payload():
    limits = DecodeLimits(max_bytes=1000)
    with pytest.raises(PayloadTooLarge, match="limit is 1,000"):
        decode_upload("big.obj", TRI_OBJ * 100, limits)
    assert decode_upload("small.obj", TRI_OBJ, limits).faces.shape == (1, 3)


def test_empty_upload():
    with pytest.raises(EmptyShape):
        decode_upload("x.stl", b"")


def _patch_declared_size(zip_data: bytes, size: int) -> bytes:
    """Make the central directory claim `size` uncompressed bytes for its (first) member."""
    data = bytearray(zip_data)
    cd = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, cd + 24, size)
    return bytes(data)


def test_zip_bomb_3mf_is_refused_by_the_declared_size(decoder):
    # honest sizes: 4 MiB of model XML deflates to a few kB, over a 1 MiB cap
    small = _zip_bytes({"3D/3dmodel.model": b" " * (4 << 20)})
    assert len(small) < 20_000
    with pytest.raises(PayloadTooLarge, match="unpacks to 4,194,304 bytes"):
        decoder.decode("bomb.3mf", small, DecodeLimits(max_unzipped_bytes=1 << 20))
    # a directory that claims 4 GB is refused under the default cap, before anything is inflated
    liar = _patch_declared_size(_zip_bytes({"3D/3dmodel.model": b"<model/>"}), 0xFFFF0000)
    with pytest.raises(PayloadTooLarge, match="unpacks to"):
        decoder.decode("liar.3mf", liar)
    # a .3mf that is not a zip
    with pytest.raises(BrokenFile, match="zip container"):
        decoder.decode("x.3mf", b"<model/>")


# ------------------------------------------------------------------ counts, values, indices

def _ply(points: np.ndarray, faces: list[list[int]] = ()) -> bytes:
    head = (f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\n"
            f"property float z\nelement face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    body = "".join(f"{x} {y} {z}\n" for x, y, z in points) + "".join(
        f"{len(f)} {' '.join(map(str, f))}\n" for f in faces)
    return (head + body).encode()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_too_many_points_and_faces(decoder):
    cloud = np.random.default_rng(0).normal(size=(2000, 3)).astype(np.float32)
    limits = DecodeLimits(max_points=1000, max_faces=5)
    for name, data in (("c.ply", _ply(cloud)), ("c.npy", _npy(cloud))):
        with pytest.raises(TooManyPoints, match="2,000"):
            decoder.decode(name, data, limits)
    with pytest.raises(TooManyPoints):
        decode_points_json(cloud.tolist(), limits)
    grid = [[i, i + 1, i + 2] for i in range(8)]
    with pytest.raises(TooManyFaces, match="8 faces"):
        decoder.decode("m.ply", _ply(cloud[:10], grid), limits)


def test_non_finite_coordinates_are_refused(decoder):
    # trimesh's processing would drop the NaN vertex and its face; the decoder must not
    with pytest.raises(NonFiniteCoordinates, match="1 of 4 vertices"):
        decoder.decode("nan.obj", b"v 0 0 0\nv nan 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 1 3 4\n")
    with pytest.raises(NonFiniteCoordinates):
        decoder.decode("inf.ply", _ply(np.array([[0, 0, 0], [np.inf, 0, 0], [0, 1, 0]]), [[0, 1, 2]]))
    with pytest.raises(NonFiniteCoordinates):  # the OFF reader's own check
        decoder.decode("nan.off", b"OFF\n3 1 0\n0 0 0\nnan 0 0\n0 1 0\n3 0 1 2\n")
    with pytest.raises(NonFiniteCoordinates, match="float32"):  # finite in float64, not in float32
        decoder.decode("huge.npy", _npy(np.array([[1e300, 0, 0], [0, 0, 0]])))


@pytest.mark.parametrize("name, data", [
    ("oob.ply", _ply(np.eye(3), [[0, 1, 7]])),  # kept raw by trimesh, refused by the range check
    ("oob.obj", TRI_OBJ + b"f 1 2 9\n"),  # trimesh raises IndexError
    ("zero.obj", TRI_OBJ + b"f 0 1 2\n"),  # OBJ indices start at 1; trimesh would wrap 0
    ("short.obj", TRI_OBJ + b"f 1 2\n"),
    ("relative.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf -3 -2 -1\n" + TRI_OBJ),  # trimesh counts from the end
    ("trunc.off", b"OFF\n4 2 0\n0 0 0\n1 0 0\n"),
    ("bad.glb", b"glTF" + b"\x00" * 40),
    ("bad.pcd", b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nPOINTS 10\nDATA binary\n" + bytes(8)),  # truncated
    ("bad.npy", b"\x93NUMPY garbage"),
])
def test_broken_files(decoder, name, data):
    with pytest.raises(BrokenFile):
        decoder.decode(name, data)


def test_point_arrays(decoder, tmp_path):
    cloud = np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32)  # xyz + normals
    np.testing.assert_array_equal(decoder.decode("c.npy", _npy(cloud)).vertices, cloud[:, :3])
    buf = io.BytesIO()
    np.savez(buf, labels=np.arange(50), points=cloud[:, :3])
    np.testing.assert_array_equal(decoder.decode("c.npz", buf.getvalue()).vertices, cloud[:, :3])
    buf = io.BytesIO()
    np.savez_compressed(buf, cloud[:, :3])  # no 'points' key: the first array
    np.testing.assert_array_equal(decoder.decode("c.npz", buf.getvalue()).vertices, cloud[:, :3])
    for bad in (np.zeros((10, 2)), np.zeros(30), np.array([["a", "b", "c"]])):
        with pytest.raises(InvalidPoints):
            decoder.decode("bad.npy", _npy(bad))
    with pytest.raises(EmptyShape):
        decoder.decode("e.npy", _npy(np.zeros((0, 3), np.float32)))


@pytest.mark.data
def test_modelnet_pcd(decoder):
    pcds = sorted((DATA / "modelnet10" / "chair" / "train").glob("*.pcd"))[:1]
    if not pcds:
        pytest.skip("ModelNet10 not found")
    d = decoder.decode(pcds[0].name, pcds[0].read_bytes())
    assert d.faces is None and d.vertices.shape == (1024, 3)
    # prepare() gives exactly what training feeds the model (load_modelnet10: normalise(read_pcd))
    from recon_serve.data.readers import read_pcd
    from recon_serve.geometry.normalise import normalise

    np.testing.assert_array_equal(prepare(d).points, normalise(read_pcd(pcds[0])))


def test_json_points():
    d = decode_points_json([[0, 0, 0], [1, 2.5, 3]])
    assert d.vertices.dtype == np.float32 and d.faces is None and d.vertices.shape == (2, 3)
    for text in ("[[NaN, 0, 0], [1, 1, 1]]", "[[Infinity, 0, 0]]", "[[1e39, 0, 0]]"):
        with pytest.raises(NonFiniteCoordinates):
            decode_points_json(json.loads(text))
    for bad in ([[1, 2]], [[1, 2, 3], [4, 5]], [["1", "2", "3"]], [[None, 1, 2]], [[[1, 2, 3]]], "points", {"x": 1}):
        with pytest.raises(InvalidPoints):
            decode_points_json(bad)
    with pytest.raises(EmptyShape):
        decode_points_json([])


# ------------------------------------------------------------------ the worker: timeout, memory

def test_timeout_kills_the_worker_and_the_decoder_keeps_working():
    facet = b" facet normal 0 0 1\n  outer loop\n   vertex 0 0 0\n   vertex 1 0 0\n   vertex 0 1 0\n  endloop\n endfacet\n"
    huge = b"solid big\n" + facet * 200_000 + b"endsolid big\n"  # 20 MB, about 0.4 s to parse
    with Decoder() as dec:
        dec.decode("warm.obj", TRI_OBJ)
        first = dec._idle[0].proc
        start = time.perf_counter()
        with pytest.raises(DecodeTimeout, match="took longer than 0.05 s") as err:
            dec.decode("huge.stl", huge, DecodeLimits(timeout_s=0.05))
        assert time.perf_counter() - start < 5 and err.value.status == 422
        assert first.poll() is not None  # killed
        assert dec.decode("after.obj", TRI_OBJ).faces.shape == (1, 3)
        assert dec._idle[0].proc is not first


def test_cpu_budget_ends_a_costly_parse_and_workers_are_recycled():
    facet = b"facet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\nvertex 0 1 0\nendloop\nendfacet\n"
    huge = b"solid big\n" + facet * 600_000 + b"endsolid big\n"  # 60 MB, over a second of CPU to parse
    with Decoder(max_jobs=2) as dec:
        with pytest.raises(DecodeTimeout, match="CPU"):
            dec.decode("huge.stl", huge, DecodeLimits(cpu_s=0, timeout_s=60))
        dec.decode("a.obj", TRI_OBJ)
        first = dec._idle[0].proc
        dec.decode("b.obj", TRI_OBJ)  # its second upload: replaced afterwards
        assert not dec._idle and first.poll() is not None
        dec.decode("c.obj", TRI_OBJ)
        assert dec._idle[0].proc is not first
    with Decoder(max_rss_bytes=1) as dec:  # any worker is over this: never reused
        dec.decode("a.obj", TRI_OBJ)
        assert not dec._idle


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to size the limit")
def test_address_space_limit():
    with Decoder() as dec:
        dec.decode("warm.obj", TRI_OBJ)
        status = Path(f"/proc/{dec._idle[0].proc.pid}/status").read_text()
        base = int(status.split("VmSize:")[1].split()[0]) * 1024
        # ~96 MB of points: merely receiving them needs more than the 60 MiB of headroom, so the
        # memory cap must fire; the point cap is lifted so that it cannot answer first
        limits = DecodeLimits(max_bytes=200 << 20, max_points=20_000_000,
                              max_memory_bytes=base + (60 << 20))
        with pytest.raises(PayloadTooLarge, match="MiB of memory"):
            dec.decode("big.npy", _npy(np.zeros((8_000_000, 3), np.float32)), limits)
        assert dec.decode("after.obj", TRI_OBJ, limits).faces.shape == (1, 3)


# ------------------------------------------------------------------ prepare

def _box(lo, hi) -> Decoded:
    v = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], np.float32)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))], np.int64)
    return Decoded(v, f, "test")


def test_prepare_is_deterministic_and_normalised():
    box = _box((0, 0, 0), (4, 1, 2))
    p = prepare(box, n_points=512, seed=3)
    assert p.points.shape == (512, 3) and p.points.dtype == np.float32
    np.testing.assert_array_equal(p.points, prepare(box, n_points=512, seed=3).points)
    assert not np.array_equal(p.points, prepare(box, n_points=512, seed=4).points)
    assert np.abs(p.points.mean(0)).max() < 1e-5
    assert np.isclose(np.linalg.norm(p.points, axis=1).max(), 1.0, atol=1e-6)
    # results per point map back to the input's coordinates: on the box surface
    back = p.to_input(p.points)
    assert (back >= -1e-4).all() and (back <= np.array([4, 1, 2]) + 1e-4).all()
    raw = prepare(box, n_points=512, seed=3, normalise=False).points
    np.testing.assert_allclose(back, raw, atol=1e-5)


def test_prepare_point_clouds():
    cloud = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32) * 10 + 3
    p = prepare(cloud, n_points=1024)
    dist = np.linalg.norm(p.to_input(p.points)[:, None] - cloud[None], axis=2)  # [1024, 5]
    assert dist.min(axis=1).max() < 1e-4  # only input points...
    assert (dist < 1e-4).any(axis=0).all()  # ...and every one of them
    many = np.random.default_rng(1).normal(size=(3000, 3)).astype(np.float32)
    sub = prepare(Decoded(many, None, "npy"), n_points=1024, normalise=False).points
    assert len({tuple(q) for q in sub}) == 1024  # a subset, no repeats
    with pytest.raises(EmptyShape):
        prepare(np.zeros((0, 3), np.float32))
    with pytest.raises(EmptyShape, match="no surface"):
        prepare(Decoded(np.zeros((3, 3), np.float32), np.array([[0, 1, 2]]), "obj"))
    with pytest.raises(BadRequest):
        prepare(cloud, up_axis="x")


def test_up_axis_rotation():
    assert MODEL_UP_AXIS == "z"
    # a y-up "signpost": a flat base in x/z at y=0, a pole up +y, an arm towards +x at the top
    rng = np.random.default_rng(0)
    base = np.c_[rng.uniform(-1, 1, 300), np.zeros(300), rng.uniform(-1, 1, 300)]
    pole = np.c_[np.zeros(300), rng.uniform(0, 6, 300), np.zeros(300)]
    arm = np.c_[np.linspace(0, 2, 100), np.full(100, 6.0), np.zeros(100)]
    post = np.concatenate([base, pole, arm]).astype(np.float32)
    z = prepare(post, n_points=700, up_axis="y", normalise=False).points
    assert np.ptp(z[:, 2]) > 5.9 and z[:, 2].min() > -1e-6  # the pole now runs up +z
    top = z[z[:, 2] > 5.9]
    assert top[:, 0].max() > 1.9 and np.abs(top[:, 1]).max() < 1e-6  # the arm still points to +x
    R = up_rotation("y", "z")
    assert np.isclose(np.linalg.det(R), 1.0)  # a rotation, not a mirror
    np.testing.assert_allclose(R @ [1, 2, 3], [1, -3, 2])
    np.testing.assert_allclose(up_rotation("z", "y") @ R, np.eye(3))
    same = prepare(post, n_points=700, up_axis="z", normalise=False).points  # already in the model frame
    assert np.ptp(same[:, 1]) > 5.9
    p = prepare(post, n_points=700, up_axis="y")
    np.testing.assert_allclose(p.to_input(p.points), post, atol=1e-5)  # 700 points: kept as they are


@pytest.mark.data
def test_modelnet_training_data_is_z_up():
    tables = sorted((DATA / "modelnet10" / "table" / "train").glob("*.pcd"))[:10]
    if not tables:
        pytest.skip("ModelNet10 not found")
    from recon_serve.data.readers import read_pcd

    tops = []
    for path in tables:  # a table top: many points in the top 5% slab of z, few in that of x or y
        p = prepare(read_pcd(path), n_points=1024).points
        tops.append([np.mean(p[:, a] > p[:, a].max() - 0.05 * np.ptp(p[:, a])) for a in range(3)])
    tops = np.array(tops)
    assert (tops.argmax(axis=1) == 2).all(), tops
    assert tops[:, 2].mean() > 0.3 > 0.1 > tops[:, :2].mean(), tops
