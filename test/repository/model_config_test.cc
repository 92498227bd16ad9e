#include "repository/model_config.h"

#include <catch2/catch.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace model_server::repository {
namespace {

using handlers::DataType;
using handlers::Dims;
using inference::ModelConfig;

// A config the server serves: one batched FP32 input and output.
constexpr char kGood[] = R"pb(
  platform: "pytorch_libtorch"
  max_batch_size: 8 input
  [ {
    name: "INPUT__0"
    data_type: TYPE_FP32
    dims: [ 3, -1 ]
  }] output
  [ {
    name: "OUTPUT__0"
    data_type: TYPE_FP32
    dims: [ 10 ]
  }]
)pb";

ModelConfig Parse(const std::string& text) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(text, "cnn/config.pbtxt");
  INFO(config.status().ToString());
  REQUIRE(config.ok());
  return *std::move(config);
}

// kGood with `extra` appended, parsed.
ModelConfig Good(const std::string& extra = "") { return Parse(std::string(kGood) + extra); }

// The message ValidateModelConfig gives `config` as model "cnn"; "" when it accepts it.
std::string Refusal(const ModelConfig& config) {
  const absl::Status status = ValidateModelConfig(config, "cnn");
  if (status.ok()) return "";
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  return std::string(status.message());
}

TEST_CASE("a config parses with Triton's field names and enum values", "[model_config]") {
  const ModelConfig config = Parse(R"pb(
    name: "cnn"
    platform: "pytorch_libtorch"
    max_batch_size: 8 input
    [ {
      name: "INPUT__0"
      data_type: TYPE_FP32
      format: FORMAT_NCHW
      dims: [ 3, 32, 32 ]
    }
      , {
        name: "INPUT__1"
        data_type: TYPE_INT64
        dims: [ 1 ]
        reshape: { shape: [] }
        optional: true
      }] output
    [ {
      name: "OUTPUT__0"
      data_type: TYPE_BF16
      dims: [ 10 ]
    }]
    version_policy: { specific: { versions: [ 1, 3 ] } } instance_group
    [ {
      name: "g"
      count: 2
      kind: KIND_GPU
      gpus: [ 0, 1 ]
    }]
    dynamic_batching {
      preferred_batch_size: [ 4, 8 ]
      max_queue_delay_microseconds: 100
    }
    parameters {
      key: "columns"
      value: { string_value: "INPUT__0" }
    }
    default_model_filename: "traced.pt"
    response_cache { enable: false } model_warmup
    [ {
      name: "zeros"
      batch_size: 2
      inputs {
        key: "INPUT__0"
        value: {
          data_type: TYPE_FP32
          dims: [ 3, 32, 32 ]
          zero_data: true
        }
      }
      count: 3
    }]
  )pb");
  CHECK(config.name() == "cnn");
  CHECK(config.platform() == "pytorch_libtorch");
  CHECK(config.max_batch_size() == 8);
  REQUIRE(config.input_size() == 2);
  CHECK(config.input(0).format() == inference::ModelInput::FORMAT_NCHW);
  CHECK(std::vector<int64_t>(config.input(0).dims().begin(), config.input(0).dims().end()) ==
        std::vector<int64_t>{3, 32, 32});
  CHECK(config.input(1).data_type() == inference::TYPE_INT64);
  CHECK(config.input(1).has_reshape());
  CHECK(config.input(1).reshape().shape_size() == 0);
  CHECK(config.input(1).optional());
  CHECK(config.output(0).data_type() == inference::TYPE_BF16);
  CHECK(config.version_policy().specific().versions_size() == 2);
  CHECK(config.instance_group(0).kind() == inference::ModelInstanceGroup::KIND_GPU);
  CHECK(config.instance_group(0).gpus_size() == 2);
  CHECK(config.dynamic_batching().preferred_batch_size_size() == 2);
  CHECK(config.dynamic_batching().max_queue_delay_microseconds() == 100);
  CHECK(config.parameters().at("columns").string_value() == "INPUT__0");
  CHECK(config.default_model_filename() == "traced.pt");
  CHECK(config.model_warmup(0).inputs().at("INPUT__0").zero_data());
  CHECK(config.model_warmup(0).count() == 3);
  CHECK(Refusal(config).empty());
}

