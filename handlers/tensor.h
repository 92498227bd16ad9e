#pragma once

// The vocabulary of general tensors: data types (with Triton's and the Open Inference Protocol's
// names), dimensions and the description of one named model input or output. Header-only and
// free of torch and gRPC: the repository, the protocols, the handlers and the server all read it.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/inlined_vector.h"

namespace model_server::handlers {

// The element types a tensor may have on the wire and in a model.
enum class DataType : uint8_t {
  kBool,
  kUint8,
  kInt8,
  kInt16,
  kInt32,
  kInt64,
  kFp16,
  kBf16,
  kFp32,
  kFp64,
};

inline constexpr DataType kAllDataTypes[] = {
    DataType::kBool,  DataType::kUint8, DataType::kInt8, DataType::kInt16, DataType::kInt32,
    DataType::kInt64, DataType::kFp16,  DataType::kBf16, DataType::kFp32,  DataType::kFp64,
};

// Bytes per element.
constexpr size_t ElementSize(DataType type) {
  switch (type) {
    case DataType::kBool:
    case DataType::kUint8:
    case DataType::kInt8:
      return 1;
    case DataType::kInt16:
    case DataType::kFp16:
    case DataType::kBf16:
      return 2;
    case DataType::kInt32:
    case DataType::kFp32:
      return 4;
    case DataType::kInt64:
    case DataType::kFp64:
      return 8;
  }
  return 0;
}

// The Open Inference Protocol's name ("FP32", "INT64", "BOOL", ...).
constexpr const char* WireName(DataType type) {
  switch (type) {
    case DataType::kBool:
      return "BOOL";
    case DataType::kUint8:
      return "UINT8";
    case DataType::kInt8:
      return "INT8";
    case DataType::kInt16:
      return "INT16";
    case DataType::kInt32:
      return "INT32";
    case DataType::kInt64:
      return "INT64";
    case DataType::kFp16:
      return "FP16";
    case DataType::kBf16:
      return "BF16";
    case DataType::kFp32:
      return "FP32";
    case DataType::kFp64:
      return "FP64";
  }
  return "";
}

// The type whose Open Inference Protocol name is `name`; nullopt for any other text.
constexpr std::optional<DataType> FromWireName(std::string_view name) {
  for (const DataType type : kAllDataTypes) {
    if (std::string_view(WireName(type)) == name) return type;
  }
  return std::nullopt;
}

// Sizes of a tensor's dimensions; in a TensorSpec, -1 stands for any size.
using Dims = absl::InlinedVector<int64_t, 4>;

inline constexpr int64_t kAnySize = -1;

// Elements a shape holds; nullopt when a dimension is negative or the product passes `limit`.
inline std::optional<int64_t> ElementCount(const Dims& shape, int64_t limit = int64_t{1} << 50) {
  bool empty = false;  // a size of 0 anywhere: no elements, however large the other sizes
  for (const int64_t size : shape) {
    if (size < 0) return std::nullopt;
    empty = empty || size == 0;
  }
  if (empty) return 0;
  int64_t count = 1;
  for (const int64_t size : shape) {
    if (count > limit / size) return std::nullopt;
    count *= size;
  }
  return count;
}

// "[2, 3, -1]".
inline std::string DimsText(const Dims& dims) {
  std::string text = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(dims[i]);
  }
  return text + "]";
}

// One named input or output of a model.
struct TensorSpec {
  std::string name;
  DataType type = DataType::kFp32;
  // The shape of one request's tensor without the batch dimension when the model batches
  // (ModelSignature::max_batch_size > 0), else the whole shape; kAnySize where any size goes.
  Dims dims;
  // The shape the model receives instead, when it differs (Triton's `reshape`): same element
  // count, batch dimension excluded likewise. Empty: `dims` as sent. Only for inputs and outputs
  // whose `reshaped` flag is set; an empty reshape of a one-element tensor is also valid.
  Dims reshape;
  bool reshaped = false;
  // An input a request may leave out; it then gets `default_value` (one element per position of
  // `dims`, repeated for each row). Inputs only.
  bool optional = false;
  std::optional<std::string> default_value;  // raw little-endian bytes of one row
};

inline TensorSpec MakeSpec(std::string name, DataType type, Dims dims) {
  TensorSpec spec;
  spec.name = std::move(name);
  spec.type = type;
  spec.dims = std::move(dims);
  return spec;
}

// "\"x\" FP32 [n, 3]": the spec's name, type and shape, with n for the batch dimension when
// `batches`.
inline std::string SpecText(const TensorSpec& spec, bool batches) {
  std::string dims = DimsText(spec.dims);
  if (batches) dims.insert(1, spec.dims.empty() ? "n" : "n, ");
  return "\"" + spec.name + "\" " + WireName(spec.type) + " " + dims;
}

}  // namespace model_server::handlers
