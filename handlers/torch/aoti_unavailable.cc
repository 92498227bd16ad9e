// The AOTInductor handler's stand-in for builds against a libtorch without
// AOTIModelPackageLoader (before 2.6, e.g. Debian's 1.13): .pt2 packages are refused, naming
// the build that serves them.

#include <torch/version.h>

#include "absl/strings/str_cat.h"
#include "handlers/torch/aoti_handler.h"

namespace model_server::handlers {
namespace {

class UnavailableHandler final : public ModelHandler {
 public:
  absl::Status Initialize() override { return absl::FailedPreconditionError(AotiUnavailable()); }
  const ModelSignature& signature() const override { return signature_; }
  InitializeTimes initialize_times() const override { return {}; }
  std::vector<char*> PrepareBatch(const std::vector<Dims>&) override { return {}; }
  absl::StatusOr<const std::vector<OutputTensor>*> Run() override {
    return absl::FailedPreconditionError(AotiUnavailable());
  }
  void Cleanup() override {}

 private:
  ModelSignature signature_;
};

}  // namespace

class SharedAotiPackage {};

std::unique_ptr<ModelHandler> MakeAotiHandler(const AotiHandlerOptions&) {
  return std::make_unique<UnavailableHandler>();
}

std::shared_ptr<SharedAotiPackage> MakeSharedAotiPackage(int) { return nullptr; }

std::string AotiUnavailable() {
  return absl::StrCat(
      "this server is built against libtorch ", TORCH_VERSION,
      ", which cannot load one (libtorch >= 2.6 can): serve it with the "
      "libtorch 2.x build (scripts/setup_torch2.sh && scripts/build_torch2.sh, or the CUDA image "
      "docker/Dockerfile.cuda; README.md, \"Exporting a model\")");
}

}  // namespace model_server::handlers
