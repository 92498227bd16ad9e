#include "handlers/aoti_package.h"

#include <catch2/catch.hpp>
#include <string>

#include "absl/strings/match.h"
#include "handlers/signature.h"

namespace model_server::handlers {
namespace {

// The input checks AOTInductor (torch 2.15) compiled into a package of forward(x [n, 3],
// params [n, 5]) exported with Dim("batch", min=1, max=64), cut down to the lines read.
constexpr char kTwoInputChecks[] = R"(
AOTI_NOINLINE static void check_input_0(
    AtenTensorHandle* input_handles
) {
    ConstantHandle arg2_1 = ConstantHandle(input_handles[0]);
    int32_t arg2_1_dtype;
    AOTI_TORCH_ERROR_CODE_CHECK(aoti_torch_get_dtype(arg2_1, &arg2_1_dtype));

    int32_t arg2_1_expected_dtype = aoti_torch_dtype_float32();
    auto arg2_1_size = arg2_1.sizes();

    if (arg2_1_size[0] < 2) {
        std::stringstream ss;
    }

    if (arg2_1_size[0] > 64) {
        std::stringstream ss;
    }

    if (3 != arg2_1_size[1]) {
        std::stringstream ss;
    }
}

AOTI_NOINLINE static void check_input_1(
    AtenTensorHandle* input_handles
) {
    ConstantHandle arg3_1 = ConstantHandle(input_handles[1]);
    int32_t arg3_1_expected_dtype = aoti_torch_dtype_int64();
    auto arg3_1_size = arg3_1.sizes();

    if (arg3_1_size[0] < 16) {
    }

    if (arg3_1_size[0] > 48) {
    }

    if (5 != arg3_1_size[1]) {
    }
}
    auto arg2_1_size = arg2_1.sizes();
    if (some_other_size[0] > 3) {}
)";

// A package exported without Dim: batch fixed at 1.
constexpr char kStaticChecks[] = R"(
    ConstantHandle arg2_1 = ConstantHandle(input_handles[0]);
    int32_t arg2_1_expected_dtype = aoti_torch_dtype_float32();
    if (1 != arg2_1_size[0]) {
    if (3 != arg2_1_size[1]) {
)";

TEST_CASE("ReadInputChecks reads types, sizes and ranges per input") {
  const std::vector<CheckedInput> inputs = ReadInputChecks(kTwoInputChecks);
  REQUIRE(inputs.size() == 2);
  CHECK(inputs[0].type == DataType::kFp32);
  CHECK(inputs[0].type_name == "float32");
  REQUIRE(inputs[0].dims.size() == 2);
  CHECK(inputs[0].dims[0].min == 2);
  CHECK(inputs[0].dims[0].max == 64);
  CHECK_FALSE(inputs[0].dims[0].fixed());
  CHECK(inputs[0].dims[1].fixed());
  CHECK(inputs[0].dims[1].min == 3);
  CHECK(inputs[1].type == DataType::kInt64);
  CHECK(inputs[1].dims[0].min == 16);
  CHECK(inputs[1].dims[0].max == 48);

  const std::vector<CheckedInput> fixed = ReadInputChecks(kStaticChecks);
  REQUIRE(fixed.size() == 1);
  CHECK(fixed[0].dims[0].fixed());
  CHECK(fixed[0].dims[0].min == 1);

  CHECK(ReadInputChecks("no checks here").empty());
  CHECK(ReadInputChecks(R"(ConstantHandle a = ConstantHandle(input_handles[0]);
    int32_t a_expected_dtype = aoti_torch_dtype_complex64();)")[0]
            .type == std::nullopt);
}

TEST_CASE("ParseSpecList reads and writes the metadata's tensor lists") {
  absl::StatusOr<std::vector<TensorSpec>> specs =
      ParseSpecList("x FP32 [3]; params FP32 [5];ids INT64 [2, -1]; total INT64 []");
  REQUIRE(specs.ok());
  REQUIRE(specs->size() == 4);
  CHECK((*specs)[0].name == "x");
  CHECK((*specs)[1].dims == Dims{5});
  CHECK((*specs)[2].type == DataType::kInt64);
  CHECK((*specs)[2].dims == Dims{2, kAnySize});
  CHECK((*specs)[3].dims.empty());
  CHECK(SpecListText(*specs) == "x FP32 [3]; params FP32 [5]; ids INT64 [2, -1]; total INT64 []");

  CHECK(ParseSpecList("x FP33 [3]").status().message() ==
        "\"x FP33 [3]\": unknown type FP33 (write NAME TYPE [D1, D2], e.g. \"x FP32 [3]\")");
  CHECK(absl::StrContains(ParseSpecList("x FP32").status().message(), "no [dims]"));
  CHECK(absl::StrContains(ParseSpecList("x [3]").status().message(), "not a name and a type"));
  CHECK(absl::StrContains(ParseSpecList("x FP32 [a]").status().message(),
                          "dimension \"a\" is not a size or -1"));
  CHECK(absl::StrContains(ParseSpecList("x FP32 [3]; x FP32 [4]").status().message(),
                          "a name given twice"));
  CHECK(ParseSpecList(" ; ").status().message() == "names no tensor");
}

TEST_CASE("ReadServerMetadata reads the model_server keys and refuses what does not parse") {
  absl::StatusOr<ServerMetadata> read =
      ReadServerMetadata({{"AOTI_DEVICE_KEY", "cpu"},
                          {"model_server.inputs", "x FP32 [3]"},
                          {"model_server.outputs", "y FP32 [1]"},
                          {"model_server.min_batch_size", "1"},
                          {"model_server.max_batch_size", "64"},
                          {"model_server.input_var_order", "a,b,c"}});
  REQUIRE(read.ok());
  CHECK(read->inputs.size() == 1);
  CHECK(read->outputs[0].name == "y");
  CHECK(read->min_batch_size == 1);
  CHECK(read->max_batch_size == 64);
  CHECK(read->seed == std::map<std::string, std::string>{{"input_var_order", "a,b,c"}});

  CHECK(absl::StrContains(ReadServerMetadata({{"model_server.colour", "red"}}).status().message(),
                          "package metadata model_server.colour: unknown key"));
  CHECK(ReadServerMetadata({{"model_server.max_batch_size", "0"}}).status().message() ==
        "package metadata model_server.max_batch_size: \"0\" is not a number of rows (1 or more)");
  CHECK(
      absl::StrContains(ReadServerMetadata({{"model_server.inputs", "x FP32"}}).status().message(),
                        "package metadata model_server.inputs: \"x FP32\": no [dims]"));
  CHECK(ReadServerMetadata(
            {{"model_server.min_batch_size", "9"}, {"model_server.max_batch_size", "8"}})
            .status()
            .message() == "package metadata: min_batch_size 9 is above max_batch_size 8");
}

TEST_CASE("PackageBatchRange takes the metadata's range, else the checks' tightest") {
  const std::vector<CheckedInput> checks = ReadInputChecks(kTwoInputChecks);
  ServerMetadata none;
  absl::StatusOr<BatchRange> range = PackageBatchRange(none, checks);
  REQUIRE(range.ok());
  CHECK(range->min == 16);  // the larger minimum of the two inputs
  CHECK(range->max == 48);  // the smaller maximum
  CHECK(range->source == "its compiled input checks");

  ServerMetadata metadata;
  metadata.min_batch_size = 1;
  metadata.max_batch_size = 64;
  range = PackageBatchRange(metadata, checks);
  REQUIRE(range.ok());
  CHECK(range->min == 1);
  CHECK(range->max == 64);
  CHECK(range->source == "its metadata");

  // With the package's own checks on (AOTI_RUNTIME_CHECK_INPUTS), their range bounds it too.
  range = PackageBatchRange(metadata, checks, /*checks_enforced=*/true);
  REQUIRE(range.ok());
  CHECK(range->min == 16);
  CHECK(range->max == 48);
  CHECK(absl::StrContains(range->source, "AOTI_RUNTIME_CHECK_INPUTS"));

  ServerMetadata max_only;
  max_only.max_batch_size = 32;
  range = PackageBatchRange(max_only, checks);
  REQUIRE(range.ok());
  CHECK(range->min == 16);  // from the checks
  CHECK(range->max == 32);

  CHECK(absl::StrContains(PackageBatchRange(none, {}).status().message(),
                          "cannot tell which batch sizes the package accepts"));
  CHECK(PackageBatchRange(none, {CheckedInput{}}).status().message() ==
        "its input 0 has no batch dimension in the package's checks");
}

TEST_CASE(
    "PlanBatches lowers the limit to the package's, pads below its minimum, refuses "
    "static batches and ranges that do not fit") {
  absl::StatusOr<BatchPlan> plan = PlanBatches({1, 64, "its metadata"}, 4096);
  REQUIRE(plan.ok());
  CHECK(plan->max_batch_size == 64);
  CHECK(plan->pad_to == 1);
  plan = PlanBatches({2, std::nullopt, "its compiled input checks"}, 100);
  REQUIRE(plan.ok());
  CHECK(plan->max_batch_size == 100);
  CHECK(plan->pad_to == 2);

  const absl::Status fixed = PlanBatches({1, 1, "its compiled input checks"}, 64).status();
  CHECK(absl::StrContains(fixed.message(), "static batch of 1 row (its compiled input checks;"));
  CHECK(absl::StrContains(fixed.message(), "scripts/export_model.py"));
  CHECK(
      absl::StrContains(PlanBatches({8, 8, "x"}, 64).status().message(), "static batch of 8 rows"));
  CHECK(PlanBatches({16, 64, "its compiled input checks"}, 8).status().message() ==
        "the package accepts batches of 16 to 64 rows (its compiled input checks) and none fits "
        "max_batch_size 8: raise max_batch_size or export the package with "
        "torch.export.Dim(\"batch\", min=1)");
}

TEST_CASE("CheckedDifference names the inputs that differ from the package's") {
  const std::vector<CheckedInput> checks = ReadInputChecks(kTwoInputChecks);
  std::vector<TensorSpec> inputs = {MakeSpec("x", DataType::kFp32, {3}),
                                    MakeSpec("params", DataType::kInt64, {5})};
  CHECK(CheckedDifference(inputs, true, checks).empty());
  CHECK(CheckedDifference(inputs, true, {}).empty());
  inputs[0].dims = {4};
  CHECK(CheckedDifference(inputs, true, checks) ==
        "input 0 \"x\": [n, 4] where the package takes [n, 3]");
  inputs[0].dims = {kAnySize};
  CHECK(CheckedDifference(inputs, true, checks) ==
        "input 0 \"x\": [n, -1] where the package takes [n, 3]");
  inputs[0].dims = {3, 1};
  CHECK(CheckedDifference(inputs, true, checks) ==
        "input 0 \"x\": [n, 3, 1] where the package takes [n, 3]");
  inputs[0].dims = {3};
  inputs[1].type = DataType::kFp32;
  CHECK(CheckedDifference(inputs, true, checks) ==
        "input 1 \"params\": FP32 where the package takes INT64");
  inputs.pop_back();
  CHECK(CheckedDifference(inputs, true, checks) ==
        "the package takes 2 inputs; the signature has 1");
  // Unbatched: the whole shape.
  const std::vector<CheckedInput> fixed = ReadInputChecks(kStaticChecks);
  CHECK(CheckedDifference({MakeSpec("x", DataType::kFp32, {1, 3})}, false, fixed).empty());
  CHECK(CheckedDifference({MakeSpec("x", DataType::kFp32, {2, 3})}, false, fixed) ==
        "input 0 \"x\": [2, 3] where the package takes [1, 3]");
}

TEST_CASE("ParseSeedParameters reads the seed keys of config parameters and package metadata") {
  CHECK(ParseSeedParameters({{"other", "x"}}).value() == std::nullopt);
  absl::StatusOr<std::optional<SeedDeclaration>> read = ParseSeedParameters(
      {{"input_var_order", "a, b ,c"}, {"default_params", "0.5,1"}, {"seed_output", " y "}});
  REQUIRE(read.ok());
  REQUIRE(read->has_value());
  CHECK((*read)->input_names == std::vector<std::string>{"a", "b", "c"});
  CHECK((*read)->default_params == std::vector<float>{0.5f, 1.0f});
  CHECK((*read)->output == "y");
  CHECK((*read)->columns.empty());
  CHECK(ParseSeedParameters({{"default_params", "1,z"}}).status().message() ==
        "default_params: \"z\" is not a number");
}

}  // namespace
}  // namespace model_server::handlers
