#include "protocol/oip.h"

#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace model_server::protocol::oip {
namespace {

using handlers::InferenceRequest;
using handlers::ModelSignature;
using inference::InferParameter;
using inference::InferTensorContents;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

// Raw tensor contents are little-endian floats: on this host that is memory order.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "raw tensor contents need a little-endian host");
static_assert(sizeof(float) == 4);

std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// The first typed-contents field other than fp32_contents that holds values, for the error
// naming it; null when none does.
const char* OtherContents(const InferTensorContents& contents) {
  if (contents.bool_contents_size() > 0) return "bool_contents";
  if (contents.int_contents_size() > 0) return "int_contents";
  if (contents.int64_contents_size() > 0) return "int64_contents";
  if (contents.uint_contents_size() > 0) return "uint_contents";
  if (contents.uint64_contents_size() > 0) return "uint64_contents";
  if (contents.fp64_contents_size() > 0) return "fp64_contents";
  if (contents.bytes_contents_size() > 0) return "bytes_contents";
  return nullptr;
}

bool HasContents(const ModelInferRequest::InferInputTensor& input) {
  return input.has_contents() &&
         (input.contents().fp32_contents_size() > 0 || OtherContents(input.contents()) != nullptr);
}

// A bool parameter that chooses the reply's form; nullopt when absent.
absl::StatusOr<std::optional<bool>> BoolParameter(
    const google::protobuf::Map<std::string, InferParameter>& parameters, const std::string& key,
    const std::string& where) {
  const auto found = parameters.find(key);
  if (found == parameters.end()) return std::nullopt;
  if (found->second.parameter_choice_case() != InferParameter::kBoolParam) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter \"", key, "\" of ", where, " must be a bool"));
  }
  return found->second.bool_param();
}

// One input as it must be: its name, its expected width, and what was found.
struct InputSlot {
  const ModelInferRequest::InferInputTensor* tensor = nullptr;
  const std::string* raw = nullptr;  // its raw_input_contents entry, when raw
};

// Checks `slot`'s datatype and shape against [rows?, width] and its data against the shape;
// returns the rows it has. `rows` is the rows it must have, or nullopt when any number is fine
// (x); params may also have one row.
absl::StatusOr<int64_t> CheckInput(const InputSlot& slot, int64_t width,
                                   std::optional<int64_t> rows, int64_t max_rows) {
  const ModelInferRequest::InferInputTensor& tensor = *slot.tensor;
  const std::string& name = tensor.name();
  if (tensor.datatype() != kFp32) {
    return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\" has datatype \"",
                                                   tensor.datatype(), "\"; the model takes FP32"));
  }
  const auto& shape = tensor.shape();
  const std::string expected = rows ? absl::StrCat("[", *rows, ", ", width, "] or [1, ", width, "]")
                                    : absl::StrCat("[n, ", width, "]");
  if (shape.size() != 2 || shape[1] != width || shape[0] < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input \"", name, "\" has shape ", ShapeText(shape), "; the model takes ", expected));
  }
  if (rows && shape[0] != *rows && shape[0] != 1) {
    return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\" has shape ",
                                                   ShapeText(shape), "; with ", *rows,
                                                   " rows of x the model takes ", expected));
  }
  if (shape[0] == 0) {
    return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\" has zero rows"));
  }
  if (shape[0] > max_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request has ", shape[0], " rows; this server takes at most ", max_rows, " per request"));
  }
  const int64_t elements = shape[0] * width;  // both bounded: no overflow
  if (slot.raw != nullptr) {
    if (HasContents(tensor)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input \"", name, "\" has contents and raw_input_contents; send one or the other"));
    }
    if (static_cast<int64_t>(slot.raw->size()) != elements * 4) {
      return absl::InvalidArgumentError(
          absl::StrCat("raw_input_contents of input \"", name, "\" has ", slot.raw->size(),
                       " bytes; shape ", ShapeText(shape), " of FP32 takes ", elements * 4));
    }
    return shape[0];
  }
  if (const char* other = OtherContents(tensor.contents())) {
    return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\" has its data in ", other,
                                                   "; FP32 data goes in fp32_contents"));
  }
  const int values = tensor.contents().fp32_contents_size();
  if (values != elements) {
    return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\" has ", values,
                                                   " values in fp32_contents; shape ",
                                                   ShapeText(shape), " takes ", elements));
  }
  return shape[0];
}

