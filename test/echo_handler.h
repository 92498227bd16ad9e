#pragma once

// A model without torch for tests and fuzzers of general tensors: it gives its inputs back.
// Output i is input i, of the same datatype and shape, named "out_" + the input's name, so every
// request's rows of every input must come back to it unchanged, whatever the datatypes, ranks,
// broadcast inputs and batch pieces. An INT64 element equal to kEchoPoison anywhere in a batch
// makes the forward pass fail, as a model's runtime check would.

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "handlers/model_handler.h"

namespace model_server::testing_support {

inline constexpr int64_t kEchoPoison = 666;

class EchoHandler final : public handlers::ModelHandler {
 public:
  // `signature`'s inputs and max_batch_size; its outputs are replaced by the echoes.
  explicit EchoHandler(handlers::ModelSignature signature) : signature_(std::move(signature)) {
    signature_.outputs.clear();
    for (const handlers::TensorSpec& input : signature_.inputs) {
      signature_.outputs.push_back(handlers::MakeSpec("out_" + input.name, input.type, input.dims));
    }
    buffers_.resize(signature_.inputs.size());
    outputs_.resize(signature_.inputs.size());
  }

  absl::Status Initialize() override { return absl::OkStatus(); }
  const handlers::ModelSignature& signature() const override { return signature_; }
  handlers::InitializeTimes initialize_times() const override { return {}; }

  // A buffer of no bytes is null, as an empty torch tensor's data_ptr() may be.
  std::vector<char*> PrepareBatch(const std::vector<handlers::Dims>& shapes) override {
    shapes_ = shapes;
    std::vector<char*> pointers;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const size_t bytes = static_cast<size_t>(*handlers::ElementCount(shapes[i])) *
                           handlers::ElementSize(signature_.inputs[i].type);
      buffers_[i].assign(bytes, '\0');
      pointers.push_back(bytes == 0 ? nullptr : buffers_[i].data());
    }
    return pointers;
  }

  absl::StatusOr<const std::vector<handlers::OutputTensor>*> Run() override {
    batch_rows_.push_back(signature_.batches() ? shapes_[0][0] : 1);
    for (size_t i = 0; i < shapes_.size(); ++i) {
      if (signature_.inputs[i].type != handlers::DataType::kInt64) continue;
      for (size_t at = 0; at + sizeof(int64_t) <= buffers_[i].size(); at += sizeof(int64_t)) {
        int64_t value;
        std::memcpy(&value, buffers_[i].data() + at, sizeof(value));
        if (value == kEchoPoison) {
          return absl::InternalError(absl::StrCat("model forward failed: poison in input \"",
                                                  signature_.inputs[i].name, "\""));
        }
      }
    }
    for (size_t i = 0; i < shapes_.size(); ++i) {
      outputs_[i].type = signature_.inputs[i].type;
      outputs_[i].shape = shapes_[i];
      outputs_[i].data = buffers_[i].empty() ? nullptr : buffers_[i].data();
    }
    return &outputs_;
  }

  void Cleanup() override {}

  // Rows of each forward pass so far (1 for a model without a batch dimension).
  const std::vector<int64_t>& batch_rows() const { return batch_rows_; }

 private:
  handlers::ModelSignature signature_;
  std::vector<handlers::Dims> shapes_;
  std::vector<std::string> buffers_;
  std::vector<handlers::OutputTensor> outputs_;
  std::vector<int64_t> batch_rows_;
};

}  // namespace model_server::testing_support
