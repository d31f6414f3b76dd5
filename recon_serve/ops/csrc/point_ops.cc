// ONNX Runtime CPU kernels for recon_serve::FarthestPointSample and recon_serve::KNN.
//
// Results are bit-identical to recon_serve/geometry/group.py (the torch reference):
//  * distances are ((a-b)^2 summed x, y, z in that order) in float, with no FMA (build with
//    -ffp-contract=off), exactly as torch rounds ((a - b) ** 2).sum(-1);
//  * FPS starts at index 0 and takes the first maximum (torch.argmax; NaN counts as the maximum);
//    with skip_origin=1 a point with |p|^2 <= 1e-3 is never a later centre (pointnet2_ops' rule);
//  * KNN returns the k smallest distances ascending, ties to the lower index (the ONNX TopK rule;
//    torch.topk leaves tie order unspecified, so the two agree whenever the k-th distance is not tied).
// The library uses only the C API handed to RegisterCustomOps (ORT_API_MANUAL_INIT), so it does not
// link libonnxruntime and loads into any ONNX Runtime >= 1.21 (the headers' ORT_API_VERSION).
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace {

constexpr const char* kDomain = "recon_serve";
constexpr int64_t kQueriesPerTask = 32;  // KNN work per thread-pool task: a cloud's copy is paid once per task

OrtStatusPtr Error(OrtErrorCode code, const std::string& msg) { return Ort::GetApi().CreateStatus(code, msg.c_str()); }

// Calls fn(i) for every i in [0, n) on the session's intra-op thread pool (so a session set to
// one thread stays on one thread, and no thread is started per call).
template <class Fn>
void ParallelFor(const Ort::KernelContext& ctx, int64_t n, const Fn& fn) {
  if (n <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  ctx.ParallelFor([](void* f, size_t i) { (*static_cast<const Fn*>(f))(static_cast<int64_t>(i)); },
                  static_cast<size_t>(n), 0, const_cast<Fn*>(&fn));
}

inline float SquaredDistance(const float* a, const float* b) {
  const float dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
  float d = dx * dx;
  d += dy * dy;
  d += dz * dz;
  return d;
}

inline bool NearOrigin(const float* p) {
  float m = p[0] * p[0];
  m += p[1] * p[1];
  m += p[2] * p[2];
  return m <= 1e-3f;
}

// points: one cloud [N,3]; writes npoint indices. Skipped points keep distance -1 (never farthest).
void FarthestPointSampleOne(const float* points, int64_t N, int64_t npoint, bool skip_origin, int64_t* out) {
  std::vector<float> dist(N, std::numeric_limits<float>::infinity());
  std::vector<char> skip(N, 0);
  if (skip_origin)
    for (int64_t j = 0; j < N; ++j) skip[j] = NearOrigin(points + 3 * j);
  int64_t far = 0;
  for (int64_t i = 0; i < npoint; ++i) {
    out[i] = far;
    const float* c = points + 3 * far;
    int64_t best = 0;
    float best_val = 0.f;
    bool best_nan = false;
    for (int64_t j = 0; j < N; ++j) {
      const float d = SquaredDistance(points + 3 * j, c);
      float m = dist[j];
      if (std::isnan(d) || d < m) m = d;  // torch.minimum: NaN propagates
      if (skip[j]) m = -1.f;
      dist[j] = m;
      const bool m_nan = std::isnan(m);
      if (j == 0 || (!best_nan && (m_nan || m > best_val))) best = j, best_val = m, best_nan = m_nan;
    }
    far = best;
  }
}

// The KNN order: smaller distance first, ties (and NaNs, which go last) by index.
inline bool Before(float da, int64_t a, float db, int64_t b) {
  if (da < db) return true;
  if (db < da) return false;
  const bool na = std::isnan(da), nb = std::isnan(db);
  return na != nb ? nb : a < b;
}

// One cloud's coordinates as three arrays, so the distances to a query vectorise.
struct Columns {
  std::vector<float> x, y, z;
  void Load(const float* points, int64_t N) {
    x.resize(N), y.resize(N), z.resize(N);
    for (int64_t j = 0; j < N; ++j) x[j] = points[3 * j], y[j] = points[3 * j + 1], z[j] = points[3 * j + 2];
  }
};

// k nearest of a cloud to one query, in that order. The distances first (the same float operations
// as SquaredDistance, vectorised), then one pass keeping the k best so far sorted in (best_d, best_i):
// a point that does not beat the k-th costs one comparison, so the pass is O(N) plus k per insertion
// (about k ln(N/k) of them for points in random order).
void KnnOne(const Columns& c, int64_t N, const float* query, int64_t k, float* dist, float* best_d, int64_t* best_i) {
  const float qx = query[0], qy = query[1], qz = query[2];
  const float *x = c.x.data(), *y = c.y.data(), *z = c.z.data();
  for (int64_t j = 0; j < N; ++j) {
    const float dx = qx - x[j], dy = qy - y[j], dz = qz - z[j];
    float d = dx * dx;
    d += dy * dy;
    d += dz * dz;
    dist[j] = d;
  }
  int64_t filled = 0;
  for (int64_t j = 0; j < N; ++j) {
    const float d = dist[j];
    if (filled == k && !Before(d, j, best_d[k - 1], best_i[k - 1])) continue;
    int64_t pos = filled < k ? filled++ : k - 1;
    for (; pos > 0 && Before(d, j, best_d[pos - 1], best_i[pos - 1]); --pos) {
      best_d[pos] = best_d[pos - 1];
      best_i[pos] = best_i[pos - 1];
    }
    best_d[pos] = d;
    best_i[pos] = j;
  }
}

// Checks a [B,N,3] float input; returns its shape.
std::vector<int64_t> PointsShape(const Ort::ConstValue& v, const char* name) {
  auto shape = v.GetTensorTypeAndShapeInfo().GetShape();
  if (shape.size() != 3 || shape[2] != 3)
    throw Ort::Exception(std::string(name) + " must have shape [B, N, 3]", ORT_INVALID_ARGUMENT);
  return shape;
}

// A required int attribute that must be >= 1.
int64_t PositiveAttribute(const Ort::ConstKernelInfo& info, const char* op, const char* name) {
  const int64_t v = info.GetAttribute<int64_t>(name);
  if (v < 1) throw Ort::Exception(std::string(op) + ": attribute " + name + " must be >= 1", ORT_INVALID_ARGUMENT);
  return v;
}

#define RECON_CATCH_ALL                                                                 \
  catch (const Ort::Exception& e) { return Error(e.GetOrtErrorCode(), e.what()); }     \
  catch (const std::exception& e) { return Error(ORT_FAIL, e.what()); }

struct FpsKernel {
  int64_t npoint;
  bool skip_origin;

  static FpsKernel* Create(const Ort::ConstKernelInfo& info) {
    int64_t skip = 0;
    try {
      skip = info.GetAttribute<int64_t>("skip_origin");
    } catch (const Ort::Exception&) {  // optional attribute, absent in graphs exported before it existed
    }
    return new FpsKernel{PositiveAttribute(info, "FarthestPointSample", "npoint"), skip != 0};
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept try {
    Ort::KernelContext ctx(context);
    auto points = ctx.GetInput(0);
    const auto s = PointsShape(points, "points");
    const int64_t B = s[0], N = s[1];
    if (npoint > N)
      return Error(ORT_INVALID_ARGUMENT, "FarthestPointSample: npoint=" + std::to_string(npoint) + " > N=" + std::to_string(N));
    const float* p = points.GetTensorData<float>();
    int64_t* out = ctx.GetOutput(0, {B, npoint}).GetTensorMutableData<int64_t>();
    ParallelFor(ctx, B, [&](int64_t b) { FarthestPointSampleOne(p + b * N * 3, N, npoint, skip_origin, out + b * npoint); });
    return nullptr;
  }
  RECON_CATCH_ALL
};

struct KnnKernel {
  int64_t k;

  static KnnKernel* Create(const Ort::ConstKernelInfo& info) { return new KnnKernel{PositiveAttribute(info, "KNN", "k")}; }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) noexcept try {
    Ort::KernelContext ctx(context);
    auto points = ctx.GetInput(0), query = ctx.GetInput(1);
    const auto s = PointsShape(points, "points"), q = PointsShape(query, "query");
    const int64_t B = s[0], N = s[1], M = q[1];
    if (q[0] != B) return Error(ORT_INVALID_ARGUMENT, "KNN: points and query differ in batch size");
    if (k > N) return Error(ORT_INVALID_ARGUMENT, "KNN: k=" + std::to_string(k) + " > N=" + std::to_string(N));
    const float* p = points.GetTensorData<float>();
    const float* qp = query.GetTensorData<float>();
    int64_t* out = ctx.GetOutput(0, {B, M, k}).GetTensorMutableData<int64_t>();
    const int64_t chunks = (M + kQueriesPerTask - 1) / kQueriesPerTask;  // a batch of one spreads too
    ParallelFor(ctx, B * chunks, [&](int64_t t) {
      const int64_t b = t / chunks, m0 = (t % chunks) * kQueriesPerTask, m1 = std::min(M, m0 + kQueriesPerTask);
      Columns cloud;
      cloud.Load(p + b * N * 3, N);
      std::vector<float> dist(N), best_d(k);
      for (int64_t m = m0; m < m1; ++m)
        KnnOne(cloud, N, qp + (b * M + m) * 3, k, dist.data(), best_d.data(), out + (b * M + m) * k);
    });
    return nullptr;
  }
  RECON_CATCH_ALL
};

// One op class per node type; the kernel reads its own attributes (Kernel::Create).
template <class Kernel, size_t NumInputs>
struct PointOp : Ort::CustomOpBase<PointOp<Kernel, NumInputs>, Kernel, /*WithStatus=*/true> {
  explicit PointOp(const char* name) : name_(name) {}

  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const noexcept try {
    *kernel = Kernel::Create(Ort::ConstKernelInfo(info));
    return nullptr;
  }
  RECON_CATCH_ALL

  const char* GetName() const { return name_; }
  size_t GetInputTypeCount() const { return NumInputs; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64; }

 private:
  const char* name_;
};

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr)
    return api_base->GetApi(1)->CreateStatus(ORT_FAIL, "recon_serve point ops need ONNX Runtime >= 1.21");
  Ort::InitApi(api);
  try {
    static PointOp<FpsKernel, 1> fps("FarthestPointSample");
    static PointOp<KnnKernel, 2> knn("KNN");
    // One domain for the process, shared by every session (ORT only keeps a pointer to it).
    static Ort::CustomOpDomain domain = [] {
      Ort::CustomOpDomain d{kDomain};
      d.Add(&fps);
      d.Add(&knn);
      return d;
    }();
    Ort::UnownedSessionOptions(options).Add(domain);
    return nullptr;
  }
  RECON_CATCH_ALL
}
