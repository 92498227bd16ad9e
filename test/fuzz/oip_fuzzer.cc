// libFuzzer target: protocol::oip::DecodeInferRequest on ModelInferRequests built from the
// fuzzer's bytes, against seven model signatures, then the accepted requests through the batch
// queue and the batch executor, and their outputs through the reply and back.
//
// The models: three of the seed's shape (testing_support::FakeHandler's: x FP32 [n, 3], params
// FP32 [n, 2] optional with defaults, y FP32 [n, 2]; the same without defaults; one without
// parameters) and four general ones (see Models()): several inputs of every datatype, INT64,
// BOOL, FP16 and BF16 (raw only), INT8 and INT16 (typed contents narrowed), ranks 1 to 4 with
// variable (-1) dimensions, optional inputs with defaults, a model with max_batch_size 0, one
// whose seed parameters input comes before its columns; max_batch_size 2 to 4, so requests of
// more rows run in pieces.
//
// The bytes choose the requests (FuzzedDataProvider): a target model, then one to three requests
// built for it, each mostly right and sometimes wrong in one place: an input left out or given
// twice or unknown, inputs out of order, another datatype, rows of 0, 1 (one row of parameters
// for all), one too many or huge, a dimension changed, dropped or added, data one element short
// or over or an odd byte, both raw and typed contents or the wrong typed field, typed values that
// do not fit INT8/INT16/UINT8, BOOL bytes other than 0 and 1, raw_input_contents entries one
// short or over, requested outputs (unknown, repeated) and binary_data parameters of any type;
// the elements any bits (INT64 ones sometimes the echo model's poison, FP32 ones the fake
// model's). Mutating serialized protobuf bytes instead seldom keeps a shape and its data in step,
// which is where the decoder's checks are. Every request is decoded against every model.
//
// Checks, beyond "no crash, leak or UB":
//  - A refusal is INVALID_ARGUMENT with a message.
//  - An accepted request keeps the contract the batch thread relies on without checking: 1 <= rows
//    <= max_rows (1 for a model without a batch dimension); one InputTensor per input of the
//    signature; each shape of the spec's rank, with its fixed dimensions, no negative size, a
//    batch dimension equal to rows unless broadcast (then 1; only the seed parameters input and
//    defaults broadcast, and only for a model that batches); data of elements * element size
//    bytes; BOOL bytes 0 or 1. An independent oracle: a given input has the request's shape and
//    its data is the request's raw bytes, read in place (pointing into the request), or its typed
//    values converted here; an input left out is optional and holds its default; the outputs are
//    the ones named, in order (all when none is named), in the form the parameters ask.
//  - Round trip: the decoded inputs re-encoded with oip::EncodeInferRequest (raw, and typed where
//    no input is FP16 or BF16) decode to the same shapes and bytes.
//  - The executor, for the general models (testing_support::EchoHandler: output i = input i):
//    the accepted requests, each of several rows followed by two batch-mates of the same
//    BatchKey re-encoded from it (its last row alone; its rows in reverse order), go through
//    batching::BatchQueue (max_batch_rows the model's max_batch_size, 1 without a batch dimension)
//    and handlers::BatchExecutor; every task ends exactly once, receives its rows in order, in as
//    many calls as pieces it ran in, and gets exactly its own rows of every input back, byte for
//    byte (broadcast inputs once per row); a task with a poisoned row fails with INTERNAL after
//    exactly the pieces before it, and only such tasks fail; each forward pass has the rows the
//    executor should assemble. Its requested outputs, encoded with oip::EncodeInferResponse raw
//    and typed (where the types allow), read back with oip::DecodeTensor as the same datatype,
//    shape and bytes.
//  - The executor, for the fake model: each accepted request shares one forward pass with a
//    seed-style request (one parameter vector for all rows); every row gets the fake model's
//    value for its own x and its own parameter vector, bit for bit (a poisoned request fails
//    alone, with INTERNAL); y encoded raw and typed reads back bit for bit.

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "batching/batch_queue.h"
#include "handlers/batch_executor.h"
#include "handlers/signature.h"
#include "protocol/oip.h"
#include "test/echo_handler.h"
#include "test/fake_handler.h"
#include "test/fuzz/fuzz_check.h"