TEST_CASE("parse errors carry the file, line and column", "[model_config]") {
  // Unknown field on line 3. Protobuf's parser places its errors where it stopped: just after the
  // offending name (column 10 here).
  absl::StatusOr<ModelConfig> config =
      ParseModelConfig("platform: \"pytorch_libtorch\"\nmax_batch_size: 8\nmax_batch: 4\n",
                       "models/cnn/config.pbtxt");
  REQUIRE_FALSE(config.ok());
  CHECK(config.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(config.status().message() ==
        "models/cnn/config.pbtxt:3:10: Message type \"inference.ModelConfig\" has no field named "
        "\"max_batch\".");

  // An unknown field inside an input, line 2.
  config = ParseModelConfig("input [\n  { name: \"x\" dtype: TYPE_FP32 }\n]\n", "c.pbtxt");
  REQUIRE_FALSE(config.ok());
  CHECK(config.status().message() ==
        "c.pbtxt:2:20: Message type \"inference.ModelInput\" has no field named \"dtype\".");

  // An enum value Triton does not have.
  config = ParseModelConfig("input [ { data_type: TYPE_FLOAT } ]", "c.pbtxt");
  REQUIRE_FALSE(config.ok());
  CHECK(config.status().message() ==
        "c.pbtxt:1:33: Unknown enumeration value of \"TYPE_FLOAT\" for field \"data_type\".");

  // A brace left open.
  config = ParseModelConfig("dynamic_batching {\n  max_queue_delay_microseconds: 100\n", "c.pbtxt");
  REQUIRE_FALSE(config.ok());
  CHECK(config.status().message().find("c.pbtxt:3:1: ") == 0);

  // Two members of the scheduling oneof.
  config = ParseModelConfig("dynamic_batching { }\nsequence_batching { }\n", "c.pbtxt");
  REQUIRE_FALSE(config.ok());
  CHECK(config.status().message().find("c.pbtxt:2:") == 0);
}

// Triton configs that use fields the server does not serve parse, nested contents included, and
// are then refused by field name.
TEST_CASE("Triton's unsupported fields parse and are refused by name", "[model_config]") {
  const std::vector<std::pair<std::string, std::string>>
      cases =
          {
              {R"pb(sequence_batching {
                      max_sequence_idle_microseconds: 5000000
                      direct {
                        max_queue_delay_microseconds: 100
                        minimum_slot_utilization: 0.5
                      } control_input
                      [ {
                        name: "START" control
                        [ {
                          kind: CONTROL_SEQUENCE_START
                          fp32_false_true: [ 0, 1 ]
                        }]
                      }
                        , {
                          name: "CORRID" control
                          [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }]
                        }] state
                      [ {
                        input_name: "INPUT_STATE"
                        output_name: "OUTPUT_STATE"
                        data_type: TYPE_INT32
                        dims: [ -1 ]
                        initial_state: {
                          data_type: TYPE_INT32
                          dims: [ 1 ]
                          zero_data: true
                          name: "s"
                        }
                      }]
                    })pb",
               "config field sequence_batching is not supported"},
              {R"pb(sequence_batching {
                      oldest {
                        max_candidate_sequences: 4
                        preferred_batch_size: [ 2 ]
                      }
                    })pb",
               "config field sequence_batching is not supported"},
              {R"pb(ensemble_scheduling {
                      step
                      [ {
                        model_name: "preprocess"
                        model_version: -1
                        input_map { key: "RAW_IMAGE" value: "IMAGE" }
                        output_map { key: "PREPROCESSED_OUTPUT" value: "preprocessed_image" }
                      }]
                    })pb",
               "config field ensemble_scheduling is not supported"},
              {R"pb(optimization {
                      execution_accelerators {
                        gpu_execution_accelerator:
                        [ {
                          name: "tensorrt"
                          parameters { key: "precision_mode" value: "FP16" }
                        }]
                      }
                    })pb",
               "config field optimization is not supported"},
              {R"pb(optimization {
                      cuda {
                        graphs: true graph_spec
                        [ {
                          batch_size: 4
                          input {
                            key: "x"
                            value: { dim: [ 3 ] }
                          }
                        }]
                      }
                      priority: PRIORITY_MAX
                      input_pinned_memory { enable: false }
                      graph { level: 1 }
                    })pb",
               "config field optimization is not supported"},
              {R"pb(batch_input
                    [ {
                      kind: BATCH_ACCUMULATED_ELEMENT_COUNT
                      target_name: "INDEX"
                      data_type: TYPE_FP32
                      source_input: "INPUT"
                    }])pb",
               "config field batch_input is not supported"},
              {R"pb(batch_output
                    [ {
                      target_name: "OUT"
                      kind: BATCH_SCATTER_WITH_INPUT_SHAPE
                      source_input: "INPUT"
                    }])pb",
               "config field batch_output is not supported"},
              {"model_transaction_policy { decoupled: True }",
               "config field model_transaction_policy.decoupled is not supported"},
              {R"pb(model_operations { op_library_filename: "libcustom.so" })pb",
               "config field model_operations is not supported"},
              {R"pb(model_repository_agents { agents
                                              [ {
                                                name: "checksum"
                                                parameters { key: "MD5:1/model.pt" value: "abc" }
                                              }] })pb",
               "config field model_repository_agents is not supported"},
              {R"pb(cc_model_filenames
                    [ { key: "7.5" value: "resnet50_T4.plan" }])pb",
               "config field cc_model_filenames is not supported"},
              {R"pb(metric_tags { key: "team" value: "vision" })pb",
               "config field metric_tags is not supported"},
              {R"pb(runtime: "model.py")pb", "config field runtime is not supported"},
              {R"pb(model_metrics {
                      metric_control:
                      [ {
                        metric_identifier: { family: "nv_inference_first_response_histogram_ms" }
                        histogram_options: { buckets: [ 1, 2, 4, 8 ] }
                      }]
                    })pb",
               "config field model_metrics is not supported"},
              {R"pb(instance_group
                    [ {
                      kind: KIND_GPU
                      rate_limiter {
                        resources
                        [ { name: "R1" global: True count: 4 }]
                        priority: 2
                      }
                    }])pb",
               "config field instance_group[0].rate_limiter is not supported"},
              {R"pb(instance_group
                    [ { kind: KIND_CPU host_policy: "policy_0" }])pb",
               "config field instance_group[0].host_policy is not supported"},
              {R"pb(instance_group
                    [ {
                      kind: KIND_GPU
                      profile: [ "0" ]
                    }])pb",
               "config field instance_group[0].profile is not supported"},
              {R"pb(instance_group
                    [ { kind: KIND_GPU passive: true }])pb",
               "config field instance_group[0].passive is not supported"},
              {R"pb(instance_group
                    [ {
                      kind: KIND_GPU secondary_devices
                      [ { kind: KIND_NVDLA device_id: 0 }]
                    }])pb",
               "config field instance_group[0].secondary_devices is not supported"},
              {R"pb(dynamic_batching { preserve_ordering: true })pb",
               "config field dynamic_batching.preserve_ordering is not supported"},
          };
  for (const auto& [extra, expected] : cases) {
    INFO(extra);
    const ModelConfig config = Good(extra);
    CHECK(Refusal(config) == "model \"cnn\": " + expected);
  }
  // A transaction policy that says what the server does anyway is not refused.
  CHECK(Refusal(Good("model_transaction_policy { decoupled: false }")).empty());
}

