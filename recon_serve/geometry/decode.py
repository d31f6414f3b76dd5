"""Untrusted uploads (file name + bytes, or JSON points) -> checked vertex/face arrays.

Every failure a user can fix raises a `recon_serve.errors.ShapeError` subclass. Cheap checks run
in the calling process before any parsing: the extension whitelist, the byte cap, archive magic
bytes (an archive renamed to .obj is refused; zip only for .3mf/.npz, which are zips) and the
optional STEP reader. Parsing (trimesh and `recon_serve.data.readers`) runs in a worker process
with a wall-clock timeout and an address-space limit (RLIMIT_AS); a worker that times out, runs
out of memory or dies is killed and replaced. Workers are plain `python -c` subprocesses, not
multiprocessing ones, so the caller's __main__ is never re-imported (a server or batch script
needs no `if __name__ == "__main__"` guard). `isolate=False` parses in-process: trusted files only.

Refused on purpose (see tests/test_decode.py for the shared mesh files):
- OBJ faces with fewer than 3 vertices, index 0, or relative indices followed by more vertices
  (trimesh would drop or misplace them silently): BrokenFile.
- Any non-finite vertex, used by a face or not (trimesh's processing would drop it): NonFiniteCoordinates.
- Face indices outside [0, V): BrokenFile. No vertices at all: EmptyShape.
A file with vertices and no faces (vertex-only PLY or OBJ) is a point cloud: `faces` is None.
"""
from __future__ import annotations

import atexit
import importlib.util
import io
import math
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass

import numpy as np

from recon_serve.data import readers
from recon_serve.errors import (
    BrokenFile, DecodeTimeout, EmptyShape, InvalidPoints, NonFiniteCoordinates, PayloadTooLarge,
    ShapeError, TooManyFaces, TooManyPoints, UnsupportedFormat, from_code,
)

MiB = 1 << 20

# extension -> format name (the file_type handed to trimesh for mesh formats)
FORMATS = {
    ".obj": "obj", ".stl": "stl", ".ply": "ply", ".off": "off", ".glb": "glb", ".gltf": "gltf",
    ".3mf": "3mf", ".pcd": "pcd", ".npy": "npy", ".npz": "npz", ".step": "step", ".stp": "step",
}
ZIP_FORMATS = frozenset({"3mf", "npz"})  # formats that are zip containers
OPTIONAL_READERS = {"step": "cascadio"}  # format -> module trimesh needs for it


@dataclass(frozen=True)
class DecodeLimits:
    """Caps on one upload. max_memory_bytes is the worker's address space (RLIMIT_AS)."""

    max_bytes: int = 64 * MiB
    max_unzipped_bytes: int = 256 * MiB  # total declared by a .3mf/.npz zip directory
    max_zip_members: int = 10_000
    max_points: int = 2_000_000  # points of a cloud, or vertices of a mesh
    max_faces: int = 4_000_000
    timeout_s: float = 30.0
    cpu_s: float = 10.0  # CPU seconds one upload may take in its worker (RLIMIT_CPU per job)
    max_memory_bytes: int = 3 * 1024 * MiB


@dataclass(frozen=True)
class Decoded:
    """vertices float32 [V,3]; faces int64 [F,3] in range, or None for a point cloud."""

    vertices: np.ndarray
    faces: np.ndarray | None
    format: str

    @property
    def is_mesh(self) -> bool:
        return self.faces is not None


# ------------------------------------------------------------------ checks before parsing

def sniff_archive(data: bytes) -> str | None:
    """The archive/compression kind the bytes start with, or None."""
    head = bytes(data[:16])
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if head[:6] == b"Rar!\x1a\x07":
        return "rar"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:3] == b"BZh" and head[4:10] == b"1AY&SY":
        return "bzip2"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if bytes(data[257:262]) == b"ustar":
        return "tar"
    return None