namespace {

namespace batching = model_server::batching;
namespace handlers = model_server::handlers;
namespace oip = model_server::protocol::oip;
namespace testing_support = model_server::testing_support;
using handlers::DataType;
using handlers::Dims;
using handlers::InferenceRequest;
using handlers::InputTensor;
using handlers::ModelSignature;
using handlers::OutputTensor;
using handlers::TensorSpec;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

struct Model {
  ModelSignature signature;
  int64_t max_rows = 0;
  // Runs on an EchoHandler (the general models); of the others only the first, FakeHandler's
  // own, runs (on a FakeHandler).
  bool echo = false;
};

template <typename T>
std::string Bytes(std::initializer_list<T> values) {
  return std::string(reinterpret_cast<const char*>(values.begin()), values.size() * sizeof(T));
}

TensorSpec Spec(std::string name, DataType type, Dims dims) {
  return handlers::MakeSpec(std::move(name), type, std::move(dims));
}

TensorSpec OptionalSpec(std::string name, DataType type, Dims dims, std::string default_row) {
  TensorSpec spec = Spec(std::move(name), type, std::move(dims));
  spec.optional = true;
  spec.default_value = std::move(default_row);
  return spec;
}

// A general model: the echo of `inputs`.
Model Echo(std::vector<TensorSpec> inputs, int64_t max_batch_size, int64_t max_rows,
           std::optional<handlers::SeedSignature> seed = std::nullopt) {
  ModelSignature signature;
  signature.inputs = std::move(inputs);
  signature.max_batch_size = max_batch_size;
  signature.seed = std::move(seed);
  return {testing_support::EchoHandler(std::move(signature)).signature(), max_rows, true};
}

std::vector<Model> Models() {
  std::vector<Model> models;
  models.push_back({testing_support::FakeHandler().signature(), 4096});
  handlers::SeedSignature no_defaults;  // params required
  no_defaults.num_inputs = 3;
  no_defaults.num_outputs = 2;
  no_defaults.num_params = 2;
  models.push_back({handlers::SeedModelSignature(no_defaults, 4096), 4096});
  handlers::SeedSignature no_params;
  no_params.num_inputs = 3;
  no_params.num_outputs = 1;
  models.push_back({handlers::SeedModelSignature(no_params, 4096), 4096});

  // Every kind of tensor a model takes, ranks 1 to 4 with the batch dimension.
  models.push_back(Echo({Spec("image", DataType::kFp32, {2, -1, -1}),
                         Spec("ids", DataType::kInt64, {-1}), Spec("mask", DataType::kBool, {3}),
                         Spec("half", DataType::kFp16, {2}), Spec("small", DataType::kInt8, {}),
                         OptionalSpec("opt", DataType::kInt32, {2}, Bytes<int32_t>({7, -7}))},
                        /*max_batch_size=*/4, /*max_rows=*/16));
  // Raw-only BF16, unsigned and 16-bit integers, an FP64 default holding -infinity.
  models.push_back(
      Echo({Spec("bf", DataType::kBf16, {-1, 2}), Spec("u8", DataType::kUint8, {-1, -1, -1}),
            Spec("i16", DataType::kInt16, {1}),
            OptionalSpec("f64", DataType::kFp64, {2},
                         Bytes<double>({0.5, -std::numeric_limits<double>::infinity()}))},
           /*max_batch_size=*/2, /*max_rows=*/5));
  // No batch dimension: the shapes are all of it, ranks 1 to 4.
  models.push_back(
      Echo({Spec("grid", DataType::kFp32, {-1, 3}), Spec("cube", DataType::kInt64, {-1, -1, -1, 2}),
            Spec("i8", DataType::kInt8, {-1}),
            OptionalSpec("flag", DataType::kBool, {1}, Bytes<char>({1}))},
           /*max_batch_size=*/0, /*max_rows=*/16));
  // The seed mapping through other indices: parameters first (decoded before the rows are known);
  // an optional input without a default (a config may declare one): refused when left out.
  handlers::SeedSignature seed;
  seed.columns_input = 1;
  seed.params_input = 0;
  seed.output = 1;
  seed.num_inputs = 3;
  seed.num_outputs = 3;
  seed.num_params = 2;
  seed.default_params = {0.25f, -1};
  TensorSpec no_default = Spec("mask", DataType::kBool, {-1});
  no_default.optional = true;
  models.push_back(
      Echo({OptionalSpec("params", DataType::kFp32, {2}, Bytes<float>({0.25f, -1})),
            Spec("x", DataType::kFp32, {3}),
            OptionalSpec("ids", DataType::kInt64, {2}, Bytes<int64_t>({5, int64_t{1} << 62})),
            no_default},
           /*max_batch_size=*/3, /*max_rows=*/8, seed));
  return models;
}

// --- Building requests ---

// True about once in 16; false once the bytes run out.
bool Rare(FuzzedDataProvider& fuzz) { return fuzz.ConsumeIntegralInRange(0, 15) == 15; }

// Raw little-endian elements of `type`.
std::string Elements(FuzzedDataProvider& fuzz, DataType type, int64_t count) {
  std::string bytes;
  for (int64_t i = 0; i < count; ++i) {
    if (type == DataType::kBool) {
      bytes.push_back(Rare(fuzz) ? fuzz.ConsumeIntegral<char>()
                                 : static_cast<char>(fuzz.ConsumeBool()));
    } else if (type == DataType::kInt64) {
      const int64_t value = fuzz.ConsumeIntegralInRange(0, 63) == 63
                                ? testing_support::kEchoPoison
                                : fuzz.ConsumeIntegral<int64_t>();
      bytes.append(reinterpret_cast<const char*>(&value), sizeof(value));
    } else if (type == DataType::kFp32 && fuzz.ConsumeIntegralInRange(0, 63) == 63) {
      bytes.append(reinterpret_cast<const char*>(&testing_support::kPoison), sizeof(float));
    } else {
      for (size_t b = 0; b < handlers::ElementSize(type); ++b) {
        bytes.push_back(fuzz.ConsumeIntegral<char>());
      }
    }
  }
  return bytes;
}

template <typename T>
T Element(const std::string& bytes, size_t i) {
  T value;
  std::memcpy(&value, bytes.data() + i * sizeof(T), sizeof(T));
  return value;
}

// The elements in their typed-contents field; integers sometimes beyond their datatype's range.
void AddTyped(FuzzedDataProvider& fuzz, DataType type, const std::string& bytes,
              inference::InferTensorContents* contents) {
  const size_t count = bytes.size() / std::max<size_t>(1, handlers::ElementSize(type));
  const auto beyond = [&](int64_t value) -> int64_t {
    return Rare(fuzz) ? fuzz.PickValueInArray<int64_t>({128, -129, 256, -1, 40000, INT32_MIN})
                      : value;
  };
  for (size_t i = 0; i < count; ++i) {
    switch (type) {
      case DataType::kBool:
        contents->add_bool_contents(bytes[i] != 0);
        break;
      case DataType::kInt8:
        contents->add_int_contents(static_cast<int32_t>(beyond(Element<int8_t>(bytes, i))));
        break;
      case DataType::kInt16:
        contents->add_int_contents(static_cast<int32_t>(beyond(Element<int16_t>(bytes, i))));
        break;
      case DataType::kInt32:
        contents->add_int_contents(Element<int32_t>(bytes, i));
        break;
      case DataType::kUint8:
        contents->add_uint_contents(static_cast<uint32_t>(beyond(Element<uint8_t>(bytes, i))));
        break;
      case DataType::kInt64:
        contents->add_int64_contents(Element<int64_t>(bytes, i));
        break;
      case DataType::kFp32:
        contents->add_fp32_contents(Element<float>(bytes, i));
        break;
      case DataType::kFp64:
        contents->add_fp64_contents(Element<double>(bytes, i));
        break;
      case DataType::kFp16:
      case DataType::kBf16:
        if (i == 0 && fuzz.ConsumeBool()) contents->add_fp32_contents(1);  // no field is right
        break;
    }
  }
}

// A value of any type for a parameter that must be a bool.
void SetParameter(FuzzedDataProvider& fuzz, inference::InferParameter* parameter) {
  switch (fuzz.ConsumeIntegralInRange(0, 3)) {
    case 0:
      parameter->set_int64_param(fuzz.ConsumeIntegral<int64_t>());
      break;
    case 1:
      parameter->set_string_param("false");
      break;
    default:
      parameter->set_bool_param(fuzz.ConsumeBool());
  }
}

bool MayBroadcast(const ModelSignature& signature, size_t input) {
  return signature.seed && signature.seed->params_input == input;
}

// Input `index` of `model`, mostly as the model takes it: `rows` rows, the variable dimensions
// `sizes`.
void AddInput(FuzzedDataProvider& fuzz, const Model& model, size_t index, int64_t rows,
              const Dims& sizes, bool raw, ModelInferRequest& request) {
  const ModelSignature& signature = model.signature;
  const TensorSpec& spec = signature.inputs[index];
  ModelInferRequest::InferInputTensor* tensor = request.add_inputs();
  tensor->set_name(Rare(fuzz) ? fuzz.PickValueInArray({"", "X", "x", "params", "ids", "out_x"})
                              : spec.name);
  DataType type = spec.type;
  if (Rare(fuzz)) {
    const size_t pick = fuzz.ConsumeIntegralInRange<size_t>(0, std::size(handlers::kAllDataTypes));
    if (pick < std::size(handlers::kAllDataTypes)) {
      type = handlers::kAllDataTypes[pick];
      tensor->set_datatype(handlers::WireName(type));
    } else {
      tensor->set_datatype(fuzz.PickValueInArray({"", "FP8", "fp32", "STRING"}));
    }
  } else {
    tensor->set_datatype(handlers::WireName(type));
  }
  Dims shape;
  if (signature.batches()) {
    int64_t lead = MayBroadcast(signature, index) && fuzz.ConsumeBool() ? 1 : rows;
    if (Rare(fuzz)) {
      lead = fuzz.PickValueInArray<int64_t>(
          {0, -1, 1, rows + 1, model.max_rows + 1, int64_t{1} << 40, INT64_MAX, INT64_MIN});
    }
    shape.push_back(lead);
  }
  for (size_t d = 0; d < spec.dims.size(); ++d) {
    int64_t size = spec.dims[d] == handlers::kAnySize ? sizes[d] : spec.dims[d];
    if (Rare(fuzz)) {
      size = fuzz.PickValueInArray<int64_t>(
          {0, 1, size + 1, -1, 1 << 20, int64_t{1} << 40, INT64_MAX, INT64_MIN});
    }
    shape.push_back(size);
  }
  if (!shape.empty() && Rare(fuzz)) shape.pop_back();
  if (Rare(fuzz)) shape.push_back(1);
  for (const int64_t size : shape) tensor->add_shape(size);

  // About the shape's number of elements (capped), of the datatype's size.
  const std::optional<int64_t> elements = handlers::ElementCount(shape, 4096);
  int64_t count = elements ? *elements : fuzz.ConsumeIntegralInRange(0, 8);
  if (Rare(fuzz)) count = std::max<int64_t>(0, count + fuzz.PickValueInArray({-1, 1}));
  std::string bytes = Elements(fuzz, type, count);
  if (raw) {
    if (Rare(fuzz)) bytes.push_back('\0');
    if (Rare(fuzz)) tensor->mutable_contents()->add_fp32_contents(1);
    *request.add_raw_input_contents() = std::move(bytes);
  } else {
    inference::InferTensorContents* contents = tensor->mutable_contents();
    if (Rare(fuzz)) {
      contents->add_fp64_contents(1);
    } else if (Rare(fuzz)) {
      contents->add_int_contents(1);
    }
    AddTyped(fuzz, type, bytes, contents);
  }
}

ModelInferRequest BuildRequest(FuzzedDataProvider& fuzz, const Model& model, int64_t rows,
                               const std::vector<Dims>& sizes) {
  const ModelSignature& signature = model.signature;
  ModelInferRequest request;
  request.set_model_name("m");
  const bool raw = fuzz.ConsumeBool();
  for (size_t i = 0; i < signature.inputs.size(); ++i) {
    const bool leave_out = signature.inputs[i].optional ? fuzz.ConsumeBool() : Rare(fuzz);
    if (!leave_out) AddInput(fuzz, model, i, rows, sizes[i], raw, request);
  }
  if (Rare(fuzz)) {  // an input twice, or one the model does not take
    const size_t i = fuzz.ConsumeIntegralInRange<size_t>(0, signature.inputs.size() - 1);
    AddInput(fuzz, model, i, rows, sizes[i], raw, request);
  }
  if (request.inputs_size() > 1 && Rare(fuzz)) {  // another order
    const int a = fuzz.ConsumeIntegralInRange(0, request.inputs_size() - 1);
    const int b = fuzz.ConsumeIntegralInRange(0, request.inputs_size() - 1);
    request.mutable_inputs()->SwapElements(a, b);
    if (raw) request.mutable_raw_input_contents()->SwapElements(a, b);
  }
  if (raw && Rare(fuzz)) request.add_raw_input_contents();
  if (raw && request.inputs_size() > 0 && Rare(fuzz)) {
    request.mutable_raw_input_contents()->RemoveLast();
  }
  const int outputs = fuzz.PickValueInArray({0, 0, 1, 1, 2, 3});
  for (int o = 0; o < outputs; ++o) {
    ModelInferRequest::InferRequestedOutputTensor* output = request.add_outputs();
    if (Rare(fuzz)) {
      output->set_name(fuzz.PickValueInArray({"", "x", "z"}));
    } else {
      const size_t pick = fuzz.ConsumeIntegralInRange<size_t>(0, signature.outputs.size() - 1);
      output->set_name(signature.outputs[pick].name);
    }
    if (fuzz.ConsumeBool()) SetParameter(fuzz, &(*output->mutable_parameters())["binary_data"]);
  }
  if (fuzz.ConsumeBool()) {
    SetParameter(fuzz, &(*request.mutable_parameters())["binary_data_output"]);
  }
  return request;
}

// --- Checks of a decoded request ---

// The index of the request's input `name`; -1 when it has none.
int Given(const ModelInferRequest& request, const std::string& name) {
  for (int i = 0; i < request.inputs_size(); ++i) {
    if (request.inputs(i).name() == name) return i;
  }
  return -1;
}

template <typename T, typename Values>
void AppendAs(const Values& values, int64_t low, int64_t high, std::string& out) {
  for (const auto value : values) {
    FUZZ_CHECK(static_cast<int64_t>(value) >= low && static_cast<int64_t>(value) <= high);
    const T element = static_cast<T>(value);
    out.append(reinterpret_cast<const char*>(&element), sizeof(element));
  }
}

// The bytes typed contents of `type` stand for: the oracle of the decoder's conversion.
std::string TypedBytes(const inference::InferTensorContents& contents, DataType type) {
  std::string out;
  switch (type) {
    case DataType::kBool:
      for (const bool value : contents.bool_contents()) out.push_back(value ? 1 : 0);
      break;
    case DataType::kInt8:
      AppendAs<int8_t>(contents.int_contents(), INT8_MIN, INT8_MAX, out);
      break;
    case DataType::kInt16:
      AppendAs<int16_t>(contents.int_contents(), INT16_MIN, INT16_MAX, out);
      break;
    case DataType::kInt32:
      AppendAs<int32_t>(contents.int_contents(), INT32_MIN, INT32_MAX, out);
      break;
    case DataType::kUint8:
      AppendAs<uint8_t>(contents.uint_contents(), 0, UINT8_MAX, out);
      break;
    case DataType::kInt64:
      AppendAs<int64_t>(contents.int64_contents(), INT64_MIN, INT64_MAX, out);
      break;
    case DataType::kFp32:
      for (const float value : contents.fp32_contents()) {
        out.append(reinterpret_cast<const char*>(&value), sizeof(value));
      }
      break;
    case DataType::kFp64:
      for (const double value : contents.fp64_contents()) {
        out.append(reinterpret_cast<const char*>(&value), sizeof(value));
      }
      break;
    case DataType::kFp16:
    case DataType::kBf16:
      FUZZ_CHECK(false);  // raw only: never accepted in typed contents
  }
  return out;
}

// The reply's form the request asks for: binary_data of its outputs, else binary_data_output,
// else raw.
bool AsksRaw(const ModelInferRequest& request) {
  for (const auto& output : request.outputs()) {
    const auto found = output.parameters().find("binary_data");
    if (found != output.parameters().end()) return found->second.bool_param();
  }
  const auto found = request.parameters().find("binary_data_output");
  return found == request.parameters().end() || found->second.bool_param();
}

void CheckDecoded(const ModelInferRequest& request, const Model& model,
                  const oip::DecodedInfer& decoded) {
  const ModelSignature& signature = model.signature;
  const InferenceRequest& out = decoded.request;
  const bool batches = signature.batches();
  FUZZ_CHECK(out.rows >= 1 && out.rows <= model.max_rows);
  FUZZ_CHECK(batches || out.rows == 1);
  FUZZ_CHECK(out.inputs.size() == signature.inputs.size());
  for (size_t i = 0; i < signature.inputs.size(); ++i) {
    const TensorSpec& spec = signature.inputs[i];
    const InputTensor& input = out.inputs[i];
    const int given = Given(request, spec.name);
    const size_t skip = batches ? 1 : 0;
    FUZZ_CHECK(input.shape.size() == spec.dims.size() + skip);
    for (size_t d = 0; d < input.shape.size(); ++d) FUZZ_CHECK(input.shape[d] >= 0);
    for (size_t d = 0; d < spec.dims.size(); ++d) {
      FUZZ_CHECK(spec.dims[d] == handlers::kAnySize || input.shape[d + skip] == spec.dims[d]);
    }
    if (batches) {
      FUZZ_CHECK(input.shape[0] == (input.broadcast ? 1 : out.rows));
      FUZZ_CHECK(!input.broadcast || given < 0 || MayBroadcast(signature, i));
    } else {
      FUZZ_CHECK(!input.broadcast);
    }
    const std::optional<int64_t> elements = handlers::ElementCount(input.shape);
    FUZZ_CHECK(elements.has_value());
    FUZZ_CHECK(input.data.size() == *elements * handlers::ElementSize(spec.type));
    if (spec.type == DataType::kBool) {
      for (const char byte : input.data) FUZZ_CHECK(byte == 0 || byte == 1);
    }
    if (given < 0) {  // its default, one row for every row
      FUZZ_CHECK(spec.optional && spec.default_value.has_value());
      FUZZ_CHECK(input.data == *spec.default_value);
      FUZZ_CHECK(input.broadcast == batches);
      continue;
    }
    const ModelInferRequest::InferInputTensor& tensor = request.inputs(given);
    FUZZ_CHECK(tensor.datatype() == handlers::WireName(spec.type));
    FUZZ_CHECK(std::equal(input.shape.begin(), input.shape.end(), tensor.shape().begin(),
                          tensor.shape().end()));
    if (request.raw_input_contents_size() > 0) {
      const std::string& raw = request.raw_input_contents(given);
      FUZZ_CHECK(input.data.data() == raw.data() && input.data.size() == raw.size());
    } else {
      FUZZ_CHECK(input.data == TypedBytes(tensor.contents(), spec.type));
    }
  }
  // The outputs named, in order, or all.
  std::vector<size_t> outputs;
  for (const auto& named : request.outputs()) {
    size_t index = 0;
    while (index < signature.outputs.size() && signature.outputs[index].name != named.name()) {
      ++index;
    }
    FUZZ_CHECK(index < signature.outputs.size());
    outputs.push_back(index);
  }
  if (outputs.empty()) {
    for (size_t i = 0; i < signature.outputs.size(); ++i) outputs.push_back(i);
  }
  FUZZ_CHECK(decoded.outputs == outputs);
  FUZZ_CHECK(decoded.raw_output == AsksRaw(request));
}

std::vector<int64_t> ShapeVector(const Dims& shape) {
  return std::vector<int64_t>(shape.begin(), shape.end());
}

// The given inputs re-encoded, raw or typed, decode to the same tensors.
void CheckRoundTrip(const ModelInferRequest& request, const Model& model,
                    const oip::DecodedInfer& decoded) {
  const ModelSignature& signature = model.signature;
  std::vector<oip::Tensor> tensors;
  bool typed = true;
  for (size_t i = 0; i < signature.inputs.size(); ++i) {
    const TensorSpec& spec = signature.inputs[i];
    if (Given(request, spec.name) < 0) continue;
    const InputTensor& input = decoded.request.inputs[i];
    tensors.push_back({spec.name, spec.type, ShapeVector(input.shape), std::string(input.data)});
    typed = typed && spec.type != DataType::kFp16 && spec.type != DataType::kBf16;
  }
  for (const bool raw : {true, false}) {
    if (!raw && !typed) continue;
    const ModelInferRequest again = oip::EncodeInferRequest("m", tensors, raw);
    absl::StatusOr<oip::DecodedInfer> redecoded =
        oip::DecodeInferRequest(again, signature, model.max_rows);
    if (!redecoded.ok()) {
      std::fprintf(stderr, "round trip (raw %d) refused: %s\n", raw,
                   redecoded.status().ToString().c_str());
    }
    FUZZ_CHECK(redecoded.ok());
    CheckDecoded(again, model, *redecoded);
    FUZZ_CHECK(redecoded->request.rows == decoded.request.rows);
    for (size_t i = 0; i < signature.inputs.size(); ++i) {
      const InputTensor& before = decoded.request.inputs[i];
      const InputTensor& after = redecoded->request.inputs[i];
      FUZZ_CHECK(after.shape == before.shape);
      FUZZ_CHECK(after.broadcast == before.broadcast);
      FUZZ_CHECK(after.data == before.data);
    }
  }
}

// `decoded`'s given inputs with the rows `order` (broadcast ones as they are): another request of
// the same batch key, of other rows.
ModelInferRequest Rearranged(const ModelInferRequest& request, const Model& model,
                             const oip::DecodedInfer& decoded, const std::vector<int64_t>& order,
                             bool raw) {
  const ModelSignature& signature = model.signature;
  std::vector<oip::Tensor> tensors;
  for (size_t i = 0; i < signature.inputs.size(); ++i) {
    const TensorSpec& spec = signature.inputs[i];
    if (Given(request, spec.name) < 0) continue;
    const InputTensor& input = decoded.request.inputs[i];
    std::vector<int64_t> shape = ShapeVector(input.shape);
    std::string data;
    if (input.broadcast) {
      data = std::string(input.data);
    } else {
      const size_t row_bytes = input.data.size() / decoded.request.rows;
      for (const int64_t row : order) data.append(input.data.substr(row * row_bytes, row_bytes));
      shape[0] = static_cast<int64_t>(order.size());
    }
    tensors.push_back({spec.name, spec.type, std::move(shape), std::move(data)});
    raw = raw || spec.type == DataType::kFp16 || spec.type == DataType::kBf16;
  }
  return oip::EncodeInferRequest("m", tensors, raw);
}

// --- The executor with the echo model ---

// A request's bytes of each input, a row for each of its rows (broadcast inputs repeated): what
// the echo model gives back.
std::vector<std::string> Expanded(const InferenceRequest& request) {
  std::vector<std::string> expanded;
  for (const InputTensor& input : request.inputs) {
    std::string bytes;
    const int64_t copies = input.broadcast ? request.rows : 1;
    for (int64_t copy = 0; copy < copies; ++copy) bytes.append(input.data);
    expanded.push_back(std::move(bytes));
  }
  return expanded;
}

// The first row holding the echo model's poison in an INT64 input.
std::optional<int64_t> FirstPoisonRow(const ModelSignature& signature,
                                      const std::vector<std::string>& expanded, int64_t rows) {
  std::optional<int64_t> first;
  for (size_t i = 0; i < signature.inputs.size(); ++i) {
    if (signature.inputs[i].type != DataType::kInt64) continue;
    const std::string& bytes = expanded[i];
    const size_t row_bytes = bytes.size() / rows;
    for (size_t at = 0; at + sizeof(int64_t) <= bytes.size(); at += sizeof(int64_t)) {
      if (Element<int64_t>(bytes, at / sizeof(int64_t)) == testing_support::kEchoPoison) {
        const int64_t row = static_cast<int64_t>(at / row_bytes);
        first = std::min(first.value_or(row), row);
        break;
      }
    }
  }
  return first;
}

// What one task should receive and what it did, kept outside the task (the executor owns it).
struct Record {
  const oip::DecodedInfer* decoded = nullptr;  // its request was moved into the task
  int64_t rows = 0;
  std::vector<Dims> shapes;         // of each input, broadcast ones expanded to `rows`
  std::vector<std::string> expect;  // of each output
  std::optional<int64_t> poison;    // its first poisoned row
  // What it should receive.
  int expected_completions = 0;
  int64_t expected_rows = 0;
  bool expected_failure = false;
  // What it received.
  int completions = 0;
  int64_t rows_given = 0;
  int failures = 0;
  absl::StatusCode failure_code = absl::StatusCode::kOk;
  std::vector<std::string> gathered;
};

class EchoTask final : public handlers::InferenceTask {
 public:
  EchoTask(InferenceRequest request, const ModelSignature& signature, Record& record)
      : InferenceTask(std::move(request)), signature_(signature), record_(record) {}