TEST_CASE("queue policies, priorities and the response cache parse and are served",
          "[model_config]") {
  const ModelConfig config = Good(R"pb(
    dynamic_batching {
      max_queue_delay_microseconds: 100
      priority_levels: 2
      default_priority_level: 1
      default_queue_policy {
        timeout_action: DELAY
        default_timeout_microseconds: 100
        allow_timeout_override: true
        max_queue_size: 4
      }
      priority_queue_policy {
        key: 1
        value: { timeout_action: REJECT max_queue_size: 2 }
      }
    }
    response_cache { enable: true }
  )pb");
  const inference::ModelDynamicBatching& batching = config.dynamic_batching();
  CHECK(batching.priority_levels() == 2);
  CHECK(batching.default_priority_level() == 1);
  CHECK(batching.default_queue_policy().timeout_action() == inference::ModelQueuePolicy::DELAY);
  CHECK(batching.default_queue_policy().default_timeout_microseconds() == 100);
  CHECK(batching.default_queue_policy().allow_timeout_override());
  CHECK(batching.default_queue_policy().max_queue_size() == 4);
  CHECK(batching.priority_queue_policy().at(1).max_queue_size() == 2);
  CHECK(config.response_cache().enable());
  CHECK(Refusal(config).empty());
}

TEST_CASE("priority and queue-policy errors name the model and the field", "[model_config]") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"dynamic_batching { priority_levels: 2 }",
       "dynamic_batching.default_priority_level 0 is outside the priority levels 1..2 (with "
       "priority_levels it must name one of them)"},
      {"dynamic_batching { priority_levels: 2 default_priority_level: 3 }",
       "dynamic_batching.default_priority_level 3 is outside the priority levels 1..2 (with "
       "priority_levels it must name one of them)"},
      {"dynamic_batching { default_priority_level: 1 }",
       "dynamic_batching.default_priority_level 1 needs dynamic_batching.priority_levels (there "
       "are none)"},
      {"dynamic_batching { priority_levels: 65 default_priority_level: 1 }",
       "dynamic_batching.priority_levels 65 is over 64 (each level is a queue of its own and a "
       "metric series)"},
      {R"pb(dynamic_batching {
              priority_levels: 2
              default_priority_level: 1
              priority_queue_policy {
                key: 3
                value: { max_queue_size: 1 }
              }
            })pb",
       "dynamic_batching.priority_queue_policy names priority level 3, outside the priority "
       "levels 1..2"},
      {R"pb(dynamic_batching {
              priority_queue_policy {
                key: 1
                value: { max_queue_size: 1 }
              }
            })pb",
       "dynamic_batching.priority_queue_policy names priority level 1 but there are no "
       "dynamic_batching.priority_levels"},
      {"dynamic_batching { default_queue_policy { timeout_action: 7 } }",
       "dynamic_batching.default_queue_policy.timeout_action 7 is not an action (REJECT or "
       "DELAY)"},
      {R"pb(dynamic_batching {
              priority_levels: 2
              default_priority_level: 2
              priority_queue_policy {
                key: 2
                value: { timeout_action: 3 }
              }
            })pb",
       "dynamic_batching.priority_queue_policy[2].timeout_action 3 is not an action (REJECT or "
       "DELAY)"},
      {"dynamic_batching { default_queue_policy { default_timeout_microseconds: 86400000001 } }",
       "dynamic_batching.default_queue_policy.default_timeout_microseconds 86400000001 is over "
       "86400000000 (one day)"},
  };
  for (const auto& [extra, expected] : cases) {
    INFO(extra);
    CHECK(Refusal(Good(extra)) == "model \"cnn\": " + expected);
  }
  // An action named wrongly does not parse; the parser names the field and the place.
  const absl::StatusOr<ModelConfig> unknown = ParseModelConfig(
      std::string(kGood) + "dynamic_batching { default_queue_policy { timeout_action: DROP } }",
      "cnn/config.pbtxt");
  REQUIRE_FALSE(unknown.ok());
  CHECK_THAT(std::string(unknown.status().message()),
             Catch::StartsWith("cnn/config.pbtxt:14:") &&
                 Catch::Contains("Unknown enumeration value of \"DROP\" for field "
                                 "\"timeout_action\""));
}

