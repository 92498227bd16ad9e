#include "handlers/torch/torch_signature.h"

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "handlers/signature.h"

namespace model_server::handlers {
namespace {

// The index a Triton PyTorch tensor name carries ("INPUT__2" → 2); nullopt without one.
std::optional<size_t> NameIndex(const std::string& name) {
  const size_t separator = name.rfind("__");
  if (separator == std::string::npos || separator + 2 == name.size()) return std::nullopt;
  size_t index = 0;
  if (!absl::SimpleAtoi(name.substr(separator + 2), &index)) return std::nullopt;
  return index;
}

absl::StatusOr<std::vector<std::string>> StringListAttribute(const torch::jit::Module& module,
                                                             const std::string& name) {
  std::vector<std::string> result;
  if (!module.hasattr(name)) return result;
  const c10::IValue value = module.attr(name);
  const auto wrong = [&] {
    return absl::InvalidArgumentError(absl::StrCat("model attribute ", name, " must be List[str]"));
  };
  if (!value.isList()) return wrong();
  for (const c10::IValue& item : value.toListRef()) {
    if (!item.isString()) return wrong();
    result.push_back(item.toStringRef());
  }
  return result;
}

absl::StatusOr<std::vector<float>> FloatListAttribute(const torch::jit::Module& module,
                                                      const std::string& name) {
  std::vector<float> result;
  if (!module.hasattr(name)) return result;
  const c10::IValue value = module.attr(name);
  const auto wrong = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("model attribute ", name, " must be List[float]"));
  };
  if (!value.isList()) return wrong();
  for (const c10::IValue& item : value.toListRef()) {
    if (!item.isDouble() && !item.isInt()) return wrong();
    result.push_back(static_cast<float>(item.isDouble() ? item.toDouble() : item.toInt()));
  }
  return result;
}

// An int attribute, or `fallback` when the module has none.
absl::StatusOr<int64_t> IntAttribute(const torch::jit::Module& module, const std::string& name,
                                     int64_t fallback) {
  if (!module.hasattr(name)) return fallback;
  const c10::IValue value = module.attr(name);
  if (!value.isInt() || value.toInt() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model attribute ", name, " must be a non-negative int"));
  }
  return value.toInt();
}

const c10::FunctionSchema& ForwardSchema(const torch::jit::Module& module) {
  return module.get_method("forward").function().getSchema();
}

// The tensor a graph value holds when it is a module attribute (self.a.b) or a constant.
std::optional<torch::Tensor> ParameterOf(const torch::jit::Module& module,
                                         torch::jit::Value* value) {
  if (const auto constant = torch::jit::toIValue(value)) {
    if (constant->isTensor()) return constant->toTensor();
    return std::nullopt;
  }
  std::vector<std::string> path;
  while (value->node()->kind() == c10::prim::GetAttr) {
    path.push_back(value->node()->s(c10::attr::name));
    value = value->node()->input(0);
  }
  if (path.empty() || value->node()->kind() != c10::prim::Param) return std::nullopt;
  c10::IValue current = module._ivalue();
  for (auto name = path.rbegin(); name != path.rend(); ++name) {
    if (!current.isObject()) return std::nullopt;
    const c10::intrusive_ptr<c10::ivalue::Object> object = current.toObject();
    if (!object->type()->hasAttribute(*name)) return std::nullopt;
    current = object->getAttr(*name);
  }
  if (!current.isTensor()) return std::nullopt;
  return current.toTensor();
}