  absl::Status Dequeue(batching::TimePoint) override { return absl::OkStatus(); }

  void Complete(const std::vector<OutputTensor>& outputs, int64_t batch_row, int64_t task_row,
                int64_t rows) override {
    Record& r = record_;
    ++r.completions;
    FUZZ_CHECK(r.failures == 0);
    FUZZ_CHECK(task_row == r.rows_given);  // in row order, nothing skipped or repeated
    FUZZ_CHECK(rows >= 1 && task_row + rows <= r.rows);
    FUZZ_CHECK(outputs.size() == signature_.outputs.size());
    for (size_t o = 0; o < outputs.size(); ++o) {
      const OutputTensor& output = outputs[o];
      FUZZ_CHECK(output.type == signature_.outputs[o].type);
      if (!signature_.batches()) {
        FUZZ_CHECK(batch_row == 0 && task_row == 0 && rows == 1);
        FUZZ_CHECK(output.shape == r.shapes[o]);
        const size_t bytes = r.expect[o].size();
        FUZZ_CHECK(bytes == 0 || output.data != nullptr);
        if (bytes > 0) r.gathered[o].assign(output.data, bytes);
        continue;
      }
      // The batch's rows, with this task's shape past the batch dimension (its batch key).
      FUZZ_CHECK(!output.shape.empty() && batch_row >= 0 && batch_row + rows <= output.shape[0]);
      FUZZ_CHECK(std::equal(output.shape.begin() + 1, output.shape.end(), r.shapes[o].begin() + 1,
                            r.shapes[o].end()));
      const size_t row_bytes = r.expect[o].size() / r.rows;
      const size_t bytes = rows * row_bytes;
      FUZZ_CHECK(bytes == 0 || output.data != nullptr);
      if (bytes > 0) r.gathered[o].append(output.data + batch_row * row_bytes, bytes);
    }
    r.rows_given += rows;
  }