TEST_CASE("the latency objective is a config parameter in microseconds, with dynamic batching",
          "[model_config]") {
  const auto with = [](const std::string& value, bool batching = true) {
    return Good(absl::StrCat(batching ? "dynamic_batching { } " : "",
                             "parameters { key: \"latency_objective_p99_microseconds\" value: { "
                             "string_value: \"",
                             value, "\" } }"));
  };
  CHECK(Refusal(with("5000")).empty());
  CHECK(LatencyObjectiveMicroseconds(with("5000")) == 5000);
  CHECK(LatencyObjectiveMicroseconds(Good()) == std::nullopt);
  for (const char* bad : {"", "5ms", "0", "-1", "3600000001", "1e3"}) {
    INFO(bad);
    CHECK(Refusal(with(bad)) ==
          absl::StrCat("model \"cnn\": parameters latency_objective_p99_microseconds \"", bad,
                       "\" is not a whole number of microseconds from 1 to 3600000000"));
  }
  CHECK(Refusal(with("5000", false)) ==
        "model \"cnn\": parameters latency_objective_p99_microseconds needs dynamic_batching (the "
        "objective sets its delay and batch size)");
}

TEST_CASE("platform, backend and name follow Triton's rules", "[model_config]") {
  CHECK(Refusal(Good("backend: \"pytorch\"")).empty());
  CHECK(Refusal(Good("name: \"cnn\"")).empty());
  ModelConfig config = Good();
  config.set_platform("torch_aoti");
  CHECK(Refusal(config).empty());
  config.set_platform("tensorrt_plan");
  CHECK(Refusal(config) ==
        "model \"cnn\": platform \"tensorrt_plan\" is not supported (served: \"pytorch_libtorch\" "
        "for TorchScript, \"torch_aoti\" for AOTInductor packages)");
  config.clear_platform();
  CHECK(Refusal(config) ==
        "model \"cnn\": config sets neither platform nor backend (platform: \"pytorch_libtorch\" "
        "or \"torch_aoti\")");
  config.set_backend("pytorch");
  CHECK(Refusal(config).empty());
  config.set_backend("onnxruntime");
  CHECK(Refusal(config) ==
        "model \"cnn\": backend \"onnxruntime\" is not supported (served: \"pytorch\")");
  CHECK(Refusal(Good("name: \"resnet\"")) ==
        "model \"cnn\": config names the model \"resnet\"; the name must be the model's folder "
        "name (or left out)");
  config = Good();
  config.set_max_batch_size(-1);
  CHECK(Refusal(config) == "model \"cnn\": max_batch_size is -1; it is 0 (no batching) or more");
}

