"""The one preprocessing path from a decoded shape to model input, shared by training/eval,
export checks, the server and batch jobs.

shape -> n points (meshes: area-weighted surface samples; clouds: seeded subset or repeats)
      -> rotate the input's up axis onto the model's -> centre on the mean, unit max radius.

Up axis: the classifier is trained on the shared ModelNet10 PCDs as stored, and those are z-up
(tables put ~43% of their points in the top 5% of z; chairs have the seat at z=0 and the back
above it). So the model frame is z-up: MODEL_UP_AXIS. Most OBJ/glTF files, such as
meshes/chair_model.obj, are y-up: pass up_axis="y" for them. The procedural part-segmentation
shapes are y-up too; they are rotated into the model's z-up frame for training and evaluation, so
one frame serves classification and segmentation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recon_serve.data.readers import resample_points, sample_mesh
from recon_serve.errors import BadRequest, EmptyShape, InvalidPoints, NonFiniteCoordinates
from recon_serve.geometry.decode import Decoded
from recon_serve.geometry.normalise import normalise_with_frame

MODEL_UP_AXIS = "z"

# proper rotations (det +1) taking an up axis onto +z: y-up (x, y, z) -> (x, -z, y)
_TO_Z_UP = {
    "z": np.eye(3),
    "y": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),
}


def _rotation(src: str, dst: str) -> np.ndarray:
    r = _TO_Z_UP[dst].T @ _TO_Z_UP[src]
    r.setflags(write=False)  # shared by every caller
    return r


_ROTATIONS = {(src, dst): _rotation(src, dst) for src in _TO_Z_UP for dst in _TO_Z_UP}


def up_rotation(src: str, dst: str = MODEL_UP_AXIS) -> np.ndarray:
    """[3,3] rotation R taking a `src`-up shape to `dst`-up (apply as points @ R.T); read-only."""
    for axis in (src, dst):
        if axis not in _TO_Z_UP:
            raise BadRequest(f"up axis must be one of {sorted(_TO_Z_UP)}, not {axis!r}")
    return _ROTATIONS[src, dst]


@dataclass(frozen=True)
class Prepared:
    """points [n,3] float32 for the model; model = ((input @ rotation.T) - centre) / scale."""

    points: np.ndarray
    centre: np.ndarray  # [3], in the rotated frame
    scale: float
    rotation: np.ndarray  # [3,3]

    def to_input(self, points: np.ndarray) -> np.ndarray:
        """Model-frame points (e.g. self.points) back in the input's coordinates."""
        return ((np.asarray(points, np.float64) * self.scale + self.centre) @ self.rotation).astype(np.float32)


def prepare(shape: Decoded | np.ndarray, n_points: int = 1024, up_axis: str = MODEL_UP_AXIS,
            normalise: bool = True, seed: int = 0, model_up: str = MODEL_UP_AXIS) -> Prepared:
    """Model input from a Decoded mesh/cloud or an [N,3] point array (deterministic by seed)."""
    rotation = up_rotation(up_axis, model_up)
    if isinstance(shape, Decoded) and shape.is_mesh:
        try:
            pts = sample_mesh(shape.vertices, shape.faces, n_points, seed)
        except ValueError as e:  # zero total area
            raise EmptyShape(f"the mesh has no surface to sample ({e})") from None
    else:
        cloud = np.asarray(shape.vertices if isinstance(shape, Decoded) else shape)
        if cloud.ndim != 2 or cloud.shape[1] != 3 or cloud.dtype.kind not in "iuf":
            raise InvalidPoints(f"expected a numeric [N,3] point array, got shape {cloud.shape}")
        if len(cloud) == 0:
            raise EmptyShape("no points given")
        # n float32 points as they are: normalising copies them anyway, so resampling's copy would be waste
        keep = normalise and len(cloud) == n_points and cloud.dtype == np.float32
        pts = cloud if keep else resample_points(cloud, n_points, seed)
    # one reduction (float64: no overflow from float32 values) instead of isfinite + all: inf and NaN propagate
    if not math.isfinite(float(pts.sum(dtype=np.float64))):
        raise NonFiniteCoordinates("the shape has NaN or infinite coordinates")
    if up_axis != model_up:  # the identity is skipped: it would change nothing but cost a pass
        pts = (pts.astype(np.float64) @ rotation.T).astype(np.float32)
    if not normalise:
        return Prepared(pts, np.zeros(3), 1.0, rotation)
    return Prepared(*normalise_with_frame(pts), rotation)  # centre and radius kept to map results back
