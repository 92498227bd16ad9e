#include "handlers/aoti_package.h"

#include <algorithm>
#include <cstdlib>
#include <regex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "handlers/signature.h"

namespace model_server::handlers {
namespace {

constexpr std::pair<const char*, DataType> kAotiTypes[] = {
    {"bool", DataType::kBool},    {"uint8", DataType::kUint8},   {"int8", DataType::kInt8},
    {"int16", DataType::kInt16},  {"int32", DataType::kInt32},   {"int64", DataType::kInt64},
    {"float16", DataType::kFp16}, {"bfloat16", DataType::kBf16}, {"float32", DataType::kFp32},
    {"float64", DataType::kFp64},
};

int64_t ToInt(const std::string& text) { return std::stoll(text); }

// The dimension `d` of `input`, created (unconstrained) with those before it.
CheckedDim& DimAt(CheckedInput& input, size_t d) {
  if (input.dims.size() <= d) input.dims.resize(d + 1);
  return input.dims[d];
}

std::string RangeText(const BatchRange& range) {
  return range.max ? absl::StrCat(range.min, " to ", *range.max) : absl::StrCat(range.min, "+");
}

// "[n, 3]" / "[3]" for a checked input's shape.
std::string CheckedShapeText(const CheckedInput& input, bool batches) {
  std::vector<std::string> parts;
  for (size_t d = 0; d < input.dims.size(); ++d) {
    const CheckedDim& dim = input.dims[d];
    if (d == 0 && batches) {
      parts.push_back("n");
    } else if (dim.fixed()) {
      parts.push_back(absl::StrCat(dim.min));
    } else {
      parts.push_back(dim.max ? absl::StrCat(dim.min, "..", *dim.max) : "-1");
    }
  }
  return absl::StrCat("[", absl::StrJoin(parts, ", "), "]");
}

}  // namespace

std::optional<DataType> AotiTypeFromName(std::string_view name) {
  for (const auto& [text, type] : kAotiTypes) {
    if (name == text) return type;
  }
  return std::nullopt;
}

std::vector<CheckedInput> ReadInputChecks(std::string_view wrapper_source) {
  const std::string source(wrapper_source);
  // check_input_<i>: ConstantHandle <var> = ConstantHandle(input_handles[<i>]); then the
  // expected dtype and one `if` per size (a fixed size or the bounds of a range).
  static const std::regex handle(
      R"(ConstantHandle (\w+) = ConstantHandle\(input_handles\[(\d+)\]\);)");
  static const std::regex dtype(R"(int32_t (\w+)_expected_dtype = aoti_torch_dtype_(\w+)\(\);)");
  static const std::regex below(R"(if \((\w+)_size\[(\d+)\] < (-?\d+)\))");
  static const std::regex above(R"(if \((\w+)_size\[(\d+)\] > (-?\d+)\))");
  static const std::regex fixed(R"(if \((-?\d+) != (\w+)_size\[(\d+)\]\))");
  std::map<std::string, size_t> index_of;
  size_t count = 0;
  for (auto it = std::sregex_iterator(source.begin(), source.end(), handle);
       it != std::sregex_iterator(); ++it) {
    const size_t index = static_cast<size_t>(ToInt((*it)[2]));
    index_of[(*it)[1]] = index;
    count = std::max(count, index + 1);
  }
  std::vector<CheckedInput> inputs(count);
  const auto input_of = [&](const std::string& var) -> CheckedInput* {
    const auto found = index_of.find(var);
    return found == index_of.end() ? nullptr : &inputs[found->second];
  };
  for (auto it = std::sregex_iterator(source.begin(), source.end(), dtype);
       it != std::sregex_iterator(); ++it) {
    if (CheckedInput* input = input_of((*it)[1])) {
      input->type_name = (*it)[2];
      input->type = AotiTypeFromName(input->type_name);
    }
  }
  for (auto it = std::sregex_iterator(source.begin(), source.end(), below);
       it != std::sregex_iterator(); ++it) {
    if (CheckedInput* input = input_of((*it)[1])) {
      DimAt(*input, ToInt((*it)[2])).min = ToInt((*it)[3]);
    }
  }
  for (auto it = std::sregex_iterator(source.begin(), source.end(), above);
       it != std::sregex_iterator(); ++it) {
    if (CheckedInput* input = input_of((*it)[1])) {
      DimAt(*input, ToInt((*it)[2])).max = ToInt((*it)[3]);
    }
  }
  for (auto it = std::sregex_iterator(source.begin(), source.end(), fixed);
       it != std::sregex_iterator(); ++it) {
    if (CheckedInput* input = input_of((*it)[2])) {
      CheckedDim& dim = DimAt(*input, ToInt((*it)[3]));
      dim.min = ToInt((*it)[1]);
      dim.max = dim.min;
    }
  }
  return inputs;
}

absl::StatusOr<std::vector<TensorSpec>> ParseSpecList(const std::string& text) {
  std::vector<TensorSpec> specs;
  for (absl::string_view item : absl::StrSplit(text, ';', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    const auto wrong = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat("\"", item, "\": ", why,
                                                     " (write NAME TYPE [D1, D2], e.g. "
                                                     "\"x FP32 [3]\")"));
    };
    const size_t open = item.find('[');
    if (open == absl::string_view::npos || item.back() != ']') return wrong("no [dims]");
    const std::vector<absl::string_view> words =
        absl::StrSplit(item.substr(0, open), ' ', absl::SkipWhitespace());
    if (words.size() != 2) return wrong("not a name and a type before the dims");
    TensorSpec spec;
    spec.name = std::string(words[0]);
    const std::optional<DataType> type =
        FromWireName(std::string_view(words[1].data(), words[1].size()));
    if (!type) return wrong(absl::StrCat("unknown type ", words[1]));
    spec.type = *type;
    const absl::string_view dims = item.substr(open + 1, item.size() - open - 2);
    for (absl::string_view dim : absl::StrSplit(dims, ',', absl::SkipWhitespace())) {
      int64_t size = 0;
      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(dim), &size) || size < kAnySize) {
        return wrong(absl::StrCat("dimension \"", dim, "\" is not a size or -1"));
      }
      spec.dims.push_back(size);
    }
    for (const TensorSpec& other : specs) {
      if (other.name == spec.name) return wrong("a name given twice");
    }
    specs.push_back(std::move(spec));
  }
  if (specs.empty()) return absl::InvalidArgumentError("names no tensor");
  return specs;
}