TEST_CASE("model names are letters, digits, '_', '-' and '.'", "[model_config]") {
  CHECK(ValidateModelName("resnet-50_v1.2").ok());
  CHECK(ValidateModelName("my model").message() ==
        "model name \"my model\" has the character \" \"; a model name is letters, digits, '_', "
        "'-' and '.' (it becomes a metric label)");
  CHECK(ValidateModelName("a/b").message().find("has the character \"/\"") != std::string::npos);
  CHECK(ValidateModelName("caf\xc3\xa9").message().find("\\xc3") != std::string::npos);
  CHECK(ValidateModelName("..").message() == "model name \"..\" starts with '.'");
  CHECK(ValidateModelName("").message() == "a model name is empty");
  CHECK(ValidateModelConfig(Good(), "a b").message().find("model name \"a b\"") == 0);
}

TEST_CASE("inputs and outputs: names, types, dims and reshapes", "[model_config]") {
  const auto refusal_for = [](const std::string& inputs) {
    return Refusal(Parse("platform: \"pytorch_libtorch\" max_batch_size: 4 " + inputs));
  };
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_STRING dims: [ 1 ] } ]") ==
        "model \"cnn\": input \"x\": data_type TYPE_STRING is not supported (served: TYPE_BOOL, "
        "TYPE_UINT8, TYPE_INT8, TYPE_INT16, TYPE_INT32, TYPE_INT64, TYPE_FP16, TYPE_BF16, "
        "TYPE_FP32, TYPE_FP64)");
  for (const char* type : {"TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64"}) {
    CHECK(refusal_for(std::string("output [ { name: \"y\" data_type: ") + type + " dims: [ 1 ] } ]")
              .find(std::string("output \"y\": data_type ") + type + " is not supported") !=
          std::string::npos);
  }
  CHECK(refusal_for("input [ { name: \"x\" dims: [ 1 ] } ]") ==
        "model \"cnn\": input \"x\": data_type is missing");
  CHECK(refusal_for("input [ { data_type: TYPE_FP32 dims: [ 1 ] } ]") ==
        "model \"cnn\": an input has no name");
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_FP32 dims: [ 1 ] }, { name: \"x\" "
                    "data_type: TYPE_INT64 dims: [ 2 ] } ]") ==
        "model \"cnn\": two inputs are named \"x\"");
  CHECK(refusal_for("output [ { name: \"y\" data_type: TYPE_FP32 dims: [ 1 ] }, { name: \"y\" "
                    "data_type: TYPE_FP32 dims: [ 1 ] } ]") ==
        "model \"cnn\": two outputs are named \"y\"");
  CHECK(refusal_for("input [ { name: \"\\377\" data_type: TYPE_FP32 dims: [ 1 ] } ]") ==
        "model \"cnn\": input \"\\xff\": name is not UTF-8");
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_FP32 } ]") ==
        "model \"cnn\": input \"x\": dims is empty; a tensor has rank >= 1 (for a model that "
        "takes a scalar, write dims: [ 1 ] and reshape: { shape: [ ] })");
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_FP32 dims: [ 2, 0 ] } ]") ==
        "model \"cnn\": input \"x\": dims [2, 0] has 0 at position 1; a dimension is -1 (any "
        "size) or greater than 0");
  CHECK(refusal_for("output [ { name: \"y\" data_type: TYPE_FP32 dims: [ -2 ] } ]") ==
        "model \"cnn\": output \"y\": dims [-2] has -2 at position 0; a dimension is -1 (any "
        "size) or greater than 0");
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_FP32 dims: [ 1048576, 1048576, "
                    "1048576 ] } ]") ==
        "model \"cnn\": input \"x\": dims [1048576, 1048576, 1048576] hold too many elements");
  // Reshapes: same element count, same number of variable dimensions.
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ "
                    "] } } ]")
            .empty());
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_FP32 dims: [ 2, 3 ] reshape: { "
                    "shape: [ 6 ] } } ]")
            .empty());
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_FP32 dims: [ -1, 4 ] reshape: { "
                    "shape: [ 2, -1, 2 ] } } ]")
            .empty());
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_FP32 dims: [ 2 ] reshape: { shape: [ "
                    "] } } ]") ==
        "model \"cnn\": input \"x\": reshape [] does not hold the same elements as dims [2] "
        "(same product of the fixed sizes, same number of -1)");
  CHECK(refusal_for("output [ { name: \"y\" data_type: TYPE_FP32 dims: [ -1, 4 ] reshape: { "
                    "shape: [ 4 ] } } ]") ==
        "model \"cnn\": output \"y\": reshape [4] does not hold the same elements as dims [-1, "
        "4] (same product of the fixed sizes, same number of -1)");
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ "
                    "2, 0 ] } } ]") ==
        "model \"cnn\": input \"x\": reshape [2, 0] has 0 at position 1; a dimension is -1 (any "
        "size) or greater than 0");
  // Fields for other backends.
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_INT32 dims: [ 2 ] is_shape_tensor: "
                    "true } ]") ==
        "model \"cnn\": input \"x\": field is_shape_tensor is not supported (TensorRT only)");
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_FP32 dims: [ -1 ] "
                    "allow_ragged_batch: true } ]") ==
        "model \"cnn\": input \"x\": field allow_ragged_batch is not supported");
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_FP16 dims: [ 3 ] "
                    "is_non_linear_format_io: true } ]") ==
        "model \"cnn\": input \"x\": field is_non_linear_format_io is not supported (TensorRT "
        "only)");
  CHECK(refusal_for("output [ { name: \"y\" data_type: TYPE_FP32 dims: [ 3 ] is_shape_tensor: "
                    "true } ]") ==
        "model \"cnn\": output \"y\": field is_shape_tensor is not supported (TensorRT only)");
  CHECK(refusal_for("output [ { name: \"y\" data_type: TYPE_FP32 dims: [ 3 ] "
                    "is_non_linear_format_io: true } ]") ==
        "model \"cnn\": output \"y\": field is_non_linear_format_io is not supported (TensorRT "
        "only)");
  CHECK(refusal_for("output [ { name: \"y\" data_type: TYPE_FP32 dims: [ 1000 ] label_filename: "
                    "\"labels.txt\" } ]") ==
        "model \"cnn\": output \"y\": field label_filename is not supported (the classification "
        "extension is not served)");
  CHECK(refusal_for("input [ { name: \"x\" data_type: TYPE_UINT8 format: FORMAT_NHWC dims: [ "
                    "32, 32 ] } ]") ==
        "model \"cnn\": input \"x\": format FORMAT_NHWC needs three dims (without the batch "
        "dimension), not [32, 32]");
  // An input and an output may share a name, as in Triton.
  CHECK(refusal_for("input [ { name: \"t\" data_type: TYPE_FP32 dims: [ 1 ] } ] output [ { name: "
                    "\"t\" data_type: TYPE_FP32 dims: [ 1 ] } ]")
            .empty());
  // Inputs and outputs left for the handler to complete.
  CHECK(Refusal(Parse("platform: \"pytorch_libtorch\"")).empty());
}

