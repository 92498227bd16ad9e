#include "handlers/signature.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace model_server::handlers {
namespace {

// FP32 with one fixed dimension, as a seed column tensor is.
bool IsColumns(const TensorSpec& spec) {
  return spec.type == DataType::kFp32 && spec.dims.size() == 1 && spec.dims[0] > 0 &&
         !spec.reshaped;
}

std::vector<std::string> SplitNames(const std::string& text) {
  std::vector<std::string> names;
  for (absl::string_view name : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    names.emplace_back(absl::StripAsciiWhitespace(name));
  }
  return names;
}

}  // namespace

absl::StatusOr<std::optional<SeedDeclaration>> ParseSeedParameters(
    const std::map<std::string, std::string>& parameters) {
  bool any = false;
  for (const char* key : kSeedParameterNames) any = any || parameters.count(key) > 0;
  if (!any) return std::nullopt;
  const auto text = [&](const char* key) {
    const auto found = parameters.find(key);
    return found == parameters.end() ? std::string() : found->second;
  };
  SeedDeclaration declaration;
  declaration.columns = std::string(absl::StripAsciiWhitespace(text("seed_columns")));
  declaration.params = std::string(absl::StripAsciiWhitespace(text("seed_params")));
  declaration.output = std::string(absl::StripAsciiWhitespace(text("seed_output")));
  declaration.input_names = SplitNames(text("input_var_order"));
  declaration.output_names = SplitNames(text("output_var_order"));
  for (const std::string& number : SplitNames(text("default_params"))) {
    float value = 0;
    if (!absl::SimpleAtof(number, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("default_params: \"", number, "\" is not a number"));
    }
    declaration.default_params.push_back(value);
  }
  return declaration;
}

ModelSignature SeedModelSignature(SeedSignature seed, int64_t max_batch_size) {
  ModelSignature signature;
  signature.max_batch_size = max_batch_size;
  seed.columns_input = 0;
  signature.inputs.push_back(MakeSpec("x", DataType::kFp32, {seed.num_inputs}));
  seed.params_input.reset();
  if (seed.num_params > 0) {
    TensorSpec params = MakeSpec("params", DataType::kFp32, {seed.num_params});
    if (!seed.default_params.empty()) {
      params.optional = true;
      params.default_value = std::string(reinterpret_cast<const char*>(seed.default_params.data()),
                                         seed.default_params.size() * sizeof(float));
    }
    seed.params_input = signature.inputs.size();
    signature.inputs.push_back(std::move(params));
  }
  seed.output = 0;
  signature.outputs.push_back(MakeSpec("y", DataType::kFp32, {seed.num_outputs}));
  signature.seed = std::move(seed);
  return signature;
}

std::optional<SeedSignature> DefaultSeedSignature(const ModelSignature& signature) {
  const std::vector<TensorSpec>& inputs = signature.inputs;
  if (!signature.batches() || inputs.empty() || inputs.size() > 2) return std::nullopt;
  SeedSignature seed;
  if (inputs.size() == 2) {
    const bool params_first = inputs[0].name == "params";
    if (!params_first && inputs[1].name != "params") return std::nullopt;
    seed.columns_input = params_first ? 1 : 0;
    seed.params_input = params_first ? 0 : 1;
    const TensorSpec& params = inputs[*seed.params_input];
    if (!IsColumns(params)) return std::nullopt;
    seed.num_params = params.dims[0];
    if (params.default_value && params.default_value->size() == seed.num_params * sizeof(float)) {
      seed.default_params.resize(seed.num_params);
      std::memcpy(seed.default_params.data(), params.default_value->data(),
                  seed.default_params.size() * sizeof(float));
    }
  }
  if (!IsColumns(inputs[seed.columns_input]) || inputs[seed.columns_input].optional) {
    return std::nullopt;
  }
  seed.num_inputs = inputs[seed.columns_input].dims[0];
  for (size_t i = 0; i < signature.outputs.size(); ++i) {
    if (!IsColumns(signature.outputs[i])) continue;
    seed.output = i;
    seed.num_outputs = signature.outputs[i].dims[0];
    return seed;
  }
  return std::nullopt;
}