std::string SpecListText(const std::vector<TensorSpec>& specs) {
  std::vector<std::string> parts;
  for (const TensorSpec& spec : specs) {
    parts.push_back(absl::StrCat(spec.name, " ", WireName(spec.type), " ", DimsText(spec.dims)));
  }
  return absl::StrJoin(parts, "; ");
}

absl::StatusOr<ServerMetadata> ReadServerMetadata(
    const std::map<std::string, std::string>& metadata) {
  ServerMetadata read;
  for (const auto& [key, value] : metadata) {
    if (key.rfind(kMetadataPrefix, 0) != 0) continue;
    const auto wrong = [&, &key = key](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("package metadata ", key, ": ", why));
    };
    if (key == kMetadataInputs || key == kMetadataOutputs) {
      absl::StatusOr<std::vector<TensorSpec>> specs = ParseSpecList(value);
      if (!specs.ok()) return wrong(specs.status().message());
      (key == kMetadataInputs ? read.inputs : read.outputs) = *std::move(specs);
    } else if (key == kMetadataMinBatch || key == kMetadataMaxBatch) {
      int64_t rows = 0;
      if (!absl::SimpleAtoi(value, &rows) || rows < 1) {
        return wrong(absl::StrCat("\"", value, "\" is not a number of rows (1 or more)"));
      }
      (key == kMetadataMinBatch ? read.min_batch_size : read.max_batch_size) = rows;
    } else {
      const std::string name = key.substr(std::string_view(kMetadataPrefix).size());
      const bool seed = std::any_of(std::begin(kSeedParameterNames), std::end(kSeedParameterNames),
                                    [&](const char* known) { return name == known; });
      if (!seed) {
        return wrong(absl::StrCat(
            "unknown key (known: inputs, outputs, min_batch_size, max_batch_size, ",
            absl::StrJoin(std::begin(kSeedParameterNames), std::end(kSeedParameterNames), ", "),
            ")"));
      }
      read.seed[name] = value;
    }
  }
  if (read.min_batch_size && read.max_batch_size && *read.min_batch_size > *read.max_batch_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("package metadata: min_batch_size ", *read.min_batch_size,
                     " is above max_batch_size ", *read.max_batch_size));
  }
  return read;
}

bool RuntimeInputChecksEnabled() {
  const char* value = std::getenv("AOTI_RUNTIME_CHECK_INPUTS");
  return value != nullptr && value[0] != '\0' && value[0] != '0';
}