TEST_CASE("version policy, instance groups, batching and file names", "[model_config]") {
  CHECK(Refusal(Good("version_policy: { latest: { num_versions: 2 } }")).empty());
  CHECK(Refusal(Good("version_policy: { all { } }")).empty());
  CHECK(Refusal(Good("version_policy: { latest: { } }")) ==
        "model \"cnn\": version_policy.latest.num_versions must be at least 1");
  CHECK(Refusal(Good("version_policy: { specific: { } }")) ==
        "model \"cnn\": version_policy.specific lists no versions");
  CHECK(Refusal(Good("version_policy: { specific: { versions: [ 1, 0 ] } }")) ==
        "model \"cnn\": version_policy.specific lists version 0; versions are folder numbers >= 1");
  CHECK(Refusal(Good("version_policy: { specific: { versions: [ 2, 2 ] } }")) ==
        "model \"cnn\": version_policy.specific lists version 2 twice");

  CHECK(Refusal(Good("instance_group [ { kind: KIND_AUTO } ]")).empty());
  CHECK(Refusal(Good("instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0 ] }, { count: 1 kind: "
                     "KIND_CPU } ]"))
            .empty());
  CHECK(Refusal(Good("instance_group [ { count: -1 kind: KIND_CPU } ]")) ==
        "model \"cnn\": instance_group[0].count is -1; it must be >= 1");
  CHECK(Refusal(Good("instance_group [ { kind: KIND_CPU }, { kind: KIND_MODEL } ]")) ==
        "model \"cnn\": instance_group[1].kind KIND_MODEL is not supported (KIND_AUTO, KIND_GPU "
        "or KIND_CPU)");
  CHECK(Refusal(Good("instance_group [ { kind: KIND_CPU gpus: [ 0 ] } ]")) ==
        "model \"cnn\": instance_group[0] is KIND_CPU and lists gpus");
  CHECK(Refusal(Good("instance_group [ { kind: KIND_GPU gpus: [ -1 ] } ]")) ==
        "model \"cnn\": instance_group[0].gpus lists -1");

  CHECK(Refusal(Good("dynamic_batching { preferred_batch_size: [ 4, 9 ] }")) ==
        "model \"cnn\": dynamic_batching.preferred_batch_size 9 is not between 1 and "
        "max_batch_size (8)");
  CHECK(Refusal(Good("dynamic_batching { preferred_batch_size: [ 0 ] }")) ==
        "model \"cnn\": dynamic_batching.preferred_batch_size 0 is not between 1 and "
        "max_batch_size (8)");
  CHECK(Refusal(Good("dynamic_batching { max_queue_delay_microseconds: 3600000000 }")).empty());
  CHECK(Refusal(Good("dynamic_batching { max_queue_delay_microseconds: 3600000001 }")) ==
        "model \"cnn\": dynamic_batching.max_queue_delay_microseconds 3600000001 is over "
        "3600000000 (one hour)");

  CHECK(Refusal(Good("default_model_filename: \"traced.pt\"")).empty());
  CHECK(Refusal(Good("default_model_filename: \"../other/model.pt\"")) ==
        "model \"cnn\": default_model_filename \"../other/model.pt\" is not a file name (it "
        "names a file in each version folder)");
  CHECK(Refusal(Good("default_model_filename: \"..\"")).find("is not a file name") !=
        std::string::npos);

  CHECK(Refusal(Good("parameters { key: \"\" value: { string_value: \"x\" } }")) ==
        "model \"cnn\": parameters has an empty key");
  CHECK(Refusal(Good("parameters { key: \"k\" value: { string_value: \"\\377\" } }")) ==
        "model \"cnn\": parameters \"k\" is not UTF-8");
}

