#include "protocol/oip.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace model_server::protocol::oip {
namespace {

using handlers::DataType;
using handlers::Dims;
using handlers::InferenceRequest;
using handlers::InputTensor;
using handlers::ModelSignature;
using handlers::TensorSpec;
using inference::InferParameter;
using inference::InferTensorContents;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

// Raw tensor contents are little-endian: on this host that is memory order.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "raw tensor contents need a little-endian host");

template <typename Shape>
std::string ShapeText(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// The typed-contents field that carries `type`; null for FP16 and BF16, which travel raw only.
const char* ContentsField(DataType type) {
  switch (type) {
    case DataType::kBool:
      return "bool_contents";
    case DataType::kInt8:
    case DataType::kInt16:
    case DataType::kInt32:
      return "int_contents";
    case DataType::kInt64:
      return "int64_contents";
    case DataType::kUint8:
      return "uint_contents";
    case DataType::kFp32:
      return "fp32_contents";
    case DataType::kFp64:
      return "fp64_contents";
    case DataType::kFp16:
    case DataType::kBf16:
      return nullptr;
  }
  return nullptr;
}

// Values in each typed-contents field, by the field's name.
std::vector<std::pair<const char*, int>> FilledFields(const InferTensorContents& contents) {
  std::vector<std::pair<const char*, int>> filled;
  const auto add = [&](const char* name, int size) {
    if (size > 0) filled.emplace_back(name, size);
  };
  add("bool_contents", contents.bool_contents_size());
  add("int_contents", contents.int_contents_size());
  add("int64_contents", contents.int64_contents_size());
  add("uint_contents", contents.uint_contents_size());
  add("uint64_contents", contents.uint64_contents_size());
  add("fp32_contents", contents.fp32_contents_size());
  add("fp64_contents", contents.fp64_contents_size());
  add("bytes_contents", contents.bytes_contents_size());
  return filled;
}

// Copies typed `values` into `to` as elements of T, refusing values T cannot hold.
template <typename T, typename Values>
absl::Status NarrowInto(const Values& values, const std::string& name, char* to) {
  T* out = reinterpret_cast<T*>(to);
  for (int i = 0; i < values.size(); ++i) {
    const auto value = values.Get(i);
    if (static_cast<decltype(value)>(static_cast<T>(value)) != value) {
      return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\" value ", value, " at ",
                                                     i, " does not fit its datatype"));
    }
    out[i] = static_cast<T>(value);
  }
  return absl::OkStatus();
}