// An input's spec read from the layer `user` that takes it as its `offset`-th input; nullopt
// when that layer says nothing about it.
std::optional<TensorSpec> SpecFromLayer(const torch::jit::Module& module, torch::jit::Node* user,
                                        size_t offset) {
  const std::string kind = user->kind().toQualString();
  const auto parameter = [&](size_t at) -> std::optional<torch::Tensor> {
    if (at >= user->inputs().size()) return std::nullopt;
    return ParameterOf(module, user->input(at));
  };
  TensorSpec spec;
  if ((kind == "aten::linear" || kind == "aten::matmul") && offset == 0) {
    // linear(x, weight [out, in]); matmul(x, w [in, out]).
    std::optional<torch::Tensor> weight = parameter(1);
    if (!weight || weight->dim() != 2) return std::nullopt;
    spec.dims = {weight->size(kind == "aten::linear" ? 1 : 0)};
    spec.type = WireType(weight->scalar_type()).value_or(DataType::kFp32);
    return spec;
  }
  if (kind == "aten::addmm" && offset == 1) {  // addmm(bias, x, w [in, out])
    std::optional<torch::Tensor> weight = parameter(2);
    if (!weight || weight->dim() != 2) return std::nullopt;
    spec.dims = {weight->size(0)};
    spec.type = WireType(weight->scalar_type()).value_or(DataType::kFp32);
    return spec;
  }
  if ((kind == "aten::conv1d" || kind == "aten::conv2d" || kind == "aten::conv3d" ||
       kind == "aten::_convolution") &&
      offset == 0) {
    // conv(x [n, in, spatial...], weight [out, in / groups, kernel...], ..., groups last).
    std::optional<torch::Tensor> weight = parameter(1);
    if (!weight || weight->dim() < 3) return std::nullopt;
    int64_t groups = 1;
    if (kind != "aten::_convolution" && user->inputs().size() >= 7) {
      const auto value = torch::jit::toIValue(user->input(6));
      if (!value || !value->isInt()) return std::nullopt;
      groups = value->toInt();
    }
    spec.dims = {weight->size(1) * groups};
    for (int64_t i = 2; i < weight->dim(); ++i) spec.dims.push_back(kAnySize);
    spec.type = WireType(weight->scalar_type()).value_or(DataType::kFp32);
    return spec;
  }
  if (kind == "aten::embedding" && offset == 1) {  // embedding(weight, ids, ...)
    spec.dims = {kAnySize};
    spec.type = DataType::kInt64;
    return spec;
  }
  return std::nullopt;
}

}  // namespace

torch::ScalarType TorchType(DataType type) {
  switch (type) {
    case DataType::kBool:
      return torch::kBool;
    case DataType::kUint8:
      return torch::kByte;
    case DataType::kInt8:
      return torch::kChar;
    case DataType::kInt16:
      return torch::kShort;
    case DataType::kInt32:
      return torch::kInt;
    case DataType::kInt64:
      return torch::kLong;
    case DataType::kFp16:
      return torch::kHalf;
    case DataType::kBf16:
      return torch::kBFloat16;
    case DataType::kFp32:
      return torch::kFloat;
    case DataType::kFp64:
      return torch::kDouble;
  }
  return torch::kFloat;
}

std::optional<DataType> WireType(torch::ScalarType type) {
  for (const DataType wire : kAllDataTypes) {
    if (TorchType(wire) == type) return wire;
  }
  return std::nullopt;
}

// TorchScript errors put a traceback first and the error itself on the last line; other errors
// lead with it (after blank lines, for TorchScript compile errors).
std::string Summary(const char* message) {
  const std::string text(message);
  if (text.find("Traceback of TorchScript") == std::string::npos) {
    const size_t start = std::min(text.find_first_not_of('\n'), text.size());
    return text.substr(start, text.find('\n', start) - start);
  }
  const size_t end = text.find_last_not_of("\n") + 1;
  const size_t start = text.rfind('\n', end - 1);
  return text.substr(start == std::string::npos ? 0 : start + 1, end - start - 1);
}