TEST_CASE("model_warmup samples fit the inputs", "[model_config]") {
  const std::string head = R"pb(
    platform: "pytorch_libtorch"
    max_batch_size: 4 input
    [ {
      name: "x"
      data_type: TYPE_FP32
      dims: [ 3, -1 ]
    }
      , {
        name: "ids"
        data_type: TYPE_INT64
        dims: [ 2 ]
        optional: true
      }]
  )pb";
  const auto refusal_for = [&](const std::string& warmup) {
    return Refusal(Parse(head + "model_warmup [ " + warmup + " ]"));
  };
  CHECK(refusal_for(R"pb({
                           name: "w"
                           batch_size: 4
                           inputs {
                             key: "x"
                             value: {
                               data_type: TYPE_FP32
                               dims: [ 3, 7 ]
                               random_data: true
                             }
                           }
                         })pb")
            .empty());
  CHECK(refusal_for(R"pb({
                           name: "w"
                           batch_size: 1
                           inputs {
                             key: "x"
                             value: {
                               data_type: TYPE_FP32
                               dims: [ 3, 7 ]
                               input_data_file: "x.bin"
                             }
                           }
                         })pb")
            .empty());
  CHECK(refusal_for(R"pb({ batch_size: 1 })pb") ==
        "model \"cnn\": a model_warmup sample has no name");
  CHECK(refusal_for(R"pb({ name: "w" batch_size: 5 })pb") ==
        "model \"cnn\": model_warmup \"w\": batch_size 5 is not between 1 and 4");
  CHECK(refusal_for(R"pb({ name: "w" batch_size: 0 })pb") ==
        "model \"cnn\": model_warmup \"w\": batch_size 0 is not between 1 and 4");
  CHECK(refusal_for(R"pb({
                           name: "w"
                           batch_size: 1
                           inputs {
                             key: "x"
                             value: {
                               data_type: TYPE_FP32
                               dims: [ 3, 7 ]
                             }
                           }
                         })pb") ==
        "model \"cnn\": model_warmup \"w\": input \"x\": sets none of zero_data, random_data and "
        "input_data_file");
  CHECK(refusal_for(R"pb({
                           name: "w"
                           batch_size: 1
                           inputs {
                             key: "z"
                             value: {
                               data_type: TYPE_FP32
                               dims: [ 1 ]
                               zero_data: true
                             }
                           }
                         })pb") ==
        "model \"cnn\": model_warmup \"w\": input \"z\" is not an input of the model");
  CHECK(refusal_for(R"pb({
                           name: "w"
                           batch_size: 1
                           inputs {
                             key: "x"
                             value: {
                               data_type: TYPE_FP64
                               dims: [ 3, 7 ]
                               zero_data: true
                             }
                           }
                         })pb") ==
        "model \"cnn\": model_warmup \"w\": input \"x\": data_type TYPE_FP64 differs from the "
        "input's TYPE_FP32");
  CHECK(refusal_for(R"pb({
                           name: "w"
                           batch_size: 1
                           inputs {
                             key: "x"
                             value: {
                               data_type: TYPE_FP32
                               dims: [ 4, 7 ]
                               zero_data: true
                             }
                           }
                         })pb") ==
        "model \"cnn\": model_warmup \"w\": input \"x\": dims [4, 7] do not fit the input's dims "
        "[3, -1]");
  CHECK(refusal_for(R"pb({
                           name: "w"
                           batch_size: 1
                           inputs {
                             key: "x"
                             value: {
                               data_type: TYPE_FP32
                               dims: [ 3, -1 ]
                               zero_data: true
                             }
                           }
                         })pb") ==
        "model \"cnn\": model_warmup \"w\": input \"x\": dims [3, -1] must be sizes >= 0");
  CHECK(refusal_for(R"pb({
                           name: "w"
                           batch_size: 1
                           inputs {
                             key: "x"
                             value: {
                               data_type: TYPE_FP32
                               dims: [ 3, 7 ]
                               input_data_file: "../x.bin"
                             }
                           }
                         })pb") ==
        "model \"cnn\": model_warmup \"w\": input \"x\": input_data_file \"../x.bin\" is not a "
        "file name (the file lies in the model's warmup/ folder)");
  CHECK(refusal_for(R"pb({
                           name: "w"
                           batch_size: 1
                           inputs {
                             key: "ids"
                             value: {
                               data_type: TYPE_INT64
                               dims: [ 2 ]
                               zero_data: true
                             }
                           }
                         })pb") ==
        "model \"cnn\": model_warmup \"w\": gives no data for input \"x\"");
}

