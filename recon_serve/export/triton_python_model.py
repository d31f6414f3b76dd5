"""Triton python-backend model: the ReCon ONNX graph next to this file, run with onnxruntime.

Template: `recon_serve.export.triton_repo` copies this file into each version as model.py with
SITE_PACKAGES filled in. It is never imported by recon_serve itself (it needs Triton's
triton_python_backend_utils). The stub ignores PYTHONPATH, so the venv holding numpy<2 and
onnxruntime goes on sys.path here, before either is imported.
"""
import json
import os
import sys

SITE_PACKAGES = None  # set at export time
if SITE_PACKAGES and SITE_PACKAGES not in sys.path:
    sys.path.insert(0, SITE_PACKAGES)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

INPUT = "points"
CUSTOM_OP_DOMAIN = "recon_serve"


class TritonPythonModel:
    """One ORT session per model instance; requests of equal point count run as one batch."""

    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"])
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        with open(os.path.join(here, "model_card.json")) as f:
            card = json.load(f)
        so = ort.SessionOptions()
        threads = int(params.get("intra_op_num_threads", "0") or 0)
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.add_session_config_entry("session.force_spinning_stop", "1")  # as recon_serve's own sessions
        if CUSTOM_OP_DOMAIN in card["onnx"]["domains"]:
            so.register_custom_ops_library(os.path.join(here, card["onnx"]["custom_op_library"]))
        self.session = ort.InferenceSession(os.path.join(here, "model.onnx"), so, providers=["CPUExecutionProvider"])
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, INPUT).as_numpy() for r in requests]
        responses = [None] * len(requests)
        by_shape = {}
        for i, a in enumerate(arrays):
            by_shape.setdefault(a.shape[1:], []).append(i)
        for members in by_shape.values():
            try:
                batch = np.concatenate([arrays[i] for i in members]).astype(np.float32, copy=False)
                results = self.session.run(self.outputs, {INPUT: batch})
            except Exception as e:  # noqa: BLE001  (a bad request must not take the server down)
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e)))
                continue
            start = 0
            for i in members:
                stop = start + arrays[i].shape[0]
                tensors = [pb_utils.Tensor(n, np.ascontiguousarray(r[start:stop])) for n, r in zip(self.outputs, results)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop
        return responses

    def finalize(self):
        self.session = None
