#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace model_server::server {

// OK when no two of `names` are equal; else INVALID_ARGUMENT naming the first name given twice.
// The one check that the models served together have distinct names: the command line runs it
// before loading any model, ModelServer::Start for whatever its caller passes.
inline absl::Status CheckDistinctModelNames(const std::vector<std::string>& names) {
  for (size_t i = 0; i < names.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (names[i] == names[j]) {
        return absl::InvalidArgumentError(
            absl::StrCat("model name \"", names[i], "\" is given twice"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace model_server::server