TEST_CASE("data types map to the tensor vocabulary and back", "[model_config]") {
  for (const DataType type : handlers::kAllDataTypes) {
    const inference::DataType config_type = ToConfigDataType(type);
    CHECK(inference::DataType_Name(config_type) == "TYPE_" + std::string(handlers::WireName(type)));
    CHECK(FromConfigDataType(config_type) == type);
  }
  for (const inference::DataType refused :
       {inference::TYPE_INVALID, inference::TYPE_UINT16, inference::TYPE_UINT32,
        inference::TYPE_UINT64, inference::TYPE_STRING}) {
    CHECK_FALSE(FromConfigDataType(refused).has_value());
  }
}

TEST_CASE("SignatureFromConfig gives the TensorSpecs, WriteSignature writes them back",
          "[model_config]") {
  ModelConfig config = Parse(R"pb(
    name: "m"
    platform: "pytorch_libtorch"
    max_batch_size: 16 input
    [ {
      name: "image"
      data_type: TYPE_UINT8
      dims: [ 3, -1, -1 ]
    }
      , {
        name: "scale"
        data_type: TYPE_FP64
        dims: [ 1 ]
        reshape: { shape: [] }
        optional: true
      }] output
    [ {
      name: "OUTPUT__0"
      data_type: TYPE_FP16
      dims: [ 2, 5 ]
      reshape: { shape: [ 10 ] }
    }
      , {
        name: "OUTPUT__1"
        data_type: TYPE_BOOL
        dims: [ -1 ]
      }]
  )pb");
  absl::StatusOr<ConfigSignature> signature = SignatureFromConfig(config);
  REQUIRE(signature.ok());
  CHECK(signature->max_batch_size == 16);
  REQUIRE(signature->inputs.size() == 2);
  CHECK(signature->inputs[0].name == "image");
  CHECK(signature->inputs[0].type == DataType::kUint8);
  CHECK(signature->inputs[0].dims == Dims{3, -1, -1});
  CHECK_FALSE(signature->inputs[0].reshaped);
  CHECK_FALSE(signature->inputs[0].optional);
  CHECK(signature->inputs[1].type == DataType::kFp64);
  CHECK(signature->inputs[1].reshaped);
  CHECK(signature->inputs[1].reshape.empty());
  CHECK(signature->inputs[1].optional);
  CHECK_FALSE(signature->inputs[1].default_value.has_value());
  REQUIRE(signature->outputs.size() == 2);
  CHECK(signature->outputs[0].type == DataType::kFp16);
  CHECK(signature->outputs[0].reshaped);
  CHECK(signature->outputs[0].reshape == Dims{10});
  CHECK(signature->outputs[1].type == DataType::kBool);
  CHECK(signature->outputs[1].dims == Dims{-1});

  ModelConfig written;
  written.set_name("m");
  written.set_platform("pytorch_libtorch");
  WriteSignature(*signature, &written);
  CHECK(written.SerializeAsString() == config.SerializeAsString());
  absl::StatusOr<ConfigSignature> again = SignatureFromConfig(written);
  REQUIRE(again.ok());
  CHECK(again->inputs[1].reshaped);
  CHECK(again->outputs[0].reshape == Dims{10});

  config.mutable_input(0)->set_data_type(inference::TYPE_STRING);
  CHECK(SignatureFromConfig(config).status().message().find(
            "model \"m\": input \"image\": data_type TYPE_STRING is not supported") == 0);
}

TEST_CASE("ModelFileName follows default_model_filename, then the platform", "[model_config]") {
  ModelConfig config;
  CHECK(ModelFileName(config) == "model.pt");
  config.set_platform("torch_aoti");
  CHECK(ModelFileName(config) == "model.pt2");
  config.set_default_model_filename("compiled.pt2");
  CHECK(ModelFileName(config) == "compiled.pt2");
}

}  // namespace
}  // namespace model_server::repository