  void Fail(absl::Status status) override {
    ++record_.failures;
    record_.failure_code = status.code();
  }

 private:
  const ModelSignature& signature_;
  Record& record_;
};

// What the executor should do with one task when it runs alone: pieces of at most `step` rows,
// up to the first one holding a poisoned row.
void RunAlone(Record& record, int64_t step, std::vector<int64_t>& forward_rows) {
  for (int64_t first = 0; first < record.rows; first += step) {
    const int64_t rows = std::min(step, record.rows - first);
    forward_rows.push_back(rows);
    if (record.poison && *record.poison < first + rows) {
      record.expected_failure = true;
      return;
    }
    ++record.expected_completions;
    record.expected_rows += rows;
  }
}

// The outputs the task asked for, encoded in each form the types allow, read back the same.
void CheckReply(const ModelSignature& signature, const Record& record) {
  const oip::DecodedInfer& decoded = *record.decoded;
  bool typed = true;
  for (const size_t o : decoded.outputs) {
    const DataType type = signature.outputs[o].type;
    typed = typed && type != DataType::kFp16 && type != DataType::kBf16;
  }
  for (const bool raw : {decoded.raw_output, !decoded.raw_output}) {
    if (!raw && !typed) continue;
    std::vector<oip::ReplyTensor> replies;
    for (const size_t o : decoded.outputs) {
      replies.push_back({signature.outputs[o].name, signature.outputs[o].type, record.shapes[o],
                         record.gathered[o]});
    }
    ModelInferResponse response;
    oip::EncodeInferResponse({"m", "1", "id"}, replies, raw, &response);
    FUZZ_CHECK(response.outputs_size() == static_cast<int>(decoded.outputs.size()));
    for (const size_t o : decoded.outputs) {
      absl::StatusOr<oip::Tensor> tensor = oip::DecodeTensor(response, signature.outputs[o].name);
      if (!tensor.ok()) std::fprintf(stderr, "%s\n", tensor.status().ToString().c_str());
      FUZZ_CHECK(tensor.ok());
      FUZZ_CHECK(tensor->type == signature.outputs[o].type);
      FUZZ_CHECK(tensor->shape == ShapeVector(record.shapes[o]));
      FUZZ_CHECK(tensor->data == record.gathered[o]);
    }
  }
}

void CheckEchoExecutor(const Model& model, std::vector<oip::DecodedInfer>& accepted) {
  const ModelSignature& signature = model.signature;
  const bool batches = signature.batches();
  const int64_t step = batches ? signature.max_batch_size : 1;
  batching::BatchingOptions options;
  options.max_batch_rows = static_cast<size_t>(step);  // as the server cuts them
  batching::BatchQueue<handlers::InferenceTask> queue(options);
  const batching::TimePoint now{};

  std::deque<Record> records;
  std::vector<std::pair<const handlers::InferenceTask*, Record*>> record_of;
  for (oip::DecodedInfer& decoded : accepted) {
    Record& record = records.emplace_back();
    record.decoded = &decoded;
    record.rows = decoded.request.rows;
    record.expect = Expanded(decoded.request);
    record.gathered.resize(record.expect.size());
    for (const InputTensor& input : decoded.request.inputs) {
      record.shapes.push_back(input.shape);
      if (batches) record.shapes.back()[0] = record.rows;
    }
    record.poison = FirstPoisonRow(signature, record.expect, record.rows);
    InferenceRequest request;
    request.rows = decoded.request.rows;
    for (const InputTensor& input : decoded.request.inputs) {  // the task's own copy
      InputTensor& copy = request.inputs.emplace_back();
      copy.shape = input.shape;
      copy.broadcast = input.broadcast;
      copy.data = input.data;  // still the request's bytes or `decoded`'s, which outlive the task
    }
    std::unique_ptr<handlers::InferenceTask> task =
        std::make_unique<EchoTask>(std::move(request), signature, record);
    record_of.emplace_back(task.get(), &record);
    FUZZ_CHECK(queue.Push(task, now).ok());
  }
  const auto record_for = [&](const handlers::InferenceTask* task) {
    for (const auto& [address, record] : record_of) {
      if (address == task) return record;
    }
    FUZZ_CHECK(false);
    return static_cast<Record*>(nullptr);
  };

  testing_support::EchoHandler handler(signature);
  handlers::BatchExecutor executor(handler);
  std::vector<int64_t> expected_forward_rows;
  size_t forward_passes = 0;
  while (!queue.empty()) {
    batching::Cut<handlers::InferenceTask> cut = queue.Pop(now, /*flush=*/true);
    FUZZ_CHECK(!cut.batch.empty() && cut.dropped.empty());
    int64_t batch_rows = 0;
    bool any_poison = false;
    bool all_fit = true;
    for (const auto& task : cut.batch) {
      const Record& record = *record_for(task.get());
      FUZZ_CHECK(task->batch_key() == cut.batch.front()->batch_key());
      batch_rows += record.rows;
      any_poison = any_poison || record.poison.has_value();
      all_fit = all_fit && record.rows <= step;
    }
    FUZZ_CHECK(cut.batch.size() == 1 || batch_rows <= step);
    if (batches && cut.batch.size() > 1 && all_fit) {
      expected_forward_rows.push_back(batch_rows);
      for (const auto& task : cut.batch) {
        Record& record = *record_for(task.get());
        if (any_poison) {
          RunAlone(record, step, expected_forward_rows);
        } else {
          record.expected_completions = 1;
          record.expected_rows = record.rows;
        }
      }
    } else {
      for (const auto& task : cut.batch)
        RunAlone(*record_for(task.get()), step, expected_forward_rows);
    }
    forward_passes += executor.Execute(cut.batch).forward_passes;
  }
  FUZZ_CHECK(handler.batch_rows() == expected_forward_rows);
  FUZZ_CHECK(forward_passes == expected_forward_rows.size());

  for (const Record& record : records) {
    FUZZ_CHECK(record.completions == record.expected_completions);
    FUZZ_CHECK(record.rows_given == record.expected_rows);
    if (record.expected_failure) {
      FUZZ_CHECK(record.failures == 1 && record.failure_code == absl::StatusCode::kInternal);
    } else {
      FUZZ_CHECK(record.failures == 0);
    }
    // Its own rows, byte for byte: all of them, or those of the pieces before the poison.
    for (size_t o = 0; o < record.expect.size(); ++o) {
      const size_t row_bytes = record.expect[o].size() / record.rows;
      FUZZ_CHECK(record.gathered[o] == record.expect[o].substr(0, record.rows_given * row_bytes));
    }
    if (!record.expected_failure) CheckReply(signature, record);
  }
}

// --- The executor with the fake model ---

bool SameBits(const float* a, const float* b, size_t count) {
  return std::memcmp(a, b, count * sizeof(float)) == 0;
}

// Records what the executor hands each task of the fake model: y's rows, or the failure.
class FakeTask final : public handlers::InferenceTask {
 public:
  explicit FakeTask(InferenceRequest request) : InferenceTask(std::move(request)) {}
  absl::Status Dequeue(batching::TimePoint) override { return absl::OkStatus(); }
  void Complete(const std::vector<OutputTensor>& outputs, int64_t batch_row, int64_t task_row,
                int64_t rows) override {
    FUZZ_CHECK(outputs.size() == 1 && outputs[0].shape.size() == 2 && outputs[0].shape[1] == 2);
    FUZZ_CHECK(task_row * 2 == static_cast<int64_t>(outputs_.size()));
    const float* y = reinterpret_cast<const float*>(outputs[0].data) + batch_row * 2;
    outputs_.insert(outputs_.end(), y, y + rows * 2);
  }
  void Fail(absl::Status status) override { failure_ = std::move(status); }
  const std::vector<float>& outputs() const { return outputs_; }
  const absl::Status& failure() const { return failure_; }