absl::StatusOr<std::optional<ModelSignature>> SeedAttributeSignature(
    const torch::jit::Module& module, int64_t max_batch_size) {
  static const char* const kAttributes[] = {"input_var_order", "output_var_order", "default_params",
                                            "num_inputs", "num_params"};
  if (std::none_of(std::begin(kAttributes), std::end(kAttributes),
                   [&](const char* name) { return module.hasattr(name); })) {
    return std::nullopt;
  }
  const size_t arguments = ForwardSchema(module).arguments().size() - 1;  // self
  if (arguments != 1 && arguments != 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model forward must take (x) or (x, params) tensors; it takes ", arguments, " arguments"));
  }
  absl::StatusOr<std::vector<std::string>> inputs = StringListAttribute(module, "input_var_order");
  if (!inputs.ok()) return inputs.status();
  absl::StatusOr<std::vector<std::string>> outputs =
      StringListAttribute(module, "output_var_order");
  if (!outputs.ok()) return outputs.status();
  absl::StatusOr<std::vector<float>> defaults = FloatListAttribute(module, "default_params");
  if (!defaults.ok()) return defaults.status();
  absl::StatusOr<int64_t> num_inputs = IntAttribute(module, "num_inputs", inputs->size());
  if (!num_inputs.ok()) return num_inputs.status();
  absl::StatusOr<int64_t> num_params = IntAttribute(module, "num_params", defaults->size());
  if (!num_params.ok()) return num_params.status();

  if (*num_inputs == 0) {
    return absl::InvalidArgumentError(
        "model declares neither input_var_order (List[str]) nor num_inputs (int); "
        "one is needed to know its input width");
  }
  if (!inputs->empty() && static_cast<int64_t>(inputs->size()) != *num_inputs) {
    return absl::InvalidArgumentError("model attributes input_var_order and num_inputs disagree");
  }
  if (arguments == 2 && *num_params == 0) {
    return absl::InvalidArgumentError(
        "model forward takes params but the model declares neither default_params "
        "(List[float]) nor num_params (int)");
  }
  if (arguments == 1 && (*num_params > 0 || !defaults->empty())) {
    return absl::InvalidArgumentError(
        "model declares tunable parameters but its forward takes only x");
  }
  if (!defaults->empty() && static_cast<int64_t>(defaults->size()) != *num_params) {
    return absl::InvalidArgumentError("model attributes default_params and num_params disagree");
  }

  SeedSignature seed;
  seed.input_names = *std::move(inputs);
  seed.output_names = *std::move(outputs);
  seed.num_inputs = *num_inputs;
  seed.num_params = *num_params;
  seed.default_params = *std::move(defaults);
  ModelSignature signature = SeedModelSignature(std::move(seed), max_batch_size);
  signature.outputs[0].dims = {kAnySize};  // until a forward tells the width
  return signature;
}

absl::StatusOr<std::vector<TensorSpec>> ReadInputs(const torch::jit::Module& module) {
  const std::vector<c10::Argument>& arguments = ForwardSchema(module).arguments();
  std::shared_ptr<torch::jit::Graph> graph = module.get_method("forward").graph()->copy();
  torch::jit::Inline(*graph);
  std::vector<TensorSpec> inputs;
  for (size_t i = 1; i < arguments.size(); ++i) {
    const c10::Argument& argument = arguments[i];
    if (argument.default_value().has_value()) continue;  // left to its default
    if (argument.type()->kind() != c10::TypeKind::TensorType) {
      return absl::InvalidArgumentError(
          absl::StrCat("forward argument \"", argument.name(), "\" is a ", argument.type()->str(),
                       ", not a Tensor; describe the model in a config.pbtxt"));
    }
    std::optional<TensorSpec> spec;
    std::vector<std::string> reached;
    for (const torch::jit::Use& use : graph->inputs()[i]->uses()) {
      spec = SpecFromLayer(module, use.user, use.offset);
      if (spec) break;
      reached.push_back(use.user->kind().toQualString());
    }
    if (!spec) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot read the type and size of forward argument \"", argument.name(),
          "\" (its first layer is ", reached.empty() ? "none" : absl::StrJoin(reached, ", "),
          "; readable: linear, matmul, addmm, conv, embedding); describe the model in a "
          "config.pbtxt"));
    }
    spec->name = argument.name();
    inputs.push_back(*std::move(spec));
  }
  if (inputs.empty()) return absl::InvalidArgumentError("model forward takes no tensor");
  return inputs;
}

absl::StatusOr<std::vector<size_t>> BindInputs(const torch::jit::Module& module,
                                               const std::vector<TensorSpec>& inputs) {
  const std::vector<c10::Argument>& arguments = ForwardSchema(module).arguments();
  const size_t count = arguments.size() - 1;  // self
  std::vector<std::string> names;
  for (size_t i = 1; i < arguments.size(); ++i) names.push_back(arguments[i].name());
  const std::string forward_text = absl::StrCat("forward(", absl::StrJoin(names, ", "), ")");
  std::vector<size_t> positions;
  std::vector<bool> bound(count, false);
  // Triton's third rule: where a name is neither an argument's nor <name>__<index>, every input
  // binds by its place in the configuration.
  const auto named_or_indexed = [&](const TensorSpec& input) {
    return std::find(names.begin(), names.end(), input.name) != names.end() ||
           NameIndex(input.name).has_value();
  };
  const bool by_order = !std::all_of(inputs.begin(), inputs.end(), named_or_indexed);
  if (by_order && inputs.size() > count) {
    std::vector<std::string> declared;
    for (const TensorSpec& input : inputs) declared.push_back(absl::StrCat("\"", input.name, "\""));
    return absl::InvalidArgumentError(absl::StrCat(
        "the config declares ", inputs.size(), " inputs (", absl::StrJoin(declared, ", "), ") for ",
        forward_text,
        "; names that are neither forward's arguments nor <name>__<index> bind by their order"));
  }
  for (const TensorSpec& input : inputs) {
    if (by_order) {
      bound[positions.size()] = true;
      positions.push_back(positions.size());
      continue;
    }
    std::optional<size_t> position;
    const auto named = std::find(names.begin(), names.end(), input.name);
    if (named != names.end()) {
      position = static_cast<size_t>(named - names.begin());
    } else {
      position = NameIndex(input.name);
    }
    if (!position || *position >= count) {
      return absl::InvalidArgumentError(absl::StrCat("input \"", input.name,
                                                     "\" binds to no argument of ", forward_text,
                                                     " (its __<index> is past the last)"));
    }
    if (bound[*position]) {
      return absl::InvalidArgumentError(absl::StrCat("input \"", input.name, "\" binds to ",
                                                     "argument \"", names[*position], "\" of ",
                                                     forward_text, ", as another does"));
    }
    bound[*position] = true;
    positions.push_back(*position);
  }
  for (size_t i = 0; i < count; ++i) {
    if (!bound[i] && !arguments[i + 1].default_value().has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("argument \"", names[i], "\" of ",
                                                     forward_text, " has no input bound to it"));
    }
  }
  return positions;
}