// The tensor's values, from whichever form they came in, appended to `out`.
void AppendValues(const InputSlot& slot, std::vector<float>* out) {
  if (slot.raw != nullptr) {
    const size_t count = slot.raw->size() / sizeof(float);
    const size_t at = out->size();
    out->resize(at + count);
    std::memcpy(out->data() + at, slot.raw->data(), slot.raw->size());
    return;
  }
  const auto& values = slot.tensor->contents().fp32_contents();
  out->insert(out->end(), values.begin(), values.end());
}

std::string ModelInputsText(const ModelSignature& signature) {
  std::string text = absl::StrCat("\"", kInput, "\" [n, ", signature.num_inputs, "]");
  if (signature.num_params > 0) {
    absl::StrAppend(&text, " and \"", kParams, "\" [n, ", signature.num_params, "]");
  }
  return text;
}

}  // namespace

absl::StatusOr<DecodedInfer> DecodeInferRequest(const ModelInferRequest& request,
                                                const ModelSignature& signature, int64_t max_rows) {
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_input_contents has ", request.raw_input_contents_size(), " entries for ",
                     request.inputs_size(), " inputs; it needs one per input"));
  }
  InputSlot x, params;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const ModelInferRequest::InferInputTensor& tensor = request.inputs(i);
    InputSlot* slot = nullptr;
    if (tensor.name() == kInput) {
      slot = &x;
    } else if (tensor.name() == kParams && signature.num_params > 0) {
      slot = &params;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown input \"", tensor.name(), "\"; the model takes ", ModelInputsText(signature)));
    }
    if (slot->tensor != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("input \"", tensor.name(), "\" is given twice"));
    }
    slot->tensor = &tensor;
    if (raw) slot->raw = &request.raw_input_contents(i);
  }
  if (x.tensor == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input \"", kInput, "\" is missing; the model takes ", ModelInputsText(signature)));
  }
  absl::StatusOr<int64_t> rows = CheckInput(x, signature.num_inputs, std::nullopt, max_rows);
  if (!rows.ok()) return rows.status();

  DecodedInfer decoded;
  InferenceRequest& out = decoded.request;
  out.rows = *rows;
  out.inputs.reserve(*rows * signature.num_inputs);
  AppendValues(x, &out.inputs);
  if (params.tensor != nullptr) {
    absl::StatusOr<int64_t> param_rows = CheckInput(params, signature.num_params, *rows, max_rows);
    if (!param_rows.ok()) return param_rows.status();
    AppendValues(params, &out.params);
  } else if (signature.num_params > 0) {
    if (signature.default_params.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input \"", kParams, "\" is missing and the model has no default parameters"));
    }
    out.params = signature.default_params;
  }

  absl::StatusOr<std::optional<bool>> binary =
      BoolParameter(request.parameters(), "binary_data_output", "the request");
  if (!binary.ok()) return binary.status();
  if (binary->has_value()) decoded.raw_output = **binary;
  bool output_named = false;
  for (const ModelInferRequest::InferRequestedOutputTensor& output : request.outputs()) {
    if (output.name() != kOutput) {
      return absl::InvalidArgumentError(absl::StrCat("unknown output \"", output.name(),
                                                     "\"; the model gives \"", kOutput, "\" [n, ",
                                                     signature.num_outputs, "]"));
    }
    if (output_named) {
      return absl::InvalidArgumentError(
          absl::StrCat("output \"", kOutput, "\" is requested twice"));
    }
    output_named = true;
    binary =
        BoolParameter(output.parameters(), "binary_data", absl::StrCat("output \"", kOutput, "\""));
    if (!binary.ok()) return binary.status();
    if (binary->has_value()) decoded.raw_output = **binary;
  }
  return decoded;
}

