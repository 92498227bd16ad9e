#include "server/cached_response.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace model_server::server {
namespace {

// Each output's data starts at a multiple of this in the value, so that readers may view it as its
// elements (the value's own bytes come from the heap, aligned at least as much).
constexpr size_t kDataAlignment = 16;

size_t AlignedOffset(size_t offset) {
  return (offset + kDataAlignment - 1) / kDataAlignment * kDataAlignment;
}

template <typename T>
void Append(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(value));
}

void AppendBytes(std::string& out, std::string_view bytes) {
  Append<uint64_t>(out, bytes.size());
  out.append(bytes.data(), bytes.size());
}

// Reads what Append wrote, checking the bounds.
class Reader {
 public:
  explicit Reader(const std::string& value) : value_(value) {}

  template <typename T>
  bool Read(T* out) {
    if (value_.size() - at_ < sizeof(T)) return false;
    std::memcpy(out, value_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return true;
  }
  size_t at() const { return at_; }

 private:
  const std::string& value_;
  size_t at_ = 0;
};

}  // namespace

std::string ResponseCacheKey(std::string_view model, int64_t version, uint64_t owner,
                             const handlers::ModelSignature& signature,
                             const handlers::InferenceRequest& request,
                             std::string_view parameters) {
  size_t bytes = model.size() + parameters.size() + 64;
  for (const handlers::InputTensor& input : request.inputs) bytes += input.data.size() + 64;
  std::string key;
  key.reserve(bytes);
  AppendBytes(key, model);
  Append<int64_t>(key, version);
  Append<uint64_t>(key, owner);
  Append<int64_t>(key, request.rows);
  Append<uint64_t>(key, request.inputs.size());
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    const handlers::InputTensor& input = request.inputs[i];
    AppendBytes(key, i < signature.inputs.size() ? signature.inputs[i].name : std::string());
    Append<uint8_t>(key, i < signature.inputs.size()
                             ? static_cast<uint8_t>(signature.inputs[i].type)
                             : uint8_t{255});
    Append<uint8_t>(key, input.broadcast ? 1 : 0);
    Append<uint64_t>(key, input.shape.size());
    for (const int64_t size : input.shape) Append<int64_t>(key, size);
    AppendBytes(key, input.data);
  }
  AppendBytes(key, parameters);
  return key;
}

void CachedResponseWriter::Add(const std::vector<handlers::OutputTensor>& outputs, bool batches,
                               int64_t request_rows, int64_t batch_row, int64_t task_row,
                               int64_t rows) {
  if (value_.empty()) {
    // The header: each output's type and shape (with the request's rows), then its data.
    std::vector<size_t> sizes;
    Append<uint32_t>(value_, static_cast<uint32_t>(outputs.size()));
    for (const handlers::OutputTensor& output : outputs) {
      handlers::Dims shape = output.shape;
      if (batches && !shape.empty()) shape[0] = request_rows;
      Append<uint8_t>(value_, static_cast<uint8_t>(output.type));
      Append<uint32_t>(value_, static_cast<uint32_t>(shape.size()));
      for (const int64_t size : shape) Append<int64_t>(value_, size);
      const size_t bytes =
          handlers::ElementCount(shape).value_or(0) * handlers::ElementSize(output.type);
      Append<uint64_t>(value_, bytes);
      sizes.push_back(bytes);
    }
    for (const size_t bytes : sizes) {
      data_offsets_.push_back(AlignedOffset(value_.size()));
      value_.resize(data_offsets_.back() + bytes);
    }
  }
  for (size_t i = 0; i < outputs.size() && i < data_offsets_.size(); ++i) {
    const handlers::OutputTensor& output = outputs[i];
    const size_t all_bytes =
        handlers::ElementCount(output.shape).value_or(0) * handlers::ElementSize(output.type);
    char* to = value_.data() + data_offsets_[i];
    if (!batches) {
      if (all_bytes > 0) std::memcpy(to, output.data, all_bytes);
      continue;
    }
    const size_t row_bytes = output.shape.empty() || output.shape[0] <= 0
                                 ? 0
                                 : all_bytes / static_cast<size_t>(output.shape[0]);
    if (row_bytes == 0) continue;  // no elements (and maybe no data pointer)
    std::memcpy(to + task_row * row_bytes, output.data + batch_row * row_bytes, rows * row_bytes);
  }
}

absl::StatusOr<std::vector<handlers::OutputTensor>> ReadCachedResponse(const std::string& value) {
  const auto broken = [] { return absl::InternalError("a response cache value does not read"); };
  Reader reader(value);
  uint32_t count = 0;
  if (!reader.Read(&count)) return broken();
  std::vector<handlers::OutputTensor> outputs(count);
  std::vector<uint64_t> sizes(count);
  for (uint32_t i = 0; i < count; ++i) {
    uint8_t type = 0;
    uint32_t rank = 0;
    if (!reader.Read(&type) || !reader.Read(&rank)) return broken();
    outputs[i].type = static_cast<handlers::DataType>(type);
    outputs[i].shape.resize(rank);
    for (int64_t& size : outputs[i].shape) {
      if (!reader.Read(&size)) return broken();
    }
    if (!reader.Read(&sizes[i])) return broken();
  }
  size_t at = reader.at();
  for (uint32_t i = 0; i < count; ++i) {
    at = AlignedOffset(at);
    if (at > value.size() || value.size() - at < sizes[i]) return broken();
    outputs[i].data = value.data() + at;
    at += sizes[i];
  }
  if (at != value.size()) return broken();
  return outputs;
}

}  // namespace model_server::server