absl::StatusOr<std::vector<std::pair<std::string, torch::Tensor>>> NamedOutputs(
    const c10::IValue& result) {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  const auto not_tensor = [](const std::string& where) {
    return absl::InvalidArgumentError(
        absl::StrCat("model forward returned a non-tensor ", where,
                     "; outputs must be tensors, tuples or lists of them, or dicts of them"));
  };
  if (result.isTensor()) {
    named.emplace_back("OUTPUT__0", result.toTensor());
  } else if (result.isTuple() || result.isList()) {
    const std::vector<c10::IValue> elements =
        result.isTuple() ? result.toTupleRef().elements().vec() : result.toList().vec();
    for (size_t i = 0; i < elements.size(); ++i) {
      if (!elements[i].isTensor()) return not_tensor(absl::StrCat("element ", i));
      named.emplace_back(absl::StrCat("OUTPUT__", i), elements[i].toTensor());
    }
  } else if (result.isGenericDict()) {
    for (const auto& entry : result.toGenericDict()) {
      if (!entry.key().isString()) return not_tensor("dict key");
      if (!entry.value().isTensor())
        return not_tensor(absl::StrCat("value ", entry.key().toStringRef()));
      named.emplace_back(entry.key().toStringRef(), entry.value().toTensor());
    }
  } else {
    return not_tensor(result.tagKind());
  }
  return named;
}

absl::StatusOr<std::vector<torch::Tensor>> SelectOutputs(const c10::IValue& result,
                                                         const std::vector<TensorSpec>& outputs) {
  std::vector<torch::Tensor> selected;
  if (result.isTensor()) {
    if (outputs.size() != 1) {
      return absl::InternalError(
          absl::StrCat("model forward returned one tensor; expected ", outputs.size(), " outputs"));
    }
    selected.push_back(result.toTensor());
    return selected;
  }
  if (result.isTuple() || result.isList()) {
    const std::vector<c10::IValue> elements =
        result.isTuple() ? result.toTupleRef().elements().vec() : result.toList().vec();
    for (size_t i = 0; i < outputs.size(); ++i) {
      const size_t index = NameIndex(outputs[i].name).value_or(i);
      if (index >= elements.size() || !elements[index].isTensor()) {
        return absl::InternalError(absl::StrCat("model forward returned ", elements.size(),
                                                " elements, no tensor ", index, " for output \"",
                                                outputs[i].name, "\""));
      }
      selected.push_back(elements[index].toTensor());
    }
    return selected;
  }
  if (result.isGenericDict()) {
    const c10::Dict<c10::IValue, c10::IValue> dict = result.toGenericDict();
    for (const TensorSpec& output : outputs) {
      const auto found = dict.find(c10::IValue(output.name));
      if (found == dict.end() || !found->value().isTensor()) {
        return absl::InternalError(
            absl::StrCat("model forward returned a dict without tensor \"", output.name, "\""));
      }
      selected.push_back(found->value().toTensor());
    }
    return selected;
  }
  return absl::InternalError(absl::StrCat("model forward returned ", result.tagKind(),
                                          "; expected a tensor, a tuple, a list or a dict"));
}

}  // namespace model_server::handlers
