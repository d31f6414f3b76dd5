// TensorRT IPluginV3 plugins for recon_serve::FarthestPointSample and recon_serve::KNN.
//
// The ONNX parser maps a node it does not know to the plugin creator named like its op type
// (version "1", empty namespace) and hands the node's attributes over as plugin fields, so the
// custom-op graph of `recon-serve export` parses as is. Both plugins run the CUDA launchers of
// recon_serve/ops/cuda (point_ops_cuda.h): float32 [B,N,3] in, int64 indices out, linear format.
// Creators register themselves when the library loads (REGISTER_TENSORRT_PLUGIN): load it before
// parsing or deserialising (ctypes.CDLL(..., RTLD_GLOBAL), LD_PRELOAD, or Triton's
// --backend-config=tensorrt,plugins=...).
#include <NvInferRuntime.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "point_ops_cuda.h"

using namespace nvinfer1;

namespace {

void LogError(const std::string& msg) {
  if (ILogger* logger = getLogger()) logger->log(ILogger::Severity::kERROR, ("recon_serve plugin: " + msg).c_str());
}

// An integer plugin field of any width (the ONNX parser hands INT attributes over as kINT32 or kINT64).
bool ReadInt(const PluginField& f, int64_t* out) {
  if (f.data == nullptr || f.length < 1) return false;
  switch (f.type) {
    case PluginFieldType::kINT8: *out = *static_cast<const int8_t*>(f.data); return true;
    case PluginFieldType::kINT16: *out = *static_cast<const int16_t*>(f.data); return true;
    case PluginFieldType::kINT32: *out = *static_cast<const int32_t*>(f.data); return true;
    case PluginFieldType::kINT64: *out = *static_cast<const int64_t*>(f.data); return true;
    default: return false;
  }
}

// Looks up `name` in fc; returns false (and logs) if it is present but not an integer.
bool FindInt(const PluginFieldCollection* fc, const char* name, int64_t* out, bool* found) {
  *found = false;
  for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
    if (fc->fields[i].name == nullptr || std::strcmp(fc->fields[i].name, name) != 0) continue;
    if (!ReadInt(fc->fields[i], out)) {
      LogError(std::string("field ") + name + " is not an integer");
      return false;
    }
    *found = true;
  }
  return true;
}

// What the two plugins share: one float32 input set, one int64 output, no state on the device.
class PointPlugin : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
 public:
  IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
    switch (type) {
      case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
      case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
      case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
  }
  const char* getPluginVersion() const noexcept override { return "1"; }
  const char* getPluginNamespace() const noexcept override { return ""; }
  int32_t getNbOutputs() const noexcept override { return 1; }
  int32_t getOutputDataTypes(DataType* out, int32_t nbOutputs, const DataType*, int32_t) const noexcept override {
    if (nbOutputs != 1) return -1;
    out[0] = DataType::kINT64;
    return 0;
  }
  bool supportsFormatCombination(int32_t pos, const DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                 int32_t) noexcept override {
    const PluginTensorDesc& d = inOut[pos].desc;
    return d.format == TensorFormat::kLINEAR && d.type == (pos < nbInputs ? DataType::kFLOAT : DataType::kINT64);
  }
  int32_t configurePlugin(const DynamicPluginTensorDesc*, int32_t, const DynamicPluginTensorDesc*,
                          int32_t) noexcept override {
    return 0;
  }
  int32_t onShapeChange(const PluginTensorDesc*, int32_t, const PluginTensorDesc*, int32_t) noexcept override {
    return 0;
  }
  IPluginV3* attachToContext(IPluginResourceContext*) noexcept override { return clone(); }

 protected:
  // Rebuilt by each getFieldsToSerialize call, so they always point at the current members.
  std::vector<PluginField> fields_;
  PluginFieldCollection collection_{};

  PluginFieldCollection const* Collect() {
    collection_.nbFields = static_cast<int32_t>(fields_.size());
    collection_.fields = fields_.data();
    return &collection_;
  }
};

class FpsPlugin : public PointPlugin {
 public:
  static constexpr const char* kName = "FarthestPointSample";
  FpsPlugin(int32_t npoint, int32_t skip_origin) : npoint_(npoint), skip_origin_(skip_origin) {}

  const char* getPluginName() const noexcept override { return kName; }
  IPluginV3* clone() noexcept override { return new FpsPlugin(npoint_, skip_origin_); }

  int32_t getOutputShapes(const DimsExprs* inputs, int32_t nbInputs, const DimsExprs*, int32_t, DimsExprs* outputs,
                          int32_t nbOutputs, IExprBuilder& expr) noexcept override {
    if (nbInputs != 1 || nbOutputs != 1 || inputs[0].nbDims != 3) return -1;
    outputs[0].nbDims = 2;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = expr.constant(npoint_);
    return 0;
  }

  size_t getWorkspaceSize(const DynamicPluginTensorDesc* in, int32_t, const DynamicPluginTensorDesc*,
                          int32_t) const noexcept override {
    return static_cast<size_t>(recon_fps_workspace_floats(in[0].max.d[0], in[0].max.d[1])) * sizeof(float);
  }

  int32_t enqueue(const PluginTensorDesc* in, const PluginTensorDesc*, const void* const* inputs, void* const* outputs,
                  void* workspace, cudaStream_t stream) noexcept override {
    const int64_t B = in[0].dims.d[0], N = in[0].dims.d[1];
    if (npoint_ > N) {
      LogError("FarthestPointSample: npoint=" + std::to_string(npoint_) + " > N=" + std::to_string(N));
      return -1;
    }
    float* ws = recon_fps_workspace_floats(B, N) > 0 ? static_cast<float*>(workspace) : nullptr;
    const int err = recon_fps_launch(static_cast<const float*>(inputs[0]), B, N, npoint_, skip_origin_, ws,
                                     static_cast<int64_t*>(outputs[0]), stream);
    if (err) LogError(std::string("FarthestPointSample: ") + recon_cuda_error_string(err));
    return err;
  }