// The elements of the typed-contents tensor `name`, of `type`, into `tensor`'s own memory.
absl::Status CopyTyped(const InferTensorContents& contents, DataType type, const std::string& name,
                       int64_t elements, InputTensor& tensor) {
  char* to = tensor.Allocate(elements * handlers::ElementSize(type));
  // No values: nothing to copy (and an empty field's data() may be null, which memcpy must not
  // be given even for 0 bytes).
  if (elements == 0) return absl::OkStatus();
  switch (type) {
    case DataType::kBool: {
      bool* out = reinterpret_cast<bool*>(to);
      for (int i = 0; i < contents.bool_contents_size(); ++i) out[i] = contents.bool_contents(i);
      return absl::OkStatus();
    }
    case DataType::kInt8:
      return NarrowInto<int8_t>(contents.int_contents(), name, to);
    case DataType::kInt16:
      return NarrowInto<int16_t>(contents.int_contents(), name, to);
    case DataType::kInt32:
      return NarrowInto<int32_t>(contents.int_contents(), name, to);
    case DataType::kUint8:
      return NarrowInto<uint8_t>(contents.uint_contents(), name, to);
    case DataType::kInt64:
      std::memcpy(to, contents.int64_contents().data(), elements * sizeof(int64_t));
      return absl::OkStatus();
    case DataType::kFp32:
      std::memcpy(to, contents.fp32_contents().data(), elements * sizeof(float));
      return absl::OkStatus();
    case DataType::kFp64:
      std::memcpy(to, contents.fp64_contents().data(), elements * sizeof(double));
      return absl::OkStatus();
    case DataType::kFp16:
    case DataType::kBf16:
      break;
  }
  return absl::InternalError("no typed contents for this datatype");
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

// A schedule-policy parameter (an integer >= 0, as int64_param or uint64_param, the latter as
// tritonclient sends "priority"); nullopt when absent.
absl::StatusOr<std::optional<uint64_t>> CountParameter(
    const google::protobuf::Map<std::string, InferParameter>& parameters, const std::string& key,
    const char* unit) {
  const auto found = parameters.find(key);
  if (found == parameters.end()) return std::nullopt;
  const InferParameter& parameter = found->second;
  if (parameter.parameter_choice_case() == InferParameter::kUint64Param) {
    return parameter.uint64_param();
  }
  if (parameter.parameter_choice_case() == InferParameter::kInt64Param &&
      parameter.int64_param() >= 0) {
    return static_cast<uint64_t>(parameter.int64_param());
  }
  return absl::InvalidArgumentError(
      absl::StrCat("parameter \"", key, "\" of the request must be an integer >= 0 (", unit, ")"));
}

// The parameters a response cache key holds (see DecodedInfer::cache_parameters): each one's key,
// a type letter and its value, length-prefixed so that no two sets read alike.
std::string CacheParameters(const google::protobuf::Map<std::string, InferParameter>& parameters) {
  std::vector<std::pair<std::string, const InferParameter*>> sorted;
  for (const auto& [key, value] : parameters) {
    if (key == "priority" || key == "timeout" || key == "binary_data_output") continue;
    sorted.emplace_back(key, &value);
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string text;
  for (const auto& [key, value] : sorted) {
    std::string shown;
    char type = '-';
    switch (value->parameter_choice_case()) {
      case InferParameter::kBoolParam:
        type = 'b';
        shown = value->bool_param() ? "1" : "0";
        break;
      case InferParameter::kInt64Param:
        type = 'i';
        shown = absl::StrCat(value->int64_param());
        break;
      case InferParameter::kStringParam:
        type = 's';
        shown = value->string_param();
        break;
      case InferParameter::kDoubleParam: {
        type = 'd';
        const double number = value->double_param();
        shown.assign(reinterpret_cast<const char*>(&number), sizeof(number));
        break;
      }
      case InferParameter::kUint64Param:
        type = 'u';
        shown = absl::StrCat(value->uint64_param());
        break;
      case InferParameter::PARAMETER_CHOICE_NOT_SET:
        break;
    }
    absl::StrAppend(&text, key.size(), ":", key, std::string(1, type), shown.size(), ":", shown);
  }
  return text;
}

// "\"x\" FP32 [n, 3], \"params\" FP32 [n, 5] (optional)".
std::string TensorsText(const std::vector<TensorSpec>& specs, bool batches) {
  std::vector<std::string> texts;
  for (const TensorSpec& spec : specs) {
    texts.push_back(handlers::SpecText(spec, batches) + (spec.optional ? " (optional)" : ""));
  }
  return absl::StrJoin(texts, ", ");
}

// Whether the seed mapping lets input `index` come as one row for all rows.
bool MayBroadcast(const ModelSignature& signature, size_t index) {
  return signature.seed && signature.seed->params_input == index;
}

class Decoder {
 public:
  Decoder(const ModelInferRequest& request, const ModelSignature& signature, int64_t max_rows)
      : request_(request), signature_(signature), max_rows_(max_rows) {}

  absl::StatusOr<DecodedInfer> Decode() {
    const bool raw = request_.raw_input_contents_size() > 0;
    if (raw && request_.raw_input_contents_size() != request_.inputs_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("raw_input_contents has ", request_.raw_input_contents_size(),
                       " entries for ", request_.inputs_size(), " inputs; it needs one per input"));
    }
    const std::vector<TensorSpec>& specs = signature_.inputs;
    std::vector<int> found(specs.size(), -1);  // spec → index in request.inputs
    for (int i = 0; i < request_.inputs_size(); ++i) {
      const std::string& name = request_.inputs(i).name();
      size_t spec = 0;
      while (spec < specs.size() && specs[spec].name != name) ++spec;
      if (spec == specs.size()) {
        return absl::InvalidArgumentError(absl::StrCat("unknown input \"", name,
                                                       "\"; the model takes ",
                                                       TensorsText(specs, signature_.batches())));
      }
      if (found[spec] >= 0) {
        return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\" is given twice"));
      }
      found[spec] = i;
    }
    DecodedInfer decoded;
    InferenceRequest& out = decoded.request;
    out.inputs.resize(specs.size());
    // Rows come from the first input that has them all (not a broadcast one).
    std::optional<int64_t> rows;
    for (size_t spec = 0; spec < specs.size(); ++spec) {
      if (found[spec] < 0) {
        // An optional input without a default has nothing to stand in for it (a signature from
        // a config may say optional without one): refused as missing, never read.
        if (!specs[spec].optional || !specs[spec].default_value) {
          return absl::InvalidArgumentError(absl::StrCat("input \"", specs[spec].name,
                                                         "\" is missing; the model takes ",
                                                         TensorsText(specs, signature_.batches())));
        }
        continue;  // its default, below, once rows are known
      }
      const ModelInferRequest::InferInputTensor& tensor = request_.inputs(found[spec]);
      const std::string* raw_data = raw ? &request_.raw_input_contents(found[spec]) : nullptr;
      absl::Status checked = DecodeInput(spec, tensor, raw_data, rows, out.inputs[spec]);
      if (!checked.ok()) return checked;
    }
    if (signature_.batches() && !rows) {
      // Only broadcast rows were given: they are the request's rows.
      rows = 1;
      for (InputTensor& input : out.inputs) input.broadcast = false;
    }
    out.rows = signature_.batches() ? *rows : 1;
    for (size_t spec = 0; spec < specs.size(); ++spec) {
      if (found[spec] < 0) Default(specs[spec], out.inputs[spec]);
    }
    if (absl::Status outputs = DecodeOutputs(decoded); !outputs.ok()) return outputs;
    absl::StatusOr<std::optional<uint64_t>> priority =
        CountParameter(request_.parameters(), "priority", "1 is served first; 0 the default");
    if (!priority.ok()) return priority.status();
    decoded.priority = priority->value_or(0);
    absl::StatusOr<std::optional<uint64_t>> timeout =
        CountParameter(request_.parameters(), "timeout", "microseconds");
    if (!timeout.ok()) return timeout.status();
    // Longer than a day is as good as none, and keeps time arithmetic far from overflow.
    constexpr uint64_t kDayMicroseconds = uint64_t{86400} * 1000 * 1000;
    decoded.timeout = std::chrono::microseconds(std::min(timeout->value_or(0), kDayMicroseconds));
    decoded.cache_parameters = CacheParameters(request_.parameters());
    return decoded;
  }

 private:
  // Checks one input against `specs[spec]` and decodes it into `out`; `rows` is the rows found
  // so far (set by the first input that has the batch's rows).
  absl::Status DecodeInput(size_t spec_index, const ModelInferRequest::InferInputTensor& tensor,
                           const std::string* raw, std::optional<int64_t>& rows, InputTensor& out) {
    const TensorSpec& spec = signature_.inputs[spec_index];
    const std::string& name = tensor.name();
    if (tensor.datatype() != handlers::WireName(spec.type)) {
      return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\" has datatype \"",
                                                     tensor.datatype(), "\"; the model takes ",
                                                     handlers::WireName(spec.type)));
    }
    const auto& shape = tensor.shape();
    const size_t skip = signature_.batches() ? 1 : 0;
    const auto wrong_shape = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\" has shape ",
                                                     ShapeText(shape), "; the model takes ",
                                                     TensorsText({spec}, skip == 1), why));
    };
    if (static_cast<size_t>(shape.size()) != spec.dims.size() + skip) return wrong_shape("");
    for (size_t d = 0; d < spec.dims.size(); ++d) {
      const int64_t size = shape[d + skip];
      if (size < 0 || (spec.dims[d] != handlers::kAnySize && size != spec.dims[d])) {
        return wrong_shape("");
      }
    }
    if (skip == 1) {
      const int64_t given = shape[0];
      if (given <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("input \"", name, "\" has ", given == 0 ? "zero" : "negative", " rows"));
      }
      if (given > max_rows_) {
        return absl::InvalidArgumentError(absl::StrCat(
            "request has ", given, " rows; this model takes at most ", max_rows_, " per request"));
      }
      const bool one_for_all = given == 1 && MayBroadcast(signature_, spec_index);
      if (!one_for_all) {
        if (rows && *rows != given) {
          return wrong_shape(absl::StrCat(" with the ", *rows, " rows of the other inputs"));
        }
        if (!rows) {
          // Inputs decoded before as one row for all stay so only if this has more rows.
          rows = given;
        }
      }
      out.broadcast = one_for_all;
      if (one_for_all && rows && *rows == 1) out.broadcast = false;
    }
    out.shape.assign(shape.begin(), shape.end());
    const std::optional<int64_t> elements = handlers::ElementCount(out.shape);
    if (!elements) return wrong_shape("");
    const size_t bytes = *elements * handlers::ElementSize(spec.type);
    const std::vector<std::pair<const char*, int>> filled =
        tensor.has_contents() ? FilledFields(tensor.contents())
                              : std::vector<std::pair<const char*, int>>();
    if (raw != nullptr) {
      if (!filled.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input \"", name, "\" has contents and raw_input_contents; send one or the other"));
      }
      if (raw->size() != bytes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "raw_input_contents of input \"", name, "\" has ", raw->size(), " bytes; shape ",
            ShapeText(shape), " of ", handlers::WireName(spec.type), " takes ", bytes));
      }
      out.data = *raw;
    } else {
      const char* field = ContentsField(spec.type);
      if (field == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\" is ",
                                                       handlers::WireName(spec.type),
                                                       ": its data goes in raw_input_contents"));
      }
      for (const auto& [other, count] : filled) {
        if (std::strcmp(other, field) != 0) {
          return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\" has its data in ",
                                                         other, "; ", handlers::WireName(spec.type),
                                                         " data goes in ", field));
        }
      }
      const int values = filled.empty() ? 0 : filled.front().second;
      if (values != *elements) {
        return absl::InvalidArgumentError(absl::StrCat("input \"", name, "\" has ", values,
                                                       " values in ", field, "; shape ",
                                                       ShapeText(shape), " takes ", *elements));
      }
      if (absl::Status copied = CopyTyped(tensor.contents(), spec.type, name, *elements, out);
          !copied.ok()) {
        return copied;
      }
    }
    if (spec.type == DataType::kBool) {
      for (size_t i = 0; i < out.data.size(); ++i) {
        if (static_cast<unsigned char>(out.data[i]) > 1) {
          return absl::InvalidArgumentError(
              absl::StrCat("input \"", name, "\" is BOOL but byte ", i, " is neither 0 nor 1"));
        }
      }
    }
    return absl::OkStatus();
  }

  // An optional input left out: its default, one row for every row.
  void Default(const TensorSpec& spec, InputTensor& out) const {
    const std::string& value = *spec.default_value;  // optional inputs have one
    out.shape.clear();
    if (signature_.batches()) out.shape.push_back(1);
    out.shape.insert(out.shape.end(), spec.dims.begin(), spec.dims.end());
    out.broadcast = signature_.batches();
    std::memcpy(out.Allocate(value.size()), value.data(), value.size());
  }

  absl::Status DecodeOutputs(DecodedInfer& decoded) const {
    const std::vector<TensorSpec>& specs = signature_.outputs;
    absl::StatusOr<std::optional<bool>> binary =
        BoolParameter(request_.parameters(), "binary_data_output", "the request");
    if (!binary.ok()) return binary.status();
    if (binary->has_value()) decoded.raw_output = **binary;
    std::optional<bool> outputs_binary;
    for (const ModelInferRequest::InferRequestedOutputTensor& output : request_.outputs()) {
      size_t spec = 0;
      while (spec < specs.size() && specs[spec].name != output.name()) ++spec;
      if (spec == specs.size()) {
        return absl::InvalidArgumentError(absl::StrCat("unknown output \"", output.name(),
                                                       "\"; the model gives ",
                                                       TensorsText(specs, signature_.batches())));
      }
      for (const size_t earlier : decoded.outputs) {
        if (earlier == spec) {
          return absl::InvalidArgumentError(
              absl::StrCat("output \"", output.name(), "\" is requested twice"));
        }
      }
      decoded.outputs.push_back(spec);
      binary = BoolParameter(output.parameters(), "binary_data",
                             absl::StrCat("output \"", output.name(), "\""));
      if (!binary.ok()) return binary.status();
      if (!binary->has_value()) continue;
      if (outputs_binary && *outputs_binary != **binary) {
        return absl::InvalidArgumentError(
            "outputs ask for different forms (binary_data); a gRPC reply carries all its "
            "outputs raw or all typed");
      }
      outputs_binary = **binary;
    }
    if (outputs_binary) decoded.raw_output = *outputs_binary;
    if (decoded.outputs.empty()) {
      for (size_t spec = 0; spec < specs.size(); ++spec) decoded.outputs.push_back(spec);
    }
    if (!decoded.raw_output) {
      for (const size_t spec : decoded.outputs) {
        if (ContentsField(specs[spec].type) == nullptr) {
          return absl::InvalidArgumentError(absl::StrCat(
              "output \"", specs[spec].name, "\" is ", handlers::WireName(specs[spec].type),
              ": it comes only in raw_output_contents (binary_data)"));
        }
      }
    }
    return absl::OkStatus();
  }

  const ModelInferRequest& request_;
  const ModelSignature& signature_;
  const int64_t max_rows_;
};