 private:
  std::vector<float> outputs_;
  absl::Status failure_;
};

InferenceRequest Copy(const InferenceRequest& request) {
  InferenceRequest copy;
  copy.rows = request.rows;
  for (const InputTensor& input : request.inputs) {
    InputTensor& to = copy.inputs.emplace_back();
    to.shape = input.shape;
    to.broadcast = input.broadcast;
    to.data = input.data;
  }
  return copy;
}

// Runs `request` (for the fake model) in one batch behind a seed-style request and checks every
// row's outputs against the fake model's formula with that row's own parameters.
void CheckFakeExecutor(const InferenceRequest& request) {
  const float seed_x[] = {1, 2, 3, 4, 5, 6};
  const float seed_params[] = {0.5f, -1};
  InferenceRequest seed;
  seed.rows = 2;
  seed.inputs.resize(2);
  seed.inputs[0].shape = {2, 3};
  seed.inputs[0].data = std::string_view(reinterpret_cast<const char*>(seed_x), sizeof(seed_x));
  seed.inputs[1].shape = {1, 2};
  seed.inputs[1].broadcast = true;
  seed.inputs[1].data =
      std::string_view(reinterpret_cast<const char*>(seed_params), sizeof(seed_params));
  std::vector<std::unique_ptr<handlers::InferenceTask>> batch;
  batch.push_back(std::make_unique<FakeTask>(std::move(seed)));
  batch.push_back(std::make_unique<FakeTask>(Copy(request)));
  const FakeTask& seed_task = static_cast<const FakeTask&>(*batch[0]);
  const FakeTask& task = static_cast<const FakeTask&>(*batch[1]);
  testing_support::FakeHandler handler;
  FUZZ_CHECK(handler.Initialize().ok());
  handlers::BatchExecutor executor(handler);
  executor.Execute(batch);

  const float* xs = reinterpret_cast<const float*>(request.inputs[0].data.data());
  const float* params = reinterpret_cast<const float*>(request.inputs[1].data.data());
  bool poisoned = false;
  for (int64_t row = 0; row < request.rows; ++row) {
    poisoned = poisoned || xs[row * 3] == testing_support::kPoison;
  }
  if (poisoned) {  // only the poisoned request fails; its batch-mate is rerun alone
    FUZZ_CHECK(task.failure().code() == absl::StatusCode::kInternal);
    FUZZ_CHECK(seed_task.failure().ok() && seed_task.outputs().size() == 4);
    return;
  }
  FUZZ_CHECK(task.failure().ok());
  FUZZ_CHECK(static_cast<int64_t>(task.outputs().size()) == request.rows * 2);
  for (int64_t row = 0; row < request.rows; ++row) {
    const float* x = &xs[row * 3];
    const float* p = &params[request.inputs[1].broadcast ? 0 : row * 2];
    const float y[2] = {p[0] * (x[0] + x[1] + x[2]) + p[1], x[0]};
    FUZZ_CHECK(SameBits(&task.outputs()[row * 2], y, 2));
  }
  FUZZ_CHECK(seed_task.outputs() == (std::vector<float>{0.5f * 6 - 1, 1, 0.5f * 15 - 1, 4}));

  const std::string y_bytes(reinterpret_cast<const char*>(task.outputs().data()),
                            task.outputs().size() * sizeof(float));
  for (const bool raw : {true, false}) {
    std::vector<oip::ReplyTensor> replies;
    replies.push_back({oip::kOutput, DataType::kFp32, {request.rows, 2}, y_bytes});
    ModelInferResponse response;
    oip::EncodeInferResponse({"m", "1", ""}, replies, raw, &response);
    absl::StatusOr<oip::Fp32Tensor> y = oip::DecodeOutput(response);
    FUZZ_CHECK(y.ok());
    FUZZ_CHECK((y->shape == std::vector<int64_t>{request.rows, 2}));
    FUZZ_CHECK(y->values.size() == task.outputs().size());
    FUZZ_CHECK(SameBits(y->values.data(), task.outputs().data(), y->values.size()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<Model> models = Models();
  FuzzedDataProvider fuzz(data, size);
  const Model& target = models[fuzz.ConsumeIntegralInRange<size_t>(0, models.size() - 1)];
  // Sizes of the variable dimensions, shared by the requests unless one is made otherwise.
  std::vector<Dims> sizes;
  for (const TensorSpec& spec : target.signature.inputs) {
    Dims dims;
    for (size_t d = 0; d < spec.dims.size(); ++d) dims.push_back(fuzz.ConsumeIntegralInRange(0, 3));
    sizes.push_back(std::move(dims));
  }
  const int64_t rows = fuzz.PickValueInArray<int64_t>({1, 1, 2, 2, 3, 4, 5, 8});
  // Messages by address: decoded requests point into them.
  std::deque<ModelInferRequest> requests;
  const int count = fuzz.ConsumeIntegralInRange(1, 3);
  for (int r = 0; r < count; ++r) {
    const int64_t own_rows =
        fuzz.ConsumeBool() ? fuzz.PickValueInArray<int64_t>({1, 1, 2, 3, 6}) : rows;
    std::vector<Dims> own_sizes = sizes;
    if (Rare(fuzz)) {
      for (Dims& dims : own_sizes) {
        for (int64_t& dim : dims) dim = fuzz.ConsumeIntegralInRange(0, 3);
      }
    }
    requests.push_back(BuildRequest(fuzz, target, own_rows, own_sizes));
  }

  for (const Model& model : models) {
    std::vector<oip::DecodedInfer> accepted;
    accepted.reserve(3 * requests.size());  // never moved: tasks point into them
    const size_t fuzzed = requests.size();
    for (size_t r = 0; r < fuzzed; ++r) {
      const ModelInferRequest& request = requests[r];
      absl::StatusOr<oip::DecodedInfer> decoded =
          oip::DecodeInferRequest(request, model.signature, model.max_rows);
      if (!decoded.ok()) {
        FUZZ_CHECK(decoded.status().code() == absl::StatusCode::kInvalidArgument);
        FUZZ_CHECK(!decoded.status().message().empty());
        continue;
      }
      CheckDecoded(request, model, *decoded);
      CheckRoundTrip(request, model, *decoded);
      if (!model.echo) {
        if (&model == &models[0]) CheckFakeExecutor(decoded->request);
        continue;
      }
      const int64_t decoded_rows = decoded->request.rows;
      const handlers::Dims key = handlers::BatchKey(decoded->request);
      const size_t original = accepted.size();
      accepted.push_back(*std::move(decoded));
      if (!model.signature.batches() || decoded_rows < 2) continue;
      // Batch-mates of the same batch key: its last row alone, then its rows in reverse order.
      std::vector<int64_t> reverse;
      for (int64_t row = decoded_rows - 1; row >= 0; --row) reverse.push_back(row);
      for (const std::vector<int64_t>& order : {std::vector<int64_t>{decoded_rows - 1}, reverse}) {
        requests.push_back(Rearranged(request, model, accepted[original], order, r % 2 == 0));
        absl::StatusOr<oip::DecodedInfer> mate =
            oip::DecodeInferRequest(requests.back(), model.signature, model.max_rows);
        FUZZ_CHECK(mate.ok());
        CheckDecoded(requests.back(), model, *mate);
        FUZZ_CHECK(mate->request.rows == static_cast<int64_t>(order.size()));
        FUZZ_CHECK(handlers::BatchKey(mate->request) == key);
        accepted.push_back(*std::move(mate));
      }
    }
    if (!accepted.empty()) CheckEchoExecutor(model, accepted);
    requests.resize(fuzzed);
  }
  return 0;
}