def check_upload(filename: str, data: bytes, limits: DecodeLimits) -> str:
    """The upload's format name, after the checks that need no parsing; raises ShapeError."""
    name = os.path.basename(str(filename or ""))
    ext = os.path.splitext(name)[1].lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        raise UnsupportedFormat(f"unsupported file type {ext or name or '(no name)'!r}; "
                                f"supported: {', '.join(sorted(FORMATS))}")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"the upload is {len(data):,} bytes; the limit is {limits.max_bytes:,}")
    if len(data) == 0:
        raise EmptyShape("the upload is empty (0 bytes)")
    kind = sniff_archive(data)
    if fmt in ZIP_FORMATS:
        if kind != "zip":
            raise BrokenFile(f"a {ext} file is a zip container, but this upload is "
                             f"{'a ' + kind + ' archive' if kind else 'not one'}")
    elif kind:
        raise UnsupportedFormat(f"this {ext} upload is a {kind} archive; archives are not accepted, "
                                f"upload the {ext} file itself")
    module = OPTIONAL_READERS.get(fmt)
    if module and importlib.util.find_spec(module) is None:
        raise UnsupportedFormat(f"{ext} files need the optional reader {module!r}, which this server "
                                f"does not have (pip install {module})")
    return fmt


def _check_zip(data: bytes, fmt: str, limits: DecodeLimits) -> zipfile.ZipFile:
    """The zip of a .3mf/.npz once its directory declares no more than the caps."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise BrokenFile(f"the .{fmt} file is not a readable zip container: {e}") from None
    infos = zf.infolist()
    if len(infos) > limits.max_zip_members:
        raise PayloadTooLarge(f"the .{fmt} container has {len(infos):,} members; "
                              f"the limit is {limits.max_zip_members:,}")
    total = sum(i.file_size for i in infos)
    if total > limits.max_unzipped_bytes:
        raise PayloadTooLarge(f"the .{fmt} container unpacks to {total:,} bytes; "
                              f"the limit is {limits.max_unzipped_bytes:,}")
    return zf


def _check_npy_header(fp, limits: DecodeLimits) -> None:
    """Refuse an .npy whose header says it is not a numeric [N,>=3] array, or has too many points."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(fp)
    except (ValueError, EOFError) as e:
        raise BrokenFile(f"not a valid .npy array: {e}") from None
    if dtype.kind not in "iuf" or len(shape) != 2 or shape[1] < 3:
        raise InvalidPoints(f"expected a numeric [N,3] point array, got shape {tuple(shape)} of {dtype}")
    if shape[0] > limits.max_points:
        raise TooManyPoints(f"the array holds {shape[0]:,} points; the limit is {limits.max_points:,}")


# ------------------------------------------------------------------ parsing (in the worker)

def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


def _read(fmt: str, data: bytes, limits: DecodeLimits):
    """(vertices, faces or None) through the project's readers."""
    if fmt == "off":
        return readers.read_off(data)
    if fmt == "pcd":
        return readers.read_pcd(data), None
    if fmt == "npy":
        _check_npy_header(io.BytesIO(data), limits)
        return readers.read_shapenet55_npy(data), None
    if fmt == "npz":
        with _check_zip(data, fmt, limits) as zf:
            names = zf.namelist()
            if not names:
                raise EmptyShape("the .npz file holds no arrays")
            member = next((n for n in ("points.npy", "points") if n in names), names[0])
            with zf.open(member) as fp:
                _check_npy_header(fp, limits)
        return readers.read_npz_points(data), None
    if fmt in ZIP_FORMATS:
        _check_zip(data, fmt, limits).close()
    return readers.read_trimesh(data, fmt)