// Appends `data`'s elements, of `type`, to the typed contents that carry it.
void AppendTyped(DataType type, const std::string& data, InferTensorContents* contents) {
  const auto append = [&data](auto* field, auto element) {
    using Element = decltype(element);
    const size_t count = data.size() / sizeof(Element);
    const Element* from = reinterpret_cast<const Element*>(data.data());
    field->Reserve(static_cast<int>(count));
    for (size_t i = 0; i < count; ++i) field->Add(from[i]);
  };
  switch (type) {
    case DataType::kBool:
      append(contents->mutable_bool_contents(), bool{});
      break;
    case DataType::kInt8:
      append(contents->mutable_int_contents(), int8_t{});
      break;
    case DataType::kInt16:
      append(contents->mutable_int_contents(), int16_t{});
      break;
    case DataType::kInt32:
      append(contents->mutable_int_contents(), int32_t{});
      break;
    case DataType::kInt64:
      append(contents->mutable_int64_contents(), int64_t{});
      break;
    case DataType::kUint8:
      append(contents->mutable_uint_contents(), uint8_t{});
      break;
    case DataType::kFp32:
      append(contents->mutable_fp32_contents(), float{});
      break;
    case DataType::kFp64:
      append(contents->mutable_fp64_contents(), double{});
      break;
    case DataType::kFp16:
    case DataType::kBf16:
      break;  // raw only (DecodeInferRequest refuses asking otherwise)
  }
}

}  // namespace