  PluginFieldCollection const* getFieldsToSerialize() noexcept override {
    fields_ = {PluginField("npoint", &npoint_, PluginFieldType::kINT32, 1),
               PluginField("skip_origin", &skip_origin_, PluginFieldType::kINT32, 1)};
    return Collect();
  }

 private:
  int32_t npoint_, skip_origin_;
};

class KnnPlugin : public PointPlugin {
 public:
  static constexpr const char* kName = "KNN";
  explicit KnnPlugin(int32_t k) : k_(k) {}

  const char* getPluginName() const noexcept override { return kName; }
  IPluginV3* clone() noexcept override { return new KnnPlugin(k_); }

  int32_t getOutputShapes(const DimsExprs* inputs, int32_t nbInputs, const DimsExprs*, int32_t, DimsExprs* outputs,
                          int32_t nbOutputs, IExprBuilder& expr) noexcept override {
    if (nbInputs != 2 || nbOutputs != 1 || inputs[0].nbDims != 3 || inputs[1].nbDims != 3) return -1;
    outputs[0].nbDims = 3;
    outputs[0].d[0] = inputs[1].d[0];
    outputs[0].d[1] = inputs[1].d[1];
    outputs[0].d[2] = expr.constant(k_);
    return 0;
  }

  int32_t enqueue(const PluginTensorDesc* in, const PluginTensorDesc*, const void* const* inputs, void* const* outputs,
                  void*, cudaStream_t stream) noexcept override {
    const int64_t B = in[0].dims.d[0], N = in[0].dims.d[1], M = in[1].dims.d[1];
    if (in[1].dims.d[0] != B || k_ > N) {
      LogError("KNN: k=" + std::to_string(k_) + ", N=" + std::to_string(N) + ", or the batch sizes differ");
      return -1;
    }
    const int err = recon_knn_launch(static_cast<const float*>(inputs[0]), static_cast<const float*>(inputs[1]), B, N,
                                     M, k_, static_cast<int64_t*>(outputs[0]), stream);
    if (err) LogError(std::string("KNN: ") + recon_cuda_error_string(err));
    return err;
  }

  PluginFieldCollection const* getFieldsToSerialize() noexcept override {
    fields_ = {PluginField("k", &k_, PluginFieldType::kINT32, 1)};
    return Collect();
  }

 private:
  int32_t k_;
};

// One creator per op; `Make` validates the fields and builds the plugin (nullptr + a log line if bad).
template <class Plugin>
class PointCreator : public IPluginCreatorV3One {
 public:
  PointCreator() {
    for (const char* n : Plugin::FieldNames()) names_.emplace_back(n, nullptr, PluginFieldType::kINT32, 1);
    collection_.nbFields = static_cast<int32_t>(names_.size());
    collection_.fields = names_.data();
  }
  IPluginV3* createPlugin(const char*, const PluginFieldCollection* fc, TensorRTPhase) noexcept override {
    try {
      return Plugin::Make(fc);
    } catch (const std::exception& e) {
      LogError(e.what());
      return nullptr;
    }
  }
  PluginFieldCollection const* getFieldNames() noexcept override { return &collection_; }
  const char* getPluginName() const noexcept override { return Plugin::kName; }
  const char* getPluginVersion() const noexcept override { return "1"; }
  const char* getPluginNamespace() const noexcept override { return ""; }

 private:
  std::vector<PluginField> names_;
  PluginFieldCollection collection_{};
};

struct FpsSpec {
  static constexpr const char* kName = FpsPlugin::kName;
  static std::vector<const char*> FieldNames() { return {"npoint", "skip_origin"}; }
  static IPluginV3* Make(const PluginFieldCollection* fc) {
    int64_t npoint = 0, skip = 0;
    bool has_npoint = false, has_skip = false;
    if (!FindInt(fc, "npoint", &npoint, &has_npoint) || !FindInt(fc, "skip_origin", &skip, &has_skip)) return nullptr;
    if (!has_npoint || npoint < 1 || npoint > INT32_MAX) {
      LogError("FarthestPointSample needs an integer attribute npoint >= 1");
      return nullptr;
    }
    return new FpsPlugin(static_cast<int32_t>(npoint), skip != 0 ? 1 : 0);
  }
};

struct KnnSpec {
  static constexpr const char* kName = KnnPlugin::kName;
  static std::vector<const char*> FieldNames() { return {"k"}; }
  static IPluginV3* Make(const PluginFieldCollection* fc) {
    int64_t k = 0;
    bool has_k = false;
    if (!FindInt(fc, "k", &k, &has_k)) return nullptr;
    if (!has_k || k < 1 || k > RECON_KNN_MAX_K) {
      LogError("KNN needs an integer attribute k in [1, " + std::to_string(RECON_KNN_MAX_K) + "]");
      return nullptr;
    }
    return new KnnPlugin(static_cast<int32_t>(k));
  }
};

using FpsCreator = PointCreator<FpsSpec>;
using KnnCreator = PointCreator<KnnSpec>;

}  // namespace

REGISTER_TENSORRT_PLUGIN(FpsCreator);
REGISTER_TENSORRT_PLUGIN(KnnCreator);