def _checked(vertices, faces, fmt: str, limits: DecodeLimits) -> Decoded:
    v = np.asarray(vertices)
    if v.ndim != 2 or v.shape[1] != 3:
        raise BrokenFile(f"the .{fmt} file gave coordinates of shape {v.shape}, not [N,3]")
    if len(v) == 0:
        raise EmptyShape(f"the .{fmt} file holds no vertices or points")
    f = None if faces is None or len(faces) == 0 else np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    what = "vertices" if f is not None else "points"
    if len(v) > limits.max_points:
        raise TooManyPoints(f"the .{fmt} file has {len(v):,} {what}; the limit is {limits.max_points:,}")
    if f is not None and len(f) > limits.max_faces:
        raise TooManyFaces(f"the .{fmt} file has {len(f):,} faces; the limit is {limits.max_faces:,}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported below
        v32 = np.ascontiguousarray(v, dtype=np.float32)
    bad = ~np.isfinite(v32).all(axis=1)
    if bad.any():
        raise NonFiniteCoordinates(f"{int(bad.sum()):,} of {len(v):,} {what} have NaN or infinite "
                                   f"coordinates (or values beyond float32 range)")
    if f is not None and (f.min() < 0 or f.max() >= len(v)):
        raise BrokenFile(f"face indices must lie in [0, {len(v) - 1}] for {len(v):,} vertices; "
                         f"found {f.min()}..{f.max()}")
    return Decoded(v32, f, fmt)


def parse(fmt: str, data: bytes, limits: DecodeLimits) -> Decoded:
    """Parse and check bytes already passed by `check_upload`, in this process."""
    try:
        vertices, faces = _read(fmt, data, limits)
    except (ShapeError, MemoryError, ImportError):
        raise
    except readers.NonFiniteError as e:
        raise NonFiniteCoordinates(_short(str(e))) from None
    except Exception as e:  # parsers raise ValueError, IndexError, KeyError, struct.error...
        msg = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        if not msg.startswith("cannot read"):
            msg = f"cannot read this .{fmt} file: {msg}"
        raise BrokenFile(_short(msg)) from None
    return _checked(vertices, faces, fmt, limits)


def _limit_address_space(max_bytes: int) -> None:
    try:
        import resource
    except ImportError:  # not on POSIX: the timeout still applies
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        max_bytes = min(max_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (max_bytes, hard))


def _limit_cpu(seconds: float) -> None:
    """Let the coming job use `seconds` more CPU: past that the kernel ends the worker (SIGXCPU)."""
    try:
        import resource
    except ImportError:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _worker_main(fd: int, max_memory_bytes: int) -> None:
    """Worker loop on connection `fd`. Replies: ("ok", vertices, faces) | ("error", code, detail)
    | ("memory",) | ("internal", message), each followed by the worker's resident memory in bytes."""
    from multiprocessing.connection import Connection

    _limit_address_space(max_memory_bytes)
    import trimesh  # noqa: F401  (load it before saying ready, so timeouts measure parsing only)

    conn = Connection(fd)
    conn.send(("ready",))
    while True:
        try:
            job = conn.recv()
        except MemoryError:
            conn.send(("memory",))
            return
        except (EOFError, OSError):
            return
        if job is None:
            return
        _limit_cpu(job[2].cpu_s)
        try:
            d = parse(*job)
            reply = ("ok", d.vertices, d.faces)
        except ShapeError as e:
            reply = ("error", e.code, e.detail)
        except MemoryError:
            reply = ("memory",)
        except Exception as e:
            reply = ("internal", _short(f"{type(e).__name__}: {e}"))
        del job
        conn.send(reply + (_rss_bytes(),))


# ------------------------------------------------------------------ worker pool

_WORKER_CODE = "import sys; from recon_serve.geometry.decode import _worker_main; _worker_main(*map(int, sys.argv[1:]))"


_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


def _public_env() -> dict:
    """The environment without secrets (API keys and the like): the worker parses hostile files."""
    return {k: v for k, v in os.environ.items() if not any(w in k.upper() for w in _SECRET_WORDS)}


class _Worker:
    """One worker: a fresh `python -c` process talking over a socket pair."""

    def __init__(self, max_memory_bytes: int, start_timeout: float):
        self.max_memory_bytes = max_memory_bytes
        self.jobs, self.rss = 0, 0
        self.conn, child = mp.Pipe()
        env = {**_public_env(), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # import what the caller imports
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, str(child.fileno()), str(max_memory_bytes)],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
        except BaseException:
            self.conn.close()
            raise
        finally:
            child.close()
        try:
            ready = self.conn.poll(start_timeout) and self.conn.recv() == ("ready",)
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.kill()
            raise RuntimeError(f"decode worker did not start (exit code {self.proc.returncode})")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, job, timeout: float):
        """The worker's reply; raises DecodeTimeout (worker killed) or EOFError/OSError if it died."""
        try:
            self.conn.send(job)
        except OSError:
            # a worker that cannot allocate the incoming message says so and exits mid-send:
            # its ("memory",) reply still waits in the pipe and is the true answer
            if self.conn.poll(1.0):
                return self.conn.recv()
            raise
        if not self.conn.poll(timeout):
            self.kill()
            raise DecodeTimeout(f"the file took longer than {timeout:g} s to decode; "
                                f"upload a smaller or simpler file")
        try:
            reply = self.conn.recv()
        except (EOFError, OSError):
            try:
                code = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            if code == -signal.SIGXCPU:
                raise DecodeTimeout(f"the file needed more than {job[2].cpu_s:g} s of CPU to decode; "
                                    "upload a smaller or simpler file") from None
            raise
        self.jobs, self.rss = self.jobs + 1, reply[-1]
        return reply[:-1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
            self.proc.wait(2)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        self.kill()


class Decoder:
    """Decodes uploads in a lazily started pool of up to `workers` worker processes.

    Thread-safe; at most `workers` uploads parse at once (the others wait). A worker that times
    out (wall clock or CPU budget), runs out of memory or dies is killed, one that has served
    `max_jobs` uploads or grown past `max_rss_bytes` is recycled, and the next call starts a new one
    (about a second: python, numpy and trimesh load). `close()` stops the idle workers.
    """

    def __init__(self, limits: DecodeLimits | None = None, workers: int = 1, start_timeout: float = 120.0,
                 max_jobs: int = 200, max_rss_bytes: int = 1024 * MiB):
        self.limits = limits or DecodeLimits()
        self.max_jobs, self.max_rss_bytes = max_jobs, max_rss_bytes
        self.start_timeout = start_timeout
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    def decode(self, filename: str, data: bytes, limits: DecodeLimits | None = None, *,
               isolate: bool = True) -> Decoded:
        """Checked arrays of one upload; raises a ShapeError subclass for anything user-fixable.

        isolate=False parses in this process, without timeout or memory limit: trusted files only.
        """
        limits = limits or self.limits
        data = bytes(data)
        fmt = check_upload(filename, data, limits)
        if not isolate:
            return parse(fmt, data, limits)
        with self._slots:
            worker = self._take(limits.max_memory_bytes)
            try:
                reply = worker.run((fmt, data, limits), limits.timeout_s)
            except (EOFError, OSError):
                worker.kill()
                raise BrokenFile("the decoder process died while reading this file") from None
            except DecodeTimeout:
                worker.kill()
                raise
            if reply[0] in ("ok", "error") and worker.jobs < self.max_jobs and worker.rss < self.max_rss_bytes:
                self._give(worker)
            else:  # recycled, or after a MemoryError or an unexpected fault: start afresh
                worker.kill()
        if reply[0] == "ok":
            return Decoded(reply[1], reply[2], fmt)
        if reply[0] == "error":
            raise from_code(reply[1], reply[2])
        if reply[0] == "memory":
            raise PayloadTooLarge(f"decoding this file needs more than "
                                  f"{limits.max_memory_bytes // MiB:,} MiB of memory")
        raise RuntimeError(f"decode worker failed: {reply[1]}")

    def _take(self, max_memory_bytes: int) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive() and worker.max_memory_bytes == max_memory_bytes:
                    return worker
                worker.kill()
        return _Worker(max_memory_bytes, self.start_timeout)

    def _give(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def close(self) -> None:
        """Stop the idle worker processes."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


default_decoder = Decoder()
atexit.register(default_decoder.close)


def decode_upload(filename: str, data: bytes, limits: DecodeLimits | None = None, *,
                  isolate: bool = True) -> Decoded:
    """Decode one upload with the module's default Decoder (see Decoder.decode)."""
    return default_decoder.decode(filename, data, limits, isolate=isolate)


def decode_points_json(points, limits: DecodeLimits | None = None) -> Decoded:
    """A JSON point list [[x, y, z], ...] (already parsed; an [N, 3] array when parse_shape_json read
    it straight into one) as a checked point cloud."""
    limits = limits or DecodeLimits()
    if isinstance(points, (str, bytes, dict)) or not hasattr(points, "__len__"):
        raise InvalidPoints("points must be an array of [x, y, z] triples")
    if len(points) == 0:
        raise EmptyShape("no points given")
    if len(points) > limits.max_points:
        raise TooManyPoints(f"{len(points):,} points; the limit is {limits.max_points:,}")
    try:
        arr = np.asarray(points)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is None or arr.dtype.kind not in "iuf" or arr.ndim != 2 or arr.shape[1] != 3:
        shape = "" if arr is None or arr.dtype.kind not in "iuf" else f" (got shape {arr.shape})"
        raise InvalidPoints(f"points must be an array of [x, y, z] triples of numbers{shape}")
    if arr.dtype == np.float32:  # as parse_shape_json reads them
        pts = arr
    else:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is reported below
            pts = arr.astype(np.float32)
    if not math.isfinite(float(pts.sum(dtype=np.float64))):  # one reduction; inf and NaN propagate
        bad = ~np.isfinite(pts).all(axis=1)
        raise NonFiniteCoordinates(f"{int(bad.sum()):,} of {len(pts):,} points have NaN or infinite "
                                   f"coordinates (or values beyond float32 range)")
    return Decoded(pts, None, "json")