absl::StatusOr<DecodedInfer> DecodeInferRequest(const ModelInferRequest& request,
                                                const ModelSignature& signature, int64_t max_rows) {
  return Decoder(request, signature, max_rows).Decode();
}

void EncodeInferResponse(const InferReplyHeader& header, std::vector<ReplyTensor>& outputs,
                         bool raw_output, ModelInferResponse* response) {
  response->Clear();
  response->set_model_name(std::string(header.model_name));
  response->set_model_version(std::string(header.model_version));
  if (!header.id.empty()) response->set_id(std::string(header.id));
  for (ReplyTensor& output : outputs) {
    ModelInferResponse::InferOutputTensor* tensor = response->add_outputs();
    tensor->set_name(output.name);
    tensor->set_datatype(handlers::WireName(output.type));
    for (const int64_t size : output.shape) tensor->add_shape(size);
    if (raw_output) {
      *response->add_raw_output_contents() = std::move(output.data);
    } else {
      AppendTyped(output.type, output.data, tensor->mutable_contents());
    }
  }
}

ModelInferRequest EncodeInferRequest(const std::string& model_name,
                                     const std::vector<Tensor>& inputs, bool raw) {
  ModelInferRequest request;
  request.set_model_name(model_name);
  for (const Tensor& input : inputs) {
    ModelInferRequest::InferInputTensor* tensor = request.add_inputs();
    tensor->set_name(input.name);
    tensor->set_datatype(handlers::WireName(input.type));
    for (const int64_t dimension : input.shape) tensor->add_shape(dimension);
    if (raw) {
      *request.add_raw_input_contents() = input.data;
    } else {
      AppendTyped(input.type, input.data, tensor->mutable_contents());
    }
  }
  return request;
}