void EncodeInferResponse(const InferReplyHeader& header, const float* outputs, int64_t rows,
                         int64_t columns, bool raw_output, ModelInferResponse* response) {
  response->Clear();
  response->set_model_name(std::string(header.model_name));
  response->set_model_version(std::string(header.model_version));
  if (!header.id.empty()) response->set_id(std::string(header.id));
  ModelInferResponse::InferOutputTensor* y = response->add_outputs();
  y->set_name(kOutput);
  y->set_datatype(kFp32);
  y->add_shape(rows);
  y->add_shape(columns);
  const size_t count = static_cast<size_t>(rows * columns);
  if (raw_output) {
    response->add_raw_output_contents()->assign(reinterpret_cast<const char*>(outputs),
                                                count * sizeof(float));
  } else {
    auto* values = y->mutable_contents()->mutable_fp32_contents();
    values->Resize(static_cast<int>(count), 0.0f);
    std::memcpy(values->mutable_data(), outputs, count * sizeof(float));
  }
}

ModelInferRequest EncodeInferRequest(const std::string& model_name,
                                     const std::vector<Fp32Tensor>& inputs, bool raw) {
  ModelInferRequest request;
  request.set_model_name(model_name);
  for (const Fp32Tensor& input : inputs) {
    ModelInferRequest::InferInputTensor* tensor = request.add_inputs();
    tensor->set_name(input.name);
    tensor->set_datatype(kFp32);
    for (const int64_t dimension : input.shape) tensor->add_shape(dimension);
    if (raw) {
      request.add_raw_input_contents()->assign(reinterpret_cast<const char*>(input.values.data()),
                                               input.values.size() * sizeof(float));
    } else {
      tensor->mutable_contents()->mutable_fp32_contents()->Add(input.values.begin(),
                                                               input.values.end());
    }
  }
  return request;
}

absl::StatusOr<Fp32Tensor> DecodeOutput(const ModelInferResponse& response,
                                        const std::string& name) {
  const bool raw = response.raw_output_contents_size() > 0;
  for (int i = 0; i < response.outputs_size(); ++i) {
    const ModelInferResponse::InferOutputTensor& output = response.outputs(i);
    if (output.name() != name) continue;
    if (output.datatype() != kFp32) {
      return absl::InvalidArgumentError(
          absl::StrCat("output \"", name, "\" has datatype \"", output.datatype(), "\""));
    }
    Fp32Tensor tensor;
    tensor.name = output.name();
    int64_t elements = 1;
    for (const int64_t dimension : output.shape()) {
      if (dimension < 0 || (dimension > 0 && elements > (int64_t{1} << 40) / dimension)) {
        return absl::InvalidArgumentError(
            absl::StrCat("output \"", name, "\" has shape ", ShapeText(output.shape())));
      }
      elements *= dimension;
      tensor.shape.push_back(dimension);
    }
    if (raw) {
      if (i >= response.raw_output_contents_size() ||
          static_cast<int64_t>(response.raw_output_contents(i).size()) != elements * 4) {
        return absl::InvalidArgumentError(
            absl::StrCat("raw_output_contents of output \"", name, "\" does not match its shape"));
      }
      const std::string& bytes = response.raw_output_contents(i);
      tensor.values.resize(elements);
      std::memcpy(tensor.values.data(), bytes.data(), bytes.size());
    } else {
      const auto& values = output.contents().fp32_contents();
      if (values.size() != elements) {
        return absl::InvalidArgumentError(
            absl::StrCat("fp32_contents of output \"", name, "\" does not match its shape"));
      }
      tensor.values.assign(values.begin(), values.end());
    }
    return tensor;
  }
  return absl::InvalidArgumentError(absl::StrCat("response has no output \"", name, "\""));
}

}  // namespace model_server::protocol::oip