absl::StatusOr<BatchRange> PackageBatchRange(const ServerMetadata& metadata,
                                             const std::vector<CheckedInput>& checks,
                                             bool checks_enforced) {
  BatchRange checked;
  checked.source = "its compiled input checks";
  bool any_check = false;
  for (size_t i = 0; i < checks.size(); ++i) {
    if (checks[i].dims.empty()) {
      if (metadata.min_batch_size && metadata.max_batch_size) continue;
      return absl::InvalidArgumentError(
          absl::StrCat("its input ", i, " has no batch dimension in the package's checks"));
    }
    const CheckedDim& batch = checks[i].dims[0];
    checked.min = any_check ? std::max(checked.min, batch.min) : batch.min;
    if (batch.max) checked.max = checked.max ? std::min(*checked.max, *batch.max) : *batch.max;
    any_check = true;
  }
  checked.min = std::max<int64_t>(checked.min, 1);
  if (!metadata.min_batch_size && !metadata.max_batch_size) {
    if (!any_check) {
      return absl::InvalidArgumentError(
          "cannot tell which batch sizes the package accepts: it has no model_server metadata "
          "(scripts/export_model.py writes it) and no input checks this server reads");
    }
    return checked;
  }
  BatchRange range;
  range.source = "its metadata";
  range.min = metadata.min_batch_size.value_or(any_check ? checked.min : 1);
  range.max = metadata.max_batch_size ? metadata.max_batch_size : checked.max;
  if (checks_enforced && any_check) {
    range.source = "its metadata and its compiled input checks (AOTI_RUNTIME_CHECK_INPUTS)";
    range.min = std::max(range.min, checked.min);
    if (checked.max) range.max = range.max ? std::min(*range.max, *checked.max) : *checked.max;
  }
  return range;
}

absl::StatusOr<BatchPlan> PlanBatches(const BatchRange& range, int64_t max_batch_size) {
  if (range.max && *range.max == range.min) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the package takes a static batch of ", range.min, range.min == 1 ? " row" : " rows", " (",
        range.source,
        "; exported without a dynamic batch dimension), so requests cannot be batched: export "
        "it with torch.export.Dim(\"batch\", min=1, max=N) on dimension 0 of every input "
        "(scripts/export_model.py does), or serve it unbatched with max_batch_size: 0 in "
        "config.pbtxt"));
  }
  if (range.min > max_batch_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the package accepts batches of ", RangeText(range), " rows (", range.source,
        ") and none fits max_batch_size ", max_batch_size,
        ": raise max_batch_size or export the package with torch.export.Dim(\"batch\", min=1)"));
  }
  BatchPlan plan;
  plan.max_batch_size = range.max ? std::min(max_batch_size, *range.max) : max_batch_size;
  plan.pad_to = range.min;
  return plan;
}

std::string CheckedDifference(const std::vector<TensorSpec>& inputs, bool batches,
                              const std::vector<CheckedInput>& checks) {
  if (checks.empty()) return "";
  if (checks.size() != inputs.size()) {
    return absl::StrCat("the package takes ", checks.size(), " inputs; the signature has ",
                        inputs.size());
  }
  std::vector<std::string> differences;
  const size_t skip = batches ? 1 : 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorSpec& spec = inputs[i];
    const CheckedInput& check = checks[i];
    const Dims& dims = spec.reshaped ? spec.reshape : spec.dims;
    const auto differ = [&](const std::string& what) {
      differences.push_back(absl::StrCat("input ", i, " \"", spec.name, "\": ", what));
    };
    if (!check.type_name.empty() && (!check.type || *check.type != spec.type)) {
      differ(absl::StrCat(WireName(spec.type), " where the package takes ",
                          check.type ? WireName(*check.type) : check.type_name.c_str()));
      continue;
    }
    bool fits = check.dims.size() == dims.size() + skip;
    for (size_t d = 0; fits && d < dims.size(); ++d) {
      const CheckedDim& dim = check.dims[d + skip];
      if (dims[d] == kAnySize) {
        fits = !dim.fixed();
      } else {
        fits = dims[d] >= dim.min && (!dim.max || dims[d] <= *dim.max);
      }
    }
    if (!fits) {
      std::string text = DimsText(dims);
      if (batches) text.insert(1, dims.empty() ? "n" : "n, ");
      differ(absl::StrCat(text, " where the package takes ", CheckedShapeText(check, batches)));
    }
  }
  return absl::StrJoin(differences, "; ");
}

}  // namespace model_server::handlers
