#include "handlers/model_handler.h"

namespace model_server::handlers {

absl::StatusOr<std::unique_ptr<LoadedModel>> LoadedModel::Load(
    std::unique_ptr<ModelHandler> handler) {
  if (absl::Status initialized = handler->Initialize(); !initialized.ok()) return initialized;
  return std::unique_ptr<LoadedModel>(new LoadedModel(std::move(handler)));
}

}  // namespace model_server::handlers
