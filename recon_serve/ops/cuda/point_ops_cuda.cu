// CUDA kernels for recon_serve's FPS and kNN (semantics: point_ops_cuda.h), behind a plain C ABI.
//
// FPS: one block per cloud. Each iteration every thread folds the newest centre into its strided
// share of the running distances, keeps its farthest (value, index), and a warp-shuffle + shared
// reduction picks the block's farthest. Distances live in shared memory when the cloud fits (opting
// in to the device's large-shared-memory limit), else in a caller-provided global workspace.
// kNN: one thread per query, queries of one cloud per block; the block stages the cloud in shared
// tiles and each thread keeps a sorted top-k list, inserting only what beats its current k-th.
// Rounding is explicit (__fmul_rn/__fadd_rn) so no FMA changes a distance and ties break as torch's.
#include <cuda_runtime.h>

#include <climits>
#include <cmath>

#include "point_ops_cuda.h"

namespace {

constexpr int kMaxWarps = 32;
constexpr int kKnnThreads = 64;
constexpr int kKnnTile = 1024;  // points staged per shared tile (12 KiB)
constexpr size_t kDefaultShared = 48 * 1024;
constexpr size_t kSharedReserve = 1024;  // static shared of fps_kernel, with room to spare

__device__ __forceinline__ float sum_sq(float x, float y, float z) {
  return __fadd_rn(__fadd_rn(__fmul_rn(x, x), __fmul_rn(y, y)), __fmul_rn(z, z));
}

__device__ __forceinline__ float sq_dist(float ax, float ay, float az, float bx, float by, float bz) {
  return sum_sq(__fsub_rn(ax, bx), __fsub_rn(ay, by), __fsub_rn(az, bz));
}

// (a, ia) is a better next FPS centre than (b, ib): larger, NaN the largest, ties to the lower index.
// ib < 0 means "no candidate yet".
__device__ __forceinline__ bool farther(float a, int ia, float b, int ib) {
  if (ia < 0) return false;
  if (ib < 0) return true;
  const bool na = isnan(a), nb = isnan(b);
  if (na || nb) return na && (!nb || ia < ib);
  return a > b || (a == b && ia < ib);
}

template <bool kShared>
__global__ void fps_kernel(const float* __restrict__ points, int N, int npoint, bool skip_origin,
                           float* __restrict__ workspace, int64_t* __restrict__ out) {
  extern __shared__ float shared_dist[];
  __shared__ float warp_val[kMaxWarps];
  __shared__ int warp_idx[kMaxWarps];
  __shared__ int next_far;

  const int b = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  const float* p = points + static_cast<int64_t>(b) * N * 3;
  float* dist = kShared ? shared_dist : workspace + static_cast<int64_t>(b) * N;
  int64_t* o = out + static_cast<int64_t>(b) * npoint;
  // Each thread only ever touches its own j's, so the init needs no barrier.
  for (int j = threadIdx.x; j < N; j += blockDim.x) dist[j] = INFINITY;

  int far = 0;
  for (int i = 0; i < npoint; ++i) {
    if (threadIdx.x == 0) o[i] = far;
    const float cx = p[3 * far], cy = p[3 * far + 1], cz = p[3 * far + 2];
    float best = 0.f;
    int best_i = -1;
    for (int j = threadIdx.x; j < N; j += blockDim.x) {
      const float x = p[3 * j], y = p[3 * j + 1], z = p[3 * j + 2];
      const float d = sq_dist(x, y, z, cx, cy, cz);
      float m = dist[j];
      if (isnan(d) || d < m) m = d;  // torch.minimum: NaN propagates
      if (skip_origin && sum_sq(x, y, z) <= 1e-3f) m = -1.f;
      dist[j] = m;
      if (farther(m, j, best, best_i)) best = m, best_i = j;
    }
    for (int off = 16; off > 0; off >>= 1) {
      const float v = __shfl_down_sync(0xffffffffu, best, off);
      const int vi = __shfl_down_sync(0xffffffffu, best_i, off);
      if (farther(v, vi, best, best_i)) best = v, best_i = vi;
    }
    if (lane == 0) warp_val[warp] = best, warp_idx[warp] = best_i;
    __syncthreads();
    if (warp == 0) {
      best = lane < nwarps ? warp_val[lane] : 0.f;
      best_i = lane < nwarps ? warp_idx[lane] : -1;
      for (int off = 16; off > 0; off >>= 1) {
        const float v = __shfl_down_sync(0xffffffffu, best, off);
        const int vi = __shfl_down_sync(0xffffffffu, best_i, off);
        if (farther(v, vi, best, best_i)) best = v, best_i = vi;
      }
      if (lane == 0) next_far = best_i;
    }
    __syncthreads();
    far = next_far;
  }
}

// New candidate d (its index above every kept one) sorts before kept distance e: smaller, NaN last.
__device__ __forceinline__ bool before(float d, float e) { return d < e || (isnan(e) && !isnan(d)); }

__global__ void knn_kernel(const float* __restrict__ points, const float* __restrict__ query, int N, int M,
                           int k, int64_t* __restrict__ out) {
  __shared__ float tile[kKnnTile * 3];
  const int b = blockIdx.x, m = blockIdx.y * blockDim.x + threadIdx.x;
  const bool active = m < M;
  const float* p = points + static_cast<int64_t>(b) * N * 3;
  const float* q = query + (static_cast<int64_t>(b) * M + (active ? m : 0)) * 3;
  const float qx = q[0], qy = q[1], qz = q[2];
  float bd[RECON_KNN_MAX_K];
  int bi[RECON_KNN_MAX_K];
  int count = 0;
  for (int base = 0; base < N; base += kKnnTile) {
    const int n = min(kKnnTile, N - base);
    __syncthreads();  // the previous tile is no longer read
    for (int t = threadIdx.x; t < 3 * n; t += blockDim.x) tile[t] = p[3 * base + t];
    __syncthreads();
    if (!active) continue;
    for (int t = 0; t < n; ++t) {
      const float d = sq_dist(qx, qy, qz, tile[3 * t], tile[3 * t + 1], tile[3 * t + 2]);
      if (count == k && !before(d, bd[k - 1])) continue;
      int pos = count < k ? count++ : k - 1;
      for (; pos > 0 && before(d, bd[pos - 1]); --pos) bd[pos] = bd[pos - 1], bi[pos] = bi[pos - 1];
      bd[pos] = d;
      bi[pos] = base + t;
    }
  }
  if (!active) return;
  int64_t* o = out + (static_cast<int64_t>(b) * M + m) * k;
  for (int r = 0; r < k; ++r) o[r] = bi[r];
}

size_t shared_limit() {
  int dev = 0, optin = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    cudaGetLastError();  // clear: callers then take the global-memory path
    return 0;
  }
  return static_cast<size_t>(optin);
}

