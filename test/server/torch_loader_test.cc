// The torch loader's reading of a configuration's parameters: the PyTorch backend's own
// (Triton's pytorch_backend README) and the seed mapping's.

#include "server/torch_loader.h"

#include <catch2/catch.hpp>
#include <string>

namespace model_server::server {
namespace {

repository::RepositoryModel Model(const std::map<std::string, std::string>& parameters,
                                  bool declared = true) {
  repository::RepositoryModel model;
  model.name = "m";
  model.has_config_file = true;
  model.config.set_name("m");
  model.config.set_platform("pytorch_libtorch");
  model.config.set_max_batch_size(8);
  if (declared) {
    inference::ModelInput* input = model.config.add_input();
    input->set_name("INPUT__0");
    input->set_data_type(inference::TYPE_FP32);
    input->add_dims(4);
    inference::ModelOutput* output = model.config.add_output();
    output->set_name("OUTPUT__0");
    output->set_data_type(inference::TYPE_FP32);
    output->add_dims(4);
  }
  for (const auto& [key, value] : parameters) {
    (*model.config.mutable_parameters())[key].set_string_value(value);
  }
  model.versions.push_back({1, "/models/m/1/model.pt"});
  return model;
}

absl::StatusOr<handlers::TorchHandlerOptions> Options(const repository::RepositoryModel& model) {
  absl::StatusOr<std::vector<handlers::TorchHandlerOptions>> each =
      InstanceOptions(model, model.versions.front(), TorchLoaderOptions());
  if (!each.ok()) return each.status();
  REQUIRE(each->size() == 1);
  return each->front();
}

std::string Error(const repository::RepositoryModel& model) {
  const absl::StatusOr<handlers::TorchHandlerOptions> options = Options(model);
  REQUIRE_FALSE(options.ok());
  CHECK(options.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(options.status().message());
}

TEST_CASE("the PyTorch backend's execution parameters set the handler's options", "[loader]") {
  absl::StatusOr<handlers::TorchHandlerOptions> defaults = Options(Model({}));
  REQUIRE(defaults.ok());
  CHECK(defaults->optimized_execution);
  CHECK(defaults->inference_mode);
  CHECK(defaults->model_path == "/models/m/1/model.pt");

  absl::StatusOr<handlers::TorchHandlerOptions> set =
      Options(Model({{"DISABLE_OPTIMIZED_EXECUTION", "true"}, {"INFERENCE_MODE", "false"}}));
  REQUIRE(set.ok());
  CHECK_FALSE(set->optimized_execution);
  CHECK_FALSE(set->inference_mode);
  // Spelled as the backend reads booleans, and without declared inputs and outputs.
  set = Options(Model({{"DISABLE_OPTIMIZED_EXECUTION", " Yes"}, {"INFERENCE_MODE", "1"}},
                      /*declared=*/false));
  REQUIRE(set.ok());
  CHECK_FALSE(set->optimized_execution);
  CHECK(set->inference_mode);
  CHECK(Error(Model({{"INFERENCE_MODE", "maybe"}})) ==
        "model \"m\": config parameter \"INFERENCE_MODE\" is \"maybe\"; it takes true or false");
}

TEST_CASE("backend switches of process-wide state are accepted only at libtorch's own value",
          "[loader]") {
  CHECK(Options(Model({{"ENABLE_JIT_EXECUTOR", "true"},
                       {"ENABLE_JIT_PROFILING", "true"},
                       {"ENABLE_TENSOR_FUSER", "true"},
                       {"ENABLE_NVFUSER", "false"},
                       {"ENABLE_WEIGHT_SHARING", "true"},
                       {"ENABLE_CACHE_CLEANING", "false"}}))
            .ok());
  CHECK(Error(Model({{"ENABLE_JIT_PROFILING", "false"}})) ==
        "model \"m\": config parameter \"ENABLE_JIT_PROFILING\": false is not supported (it "
        "switches libtorch's profiling for the whole process); leave it out or set it true");
  CHECK_THAT(Error(Model({{"ENABLE_WEIGHT_SHARING", "false"}})),
             Catch::Contains("instances on one device share one copy of the weights"));
  CHECK_THAT(Error(Model({{"INTRA_OP_THREAD_COUNT", "4"}})),
             Catch::Contains("set with model_server --torch-threads"));
  CHECK_THAT(Error(Model({{"TRITON_BATCH_STRATEGY_PATH", "x.so"}})),
             Catch::Contains("config parameter \"TRITON_BATCH_STRATEGY_PATH\" is not supported "
                             "(supported: seed_columns, "));
}

TEST_CASE("seed parameters need declared tensors; backend ones do not", "[loader]") {
  CHECK_THAT(Error(Model({{"seed_columns", "INPUT__0"}}, /*declared=*/false)),
             Catch::Contains("config parameters seed_* need the inputs and outputs"));
  CHECK(Options(Model({{"DISABLE_OPTIMIZED_EXECUTION", "false"}}, /*declared=*/false)).ok());
}

}  // namespace
}  // namespace model_server::server
