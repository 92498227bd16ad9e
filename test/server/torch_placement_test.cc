// Placement of a model's instances (server/torch_loader): Triton's instance_group semantics,
// checked on the CPU with the number of GPUs given.

#include "server/torch_loader.h"

#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <vector>

#include "repository/model_config.h"

namespace model_server::server {
namespace {

// The devices InstanceOptions gives a model configured by `config_text` with `gpus` GPUs.
std::vector<std::string> Devices(const std::string& config_text, int gpus,
                                 const std::string& device = "auto", int instances = 1) {
  repository::RepositoryModel model;
  model.name = "m";
  auto config = repository::ParseModelConfig(config_text, "config.pbtxt");
  REQUIRE(config.ok());
  model.config = *config;
  model.config.set_platform("pytorch_libtorch");
  TorchLoaderOptions options;
  options.handler.device = device;
  options.instances = instances;
  options.visible_gpus = gpus;
  const auto each = InstanceOptions(model, {1, "/m/1/model.pt"}, options);
  REQUIRE(each.ok());
  std::vector<std::string> devices;
  std::set<std::string> keys;
  for (const handlers::TorchHandlerOptions& instance : *each) {
    devices.push_back(instance.device);
    keys.insert(instance.stream_key);
    CHECK(instance.share == each->front().share);  // one share for the version
    CHECK(instance.share != nullptr);
  }
  CHECK(keys.size() == each->size());  // a stream slot each
  return devices;
}

TEST_CASE("KIND_GPU puts count instances on each GPU it lists, or on each visible GPU",
          "[torch_loader]") {
  using V = std::vector<std::string>;
  CHECK(Devices("instance_group [{ kind: KIND_GPU count: 2 gpus: [0, 1] }]", 2) ==
        V{"cuda:0", "cuda:0", "cuda:1", "cuda:1"});
  CHECK(Devices("instance_group [{ kind: KIND_GPU gpus: [1] }]", 2) == V{"cuda:1"});
  CHECK(Devices("instance_group [{ kind: KIND_GPU count: 1 }]", 3) ==
        V{"cuda:0", "cuda:1", "cuda:2"});
  CHECK(Devices("instance_group [{ kind: KIND_GPU count: 1 gpus: [0] }, { kind: KIND_CPU count: "
                "2 }]",
                1) == V{"cuda:0", "cpu", "cpu"});
}

TEST_CASE(
    "KIND_AUTO and models without instance_group spread over the GPUs when the device is "
    "auto",
    "[torch_loader]") {
  using V = std::vector<std::string>;
  CHECK(Devices("instance_group [{ kind: KIND_AUTO count: 2 }]", 2) ==
        V{"cuda:0", "cuda:0", "cuda:1", "cuda:1"});
  CHECK(Devices("", 2, "auto", 3) == V{"cuda:0", "cuda:1", "cuda:0"});
  // Without GPUs, or with a device named on the command line, they stay there.
  CHECK(Devices("", 0, "auto", 2) == V{"auto", "auto"});
  CHECK(Devices("", 2, "cuda:1", 2) == V{"cuda:1", "cuda:1"});
  CHECK(Devices("instance_group [{ kind: KIND_AUTO count: 2 }]", 2, "cpu") == V{"cpu", "cpu"});
}

TEST_CASE("stream keys name the model's instance slot, the same for every version",
          "[torch_loader]") {
  repository::RepositoryModel model;
  model.name = "m";
  model.config.set_platform("pytorch_libtorch");
  TorchLoaderOptions options;
  options.instances = 2;
  options.visible_gpus = 0;
  const auto first = InstanceOptions(model, {1, "/m/1/model.pt"}, options);
  const auto second = InstanceOptions(model, {2, "/m/2/model.pt"}, options);
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  CHECK((*first)[0].stream_key == "m#0");
  CHECK((*first)[1].stream_key == "m#1");
  CHECK((*second)[1].stream_key == "m#1");
  CHECK((*first)[0].share != (*second)[0].share);  // a share per version
}

TEST_CASE("KIND_GPU without gpus and without a GPU is refused", "[torch_loader]") {
  repository::RepositoryModel model;
  model.name = "m";
  auto config = repository::ParseModelConfig("instance_group [{ kind: KIND_GPU }]", "c");
  REQUIRE(config.ok());
  model.config = *config;
  model.config.set_platform("pytorch_libtorch");
  TorchLoaderOptions options;
  options.visible_gpus = 0;
  const auto refused = InstanceOptions(model, {1, "/m/1/model.pt"}, options);
  CHECK(refused.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(refused.status().message()),
             Catch::Contains("model \"m\": instance_group KIND_GPU lists no gpus"));
}

}  // namespace
}  // namespace model_server::server