absl::Status ApplySeedDeclaration(const SeedDeclaration& declaration, ModelSignature* signature) {
  const auto find = [](const std::vector<TensorSpec>& specs,
                       const std::string& name) -> std::optional<size_t> {
    for (size_t i = 0; i < specs.size(); ++i) {
      if (specs[i].name == name) return i;
    }
    return std::nullopt;
  };
  const auto wrong = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("seed mapping: ", what));
  };
  if (!signature->batches()) return wrong("the seed's columns need a model that batches");
  SeedSignature seed;
  const auto columns_of = [&](const std::vector<TensorSpec>& specs, const std::string& name,
                              const char* kind, size_t* index) -> absl::StatusOr<int64_t> {
    const std::optional<size_t> found = find(specs, name);
    if (!found) return wrong(absl::StrCat("no ", kind, " \"", name, "\""));
    if (!IsColumns(specs[*found])) {
      return wrong(absl::StrCat(kind, " ", SpecText(specs[*found], true),
                                " is not FP32 of one fixed dimension"));
    }
    *index = *found;
    return specs[*found].dims[0];
  };
  absl::StatusOr<int64_t> width =
      columns_of(signature->inputs, declaration.columns, "input", &seed.columns_input);
  if (!width.ok()) return width.status();
  seed.num_inputs = *width;
  width = columns_of(signature->outputs, declaration.output, "output", &seed.output);
  if (!width.ok()) return width.status();
  seed.num_outputs = *width;
  if (!declaration.params.empty()) {
    size_t params = 0;
    width = columns_of(signature->inputs, declaration.params, "input", &params);
    if (!width.ok()) return width.status();
    if (params == seed.columns_input) return wrong("the columns and the parameters are one input");
    seed.params_input = params;
    seed.num_params = *width;
  } else if (!declaration.default_params.empty()) {
    return wrong("default parameters without a parameters input");
  }
  if (!declaration.input_names.empty() &&
      static_cast<int64_t>(declaration.input_names.size()) != seed.num_inputs) {
    return wrong(absl::StrCat("input_var_order names ", declaration.input_names.size(),
                              " columns; the input has ", seed.num_inputs));
  }
  if (static_cast<int64_t>(declaration.output_names.size()) > seed.num_outputs) {
    return wrong(absl::StrCat("output_var_order names ", declaration.output_names.size(),
                              " columns; the output has ", seed.num_outputs));
  }
  if (!declaration.default_params.empty() &&
      static_cast<int64_t>(declaration.default_params.size()) != seed.num_params) {
    return wrong(absl::StrCat("default_params has ", declaration.default_params.size(),
                              " values; the parameters input has ", seed.num_params));
  }
  for (size_t i = 0; i < signature->inputs.size(); ++i) {
    const TensorSpec& input = signature->inputs[i];
    const bool mapped = i == seed.columns_input || (seed.params_input && i == *seed.params_input);
    if (!mapped && !(input.optional && input.default_value)) {
      return wrong(absl::StrCat("input \"", input.name,
                                "\" is neither the columns nor the parameters and has no default"));
    }
  }
  seed.input_names = declaration.input_names;
  seed.output_names = declaration.output_names;
  seed.default_params = declaration.default_params;
  if (seed.params_input && !seed.default_params.empty()) {
    TensorSpec& params = signature->inputs[*seed.params_input];
    params.optional = true;
    params.default_value = std::string(reinterpret_cast<const char*>(seed.default_params.data()),
                                       seed.default_params.size() * sizeof(float));
  }
  signature->seed = std::move(seed);
  return absl::OkStatus();
}

std::string SignatureDifference(const ModelSignature& serving, const ModelSignature& next) {
  std::vector<std::string> differences;
  const auto compare = [&](const char* kind, const std::vector<TensorSpec>& before,
                           const std::vector<TensorSpec>& after) {
    for (size_t i = 0; i < std::max(before.size(), after.size()); ++i) {
      if (i >= before.size()) {
        differences.push_back(absl::StrCat("new ", kind, " ", SpecText(after[i], next.batches())));
      } else if (i >= after.size()) {
        differences.push_back(
            absl::StrCat("no ", kind, " ", SpecText(before[i], serving.batches())));
      } else {
        const TensorSpec& a = before[i];
        const TensorSpec& b = after[i];
        if (a.name != b.name || a.type != b.type || a.dims != b.dims || a.optional != b.optional ||
            a.default_value != b.default_value) {
          differences.push_back(absl::StrCat(
              kind, " ", SpecText(b, next.batches()), b.optional ? " (optional)" : "",
              " instead of ", SpecText(a, serving.batches()), a.optional ? " (optional)" : ""));
        }
      }
    }
  };
  compare("input", serving.inputs, next.inputs);
  compare("output", serving.outputs, next.outputs);
  if (serving.max_batch_size != next.max_batch_size) {
    differences.push_back(absl::StrCat("max_batch_size ", next.max_batch_size, " instead of ",
                                       serving.max_batch_size));
  }
  if (serving.seed.has_value() != next.seed.has_value()) {
    differences.push_back(next.seed ? "a seed mapping" : "no seed mapping");
  } else if (serving.seed) {
    const SeedSignature& a = *serving.seed;
    const SeedSignature& b = *next.seed;
    if (a.input_names != b.input_names) differences.push_back("other input_var_order");
    if (a.output_names != b.output_names) differences.push_back("other output_var_order");
    if (a.default_params != b.default_params) differences.push_back("other default_params");
  }
  return absl::StrJoin(differences, ", ");
}

void FillDefaultInputs(const ModelSignature& signature, const std::vector<Dims>& shapes,
                       const std::vector<char*>& buffers) {
  for (size_t i = 0; i < shapes.size(); ++i) {
    const TensorSpec& input = signature.inputs[i];
    const size_t bytes = ElementCount(shapes[i]).value_or(0) * ElementSize(input.type);
    const std::string* value = input.default_value ? &*input.default_value : nullptr;
    if (value == nullptr || value->empty() || bytes % value->size() != 0) {
      std::memset(buffers[i], 0, bytes);
      continue;
    }
    for (size_t at = 0; at < bytes; at += value->size()) {
      std::memcpy(buffers[i] + at, value->data(), value->size());
    }
  }
}

}  // namespace model_server::handlers
