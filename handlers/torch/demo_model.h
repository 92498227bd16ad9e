#pragma once

#include <torch/script.h>

#include <cstdint>

namespace model_server::handlers {

// The built-in demo model (see ExportDemoModel). Its weights are a fixed function of their
// position, so every build serves the same model.
torch::jit::Module MakeDemoModel(int64_t hidden);

}  // namespace model_server::handlers