ModelInferRequest EncodeInferRequest(const std::string& model_name,
                                     const std::vector<Fp32Tensor>& inputs, bool raw) {
  std::vector<Tensor> typed;
  for (const Fp32Tensor& input : inputs) {
    typed.push_back({input.name, DataType::kFp32, input.shape,
                     std::string(reinterpret_cast<const char*>(input.values.data()),
                                 input.values.size() * sizeof(float))});
  }
  return EncodeInferRequest(model_name, typed, raw);
}

absl::StatusOr<Tensor> DecodeTensor(const ModelInferResponse& response, const std::string& name) {
  const bool raw = response.raw_output_contents_size() > 0;
  for (int i = 0; i < response.outputs_size(); ++i) {
    const ModelInferResponse::InferOutputTensor& output = response.outputs(i);
    if (output.name() != name) continue;
    const std::optional<DataType> type = handlers::FromWireName(output.datatype());
    if (!type) {
      return absl::InvalidArgumentError(
          absl::StrCat("output \"", name, "\" has datatype \"", output.datatype(), "\""));
    }
    Tensor tensor{name, *type, {output.shape().begin(), output.shape().end()}, {}};
    const std::optional<int64_t> elements =
        handlers::ElementCount(Dims(tensor.shape.begin(), tensor.shape.end()), int64_t{1} << 40);
    if (!elements) {
      return absl::InvalidArgumentError(
          absl::StrCat("output \"", name, "\" has shape ", ShapeText(output.shape())));
    }
    const size_t bytes = *elements * handlers::ElementSize(*type);
    if (raw) {
      if (i >= response.raw_output_contents_size() ||
          response.raw_output_contents(i).size() != bytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("raw_output_contents of output \"", name, "\" does not match its shape"));
      }
      tensor.data = response.raw_output_contents(i);
      return tensor;
    }
    const char* field = ContentsField(*type);
    const std::vector<std::pair<const char*, int>> filled = FilledFields(output.contents());
    const int values = filled.empty() ? 0 : filled.front().second;
    if (field == nullptr || filled.size() > 1 || values != *elements ||
        (values > 0 && std::strcmp(filled.front().first, field) != 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("contents of output \"", name, "\" do not match its datatype and shape"));
    }
    InputTensor holder;
    if (absl::Status copied = CopyTyped(output.contents(), *type, name, *elements, holder);
        !copied.ok()) {
      return copied;
    }
    tensor.data.assign(holder.data.data(), holder.data.size());
    return tensor;
  }
  return absl::InvalidArgumentError(absl::StrCat("response has no output \"", name, "\""));
}

absl::StatusOr<Fp32Tensor> DecodeOutput(const ModelInferResponse& response,
                                        const std::string& name) {
  absl::StatusOr<Tensor> tensor = DecodeTensor(response, name);
  if (!tensor.ok()) return tensor.status();
  if (tensor->type != DataType::kFp32) {
    return absl::InvalidArgumentError(absl::StrCat("output \"", name, "\" has datatype \"",
                                                   handlers::WireName(tensor->type), "\""));
  }
  Fp32Tensor fp32{name, tensor->shape, std::vector<float>(tensor->data.size() / sizeof(float))};
  std::memcpy(fp32.values.data(), tensor->data.data(), tensor->data.size());
  return fp32;
}

}  // namespace model_server::protocol::oip
