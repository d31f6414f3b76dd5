// torch binding of the CUDA FPS / kNN launchers. It includes torch/extension.h only (no ATen CUDA
// headers), so it also compiles against a CPU-only torch: the caller (recon_serve/ops/cuda_ops.py)
// makes the tensors' device current and passes its stream as an integer
// (torch.cuda.current_stream().cuda_stream).
#include <torch/extension.h>

#include "point_ops_cuda.h"

namespace {

void check_points(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == torch::kFloat32, name, " must be float32");
  TORCH_CHECK(t.dim() == 3 && t.size(2) == 3, name, " must have shape [B, N, 3]");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void check(int code, const char* what) {
  TORCH_CHECK(code == 0, what, " failed: ", recon_cuda_error_string(code));
}

void* as_stream(int64_t stream) { return reinterpret_cast<void*>(static_cast<intptr_t>(stream)); }

// force_global: keep the distances in global memory even where shared memory would do (tests that path).
torch::Tensor farthest_point_sample(const torch::Tensor& points, int64_t npoint, bool skip_origin, int64_t stream,
                                    bool force_global) {
  check_points(points, "points");
  const int64_t B = points.size(0), N = points.size(1);
  TORCH_CHECK(npoint >= 0 && npoint <= N, "cannot sample ", npoint, " centres from ", N, " points");
  auto out = torch::empty({B, npoint}, points.options().dtype(torch::kInt64));
  int64_t floats = recon_fps_workspace_floats(B, N);
  if (force_global) floats = B * N;
  torch::Tensor workspace;
  if (floats > 0) workspace = torch::empty({floats}, points.options());
  check(recon_fps_launch(points.data_ptr<float>(), B, N, npoint, skip_origin ? 1 : 0,
                         floats > 0 ? workspace.data_ptr<float>() : nullptr, out.data_ptr<int64_t>(), as_stream(stream)),
        "recon_serve farthest_point_sample");
  return out;
}

torch::Tensor knn(int64_t k, const torch::Tensor& points, const torch::Tensor& query, int64_t stream) {
  check_points(points, "points");
  check_points(query, "query");
  const int64_t B = points.size(0), N = points.size(1), M = query.size(1);
  TORCH_CHECK(query.size(0) == B, "points and query differ in batch size");
  TORCH_CHECK(points.device() == query.device(), "points and query are on different devices");
  TORCH_CHECK(k >= 1 && k <= N, "k=", k, " exceeds the ", N, " points available");
  TORCH_CHECK(k <= RECON_KNN_MAX_K, "k=", k, " exceeds the kernel's limit of ", RECON_KNN_MAX_K);
  auto out = torch::empty({B, M, k}, points.options().dtype(torch::kInt64));
  check(recon_knn_launch(points.data_ptr<float>(), query.data_ptr<float>(), B, N, M, k, out.data_ptr<int64_t>(),
                         as_stream(stream)),
        "recon_serve knn");
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("farthest_point_sample", &farthest_point_sample, "FPS from index 0 (CUDA)", py::arg("points"),
        py::arg("npoint"), py::arg("skip_origin"), py::arg("stream"), py::arg("force_global") = false);
  m.def("knn", &knn, "k nearest points, nearest first (CUDA)", py::arg("k"), py::arg("points"), py::arg("query"),
        py::arg("stream"));
  m.attr("max_k") = RECON_KNN_MAX_K;
}
