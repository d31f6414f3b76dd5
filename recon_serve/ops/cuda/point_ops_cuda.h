// C ABI of the CUDA FPS / kNN launchers (point_ops_cuda.cu), shared by the torch binding and the
// TensorRT plugins. Torch-free and CUDA-header-free on purpose: the stream is a plain pointer
// (a cudaStream_t), so binding.cpp builds against torch/extension.h alone.
//
// Semantics are those of recon_serve/geometry/group.py (the torch reference):
//  * distances: (dx*dx + dy*dy) + dz*dz in float, rounded step by step (no FMA);
//  * FPS starts at index 0 and takes the first maximum (NaN counts as the maximum); with
//    skip_origin a point with |p|^2 <= 1e-3 keeps distance -1, so it is never a later centre;
//  * kNN: the k smallest distances ascending, ties (and NaNs, which sort last) by lower index.
// Every launcher returns a cudaError_t as int (0 = success) and launches on `stream`.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RECON_KNN_MAX_K 64

// Float elements of global scratch recon_fps_launch needs for B clouds of N points on the current
// device: 0 when each cloud's distances fit in shared memory.
int64_t recon_fps_workspace_floats(int64_t B, int64_t N);

// points [B,N,3] -> out [B,npoint] int64. workspace: recon_fps_workspace_floats(B, N) floats (or NULL if 0).
int recon_fps_launch(const float* points, int64_t B, int64_t N, int64_t npoint, int skip_origin,
                     float* workspace, int64_t* out, void* stream);

// points [B,N,3], query [B,M,3] -> out [B,M,k] int64; 1 <= k <= min(N, RECON_KNN_MAX_K).
int recon_knn_launch(const float* points, const float* query, int64_t B, int64_t N, int64_t M, int64_t k,
                     int64_t* out, void* stream);

// cudaGetErrorString, so callers need no CUDA headers.
const char* recon_cuda_error_string(int code);

#ifdef __cplusplus
}
#endif