bool fps_fits_shared(int64_t N) { return static_cast<size_t>(N) * sizeof(float) + kSharedReserve <= shared_limit(); }

int fps_threads(int64_t N) { return N <= 1024 ? 256 : N <= 8192 ? 512 : 1024; }

}  // namespace

extern "C" {

int64_t recon_fps_workspace_floats(int64_t B, int64_t N) { return fps_fits_shared(N) ? 0 : B * N; }

int recon_fps_launch(const float* points, int64_t B, int64_t N, int64_t npoint, int skip_origin, float* workspace,
                     int64_t* out, void* stream) {
  if (B < 0 || N < 1 || npoint < 0 || npoint > N || N > INT_MAX / 3) return cudaErrorInvalidValue;
  if (B == 0 || npoint == 0) return cudaSuccess;
  const auto s = static_cast<cudaStream_t>(stream);
  const int threads = fps_threads(N);
  if (workspace != nullptr) {  // the caller chose global memory (needed when the cloud does not fit)
    fps_kernel<false><<<static_cast<unsigned>(B), threads, 0, s>>>(points, int(N), int(npoint), skip_origin != 0,
                                                                     workspace, out);
    return cudaGetLastError();
  }
  if (!fps_fits_shared(N)) return cudaErrorInvalidValue;
  const size_t bytes = static_cast<size_t>(N) * sizeof(float);
  if (bytes > kDefaultShared) {
    const cudaError_t e = cudaFuncSetAttribute(fps_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(bytes));
    if (e != cudaSuccess) return e;
  }
  fps_kernel<true><<<static_cast<unsigned>(B), threads, bytes, s>>>(points, int(N), int(npoint), skip_origin != 0,
                                                                      nullptr, out);
  return cudaGetLastError();
}

int recon_knn_launch(const float* points, const float* query, int64_t B, int64_t N, int64_t M, int64_t k,
                     int64_t* out, void* stream) {
  if (B < 0 || M < 0 || k < 1 || k > RECON_KNN_MAX_K || k > N || N > INT_MAX / 3 || M > INT_MAX / 3)
    return cudaErrorInvalidValue;
  if (B == 0 || M == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(B), static_cast<unsigned>((M + kKnnThreads - 1) / kKnnThreads));
  if (grid.y > 65535u) return cudaErrorInvalidValue;
  knn_kernel<<<grid, kKnnThreads, 0, static_cast<cudaStream_t>(stream)>>>(points, query, int(N), int(M), int(k), out);
  return cudaGetLastError();
}

const char* recon_cuda_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // extern "C"
