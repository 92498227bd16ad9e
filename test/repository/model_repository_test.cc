#include "repository/model_repository.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "repository/model_config.h"

namespace model_server::repository {
namespace {

namespace fs = std::filesystem;

// A model repository in a fresh temporary folder, removed at the end of the test.
class TempRepository {
 public:
  TempRepository() {
    std::string pattern = (fs::temp_directory_path() / "repository_test_XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    root_ = pattern;
  }
  ~TempRepository() {
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }

  const std::string& root() const { return root_; }
  std::string Path(const std::string& relative) const { return root_ + "/" + relative; }

  // Writes `text` to `relative`, making its folders.
  void Write(const std::string& relative, const std::string& text = "") const {
    fs::create_directories(fs::path(Path(relative)).parent_path());
    std::ofstream out(Path(relative), std::ios::binary | std::ios::trunc);
    out << text;
    REQUIRE(out.good());
  }
  void Folder(const std::string& relative) const { fs::create_directories(Path(relative)); }

  ModelRepository Open(ModelRepository::Options options = {}) const {
    absl::StatusOr<ModelRepository> repository = ModelRepository::Create(root_, options);
    INFO(repository.status().ToString());
    REQUIRE(repository.ok());
    return *std::move(repository);
  }

 private:
  std::string root_;
};

constexpr char kConfig[] = R"pb(
  platform: "pytorch_libtorch"
  max_batch_size: 4 input
  [ {
    name: "INPUT__0"
    data_type: TYPE_FP32
    dims: [ 3 ]
  }] output
  [ {
    name: "OUTPUT__0"
    data_type: TYPE_FP32
    dims: [ 1 ]
  }]
)pb";

std::vector<int64_t> Versions(const RepositoryModel& model) {
  std::vector<int64_t> versions;
  for (const VersionFile& file : model.versions) versions.push_back(file.version);
  return versions;
}

RepositoryModel ReadOk(const ModelRepository& repository, const std::string& name) {
  absl::StatusOr<RepositoryModel> model = repository.Read(name);
  INFO(model.status().ToString());
  REQUIRE(model.ok());
  return *std::move(model);
}

std::string ReadError(const ModelRepository& repository, const std::string& name,
                      absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
  absl::StatusOr<RepositoryModel> model = repository.Read(name);
  REQUIRE_FALSE(model.ok());
  CHECK(model.status().code() == code);
  return std::string(model.status().message());
}

TEST_CASE("a repository that cannot be read is an error naming it", "[repository]") {
  TempRepository temp;
  absl::StatusOr<ModelRepository> repository = ModelRepository::Create(temp.Path("missing"));
  REQUIRE_FALSE(repository.ok());
  CHECK(repository.status().code() == absl::StatusCode::kNotFound);
  CHECK(repository.status().message() ==
        "model repository " + temp.Path("missing") + " cannot be read: No such file or directory");

  temp.Write("file");
  repository = ModelRepository::Create(temp.Path("file"));
  REQUIRE_FALSE(repository.ok());
  CHECK(repository.status().message() ==
        "model repository " + temp.Path("file") + " cannot be read: Not a directory");

  CHECK(ModelRepository::Create("").status().message() == "the model repository's path is empty");
  repository = ModelRepository::Create(temp.root() + "//");
  REQUIRE(repository.ok());
  CHECK(repository->dir() == temp.root());
}

TEST_CASE("the models are the repository's folders, hidden ones left out", "[repository]") {
  TempRepository temp;
  temp.Folder("resnet");
  temp.Folder("bert-base");
  temp.Folder(".git");
  temp.Folder("a b");
  temp.Write("README.md", "not a model");
  const ModelRepository repository = temp.Open();
  absl::StatusOr<std::vector<std::string>> models = repository.ListModels();
  REQUIRE(models.ok());
  CHECK(*models == std::vector<std::string>{"a b", "bert-base", "resnet"});
  // Listed, but refused when read.
  CHECK(ReadError(repository, "a b").find("model name \"a b\" has the character \" \"") == 0);
  CHECK(ReadError(repository, "missing", absl::StatusCode::kNotFound) ==
        "model \"missing\" is not in the model repository " + temp.root());
  CHECK(ReadError(repository, "../resnet").find("model name \"../resnet\" starts with '.'") == 0);
  CHECK(ReadError(repository, "README.md") ==
        "model \"README.md\": " + temp.Path("README.md") + " is not a folder");
}

TEST_CASE("versions are numbered folders; the policy picks among them", "[repository]") {
  TempRepository temp;
  for (const char* folder : {"1", "2", "10", "01", "0", "v3", "abc", "99999999999999999999"}) {
    temp.Write(std::string("m/") + folder + "/model.pt");
  }
  temp.Write("m/7");  // a file, not a folder
  const ModelRepository repository = temp.Open();

  SECTION("default: the latest version only, numerically") {
    temp.Write("m/config.pbtxt", kConfig);
    const RepositoryModel model = ReadOk(repository, "m");
    CHECK(Versions(model) == std::vector<int64_t>{10});
    CHECK(model.versions[0].path == temp.Path("m/10/model.pt"));
    CHECK(model.has_config_file);
    CHECK(model.config.name() == "m");
    CHECK(model.config.platform() == "pytorch_libtorch");
    CHECK(model.config.backend() == "pytorch");
    CHECK(model.config.version_policy().latest().num_versions() == 1);
  }
  SECTION("latest two; latest five of three") {
    temp.Write("m/config.pbtxt",
               std::string(kConfig) + "version_policy: { latest: { num_versions: 2 } }");
    CHECK(Versions(ReadOk(repository, "m")) == std::vector<int64_t>{2, 10});
    temp.Write("m/config.pbtxt",
               std::string(kConfig) + "version_policy: { latest: { num_versions: 5 } }");
    CHECK(Versions(ReadOk(repository, "m")) == std::vector<int64_t>{1, 2, 10});
  }
  SECTION("all") {
    temp.Write("m/config.pbtxt", std::string(kConfig) + "version_policy: { all { } }");
    const RepositoryModel model = ReadOk(repository, "m");
    CHECK(Versions(model) == std::vector<int64_t>{1, 2, 10});
    CHECK(model.versions[1].path == temp.Path("m/2/model.pt"));
  }
  SECTION("specific") {
    temp.Write("m/config.pbtxt",
               std::string(kConfig) + "version_policy: { specific: { versions: [ 10, 1 ] } }");
    CHECK(Versions(ReadOk(repository, "m")) == std::vector<int64_t>{1, 10});
    temp.Write("m/config.pbtxt",
               std::string(kConfig) + "version_policy: { specific: { versions: [ 1, 3 ] } }");
    CHECK(ReadError(repository, "m") ==
          "model \"m\": version_policy.specific lists version 3, but there is no version folder " +
              temp.Path("m/3"));
    // "01" is not version 1's folder, as in Triton.
    fs::remove_all(temp.Path("m/1"));
    temp.Write("m/config.pbtxt",
               std::string(kConfig) + "version_policy: { specific: { versions: [ 1 ] } }");
    CHECK(ReadError(repository, "m").find("lists version 1, but there is no version folder") !=
          std::string::npos);
  }
}

TEST_CASE("a picked version without its model file names model, version and path", "[repository]") {
  TempRepository temp;
  temp.Write("m/config.pbtxt", std::string(kConfig) + "version_policy: { all { } }");
  temp.Write("m/1/model.pt");
  temp.Write("m/2/model.onnx");
  const ModelRepository repository = temp.Open();
  CHECK(ReadError(repository, "m") ==
        "model \"m\" version 2: the model file " + temp.Path("m/2/model.pt") + " is missing");
  // A folder where the file should be is no model file either.
  fs::remove(temp.Path("m/2/model.onnx"));
  temp.Folder("m/2/model.pt");
  CHECK(ReadError(repository, "m") ==
        "model \"m\" version 2: the model file " + temp.Path("m/2/model.pt") + " is missing");
  fs::remove_all(temp.Path("m/1"));
  fs::remove_all(temp.Path("m/2"));
  CHECK(ReadError(repository, "m") ==
        "model \"m\": no version folder in " + temp.Path("m") +
            " (a folder named by the version number, 1 or more, holding the model file: " +
            temp.Path("m") + "/1/model.pt)");
}

TEST_CASE("default_model_filename and the platform choose the file", "[repository]") {
  TempRepository temp;
  const ModelRepository repository = temp.Open();
  temp.Write("m/config.pbtxt", std::string(kConfig) + "default_model_filename: \"traced.pt\"");
  temp.Write("m/1/model.pt");
  CHECK(ReadError(repository, "m") ==
        "model \"m\" version 1: the model file " + temp.Path("m/1/traced.pt") + " is missing");
  temp.Write("m/1/traced.pt");
  CHECK(ReadOk(repository, "m").versions[0].path == temp.Path("m/1/traced.pt"));

  temp.Write("aoti/config.pbtxt", "platform: \"torch_aoti\"");
  temp.Write("aoti/3/model.pt");
  CHECK(ReadError(repository, "aoti") == "model \"aoti\" version 3: the model file " +
                                             temp.Path("aoti/3/model.pt2") + " is missing");
  temp.Write("aoti/3/model.pt2");
  const RepositoryModel aoti = ReadOk(repository, "aoti");
  CHECK(aoti.versions[0].path == temp.Path("aoti/3/model.pt2"));
  CHECK(aoti.config.backend() == "pytorch");
}

TEST_CASE("without config.pbtxt the platform comes from the model file", "[repository]") {
  TempRepository temp;
  const ModelRepository repository = temp.Open();
  temp.Write("ts/1/model.pt");
  RepositoryModel model = ReadOk(repository, "ts");
  CHECK_FALSE(model.has_config_file);
  CHECK(model.config.name() == "ts");
  CHECK(model.config.platform() == "pytorch_libtorch");
  CHECK(model.config.backend() == "pytorch");
  CHECK(model.config.max_batch_size() == 0);
  CHECK(model.config.input_size() == 0);
  CHECK(model.config.version_policy().latest().num_versions() == 1);
  CHECK(model.versions[0].path == temp.Path("ts/1/model.pt"));

  temp.Write("aoti/2/model.pt2");
  temp.Write("aoti/1/model.pt");  // an older version: only the latest is looked at
  model = ReadOk(repository, "aoti");
  CHECK(model.config.platform() == "torch_aoti");
  CHECK(Versions(model) == std::vector<int64_t>{2});

  temp.Write("both/1/model.pt");
  temp.Write("both/1/model.pt2");
  CHECK(ReadError(repository, "both") ==
        "model \"both\": " + temp.Path("both/1") +
            " holds both model.pt and model.pt2; say which to serve with platform: "
            "\"pytorch_libtorch\" or \"torch_aoti\" in " +
            temp.Path("both/config.pbtxt"));

  temp.Write("none/4/model.onnx");
  CHECK(ReadError(repository, "none") ==
        "model \"none\" version 4: " + temp.Path("none/4") +
            " holds no model file (model.pt for TorchScript or model.pt2 for an AOTInductor "
            "package)");

  // A config that names neither platform nor backend is completed the same way.
  temp.Write("partial/config.pbtxt", "max_batch_size: 8");
  temp.Write("partial/1/model.pt2");
  model = ReadOk(repository, "partial");
  CHECK(model.has_config_file);
  CHECK(model.config.platform() == "torch_aoti");
  CHECK(model.config.max_batch_size() == 8);
  temp.Write("partial/config.pbtxt", "default_model_filename: \"net.pt2\"");
  temp.Write("partial/1/net.pt2");
  CHECK(ReadOk(repository, "partial").config.platform() == "torch_aoti");
  // The backend alone means TorchScript, as in Triton's PyTorch backend.
  temp.Write("partial/config.pbtxt", "backend: \"pytorch\"");
  temp.Write("partial/1/model.pt");
  CHECK(ReadOk(repository, "partial").config.platform() == "pytorch_libtorch");
}

TEST_CASE("config errors name the file's line and column, or the model and field", "[repository]") {
  TempRepository temp;
  const ModelRepository repository = temp.Open();
  temp.Write("cnn/1/model.pt");
  temp.Write("cnn/config.pbtxt", "platform: \"pytorch_libtorch\"\n  max_bach_size: 8\n");
  CHECK(ReadError(repository, "cnn") ==
        "model \"cnn\": " + temp.Path("cnn/config.pbtxt") +
            ":2:16: Message type \"inference.ModelConfig\" has no field named \"max_bach_size\".");
  temp.Write("cnn/config.pbtxt", std::string(kConfig) + "sequence_batching { }");
  CHECK(ReadError(repository, "cnn") ==
        "model \"cnn\": config field sequence_batching is not supported");
  temp.Write("cnn/config.pbtxt", std::string(kConfig) + "name: \"resnet\"");
  CHECK(ReadError(repository, "cnn").find("config names the model \"resnet\"") !=
        std::string::npos);
  // Config errors come before the files are looked at: no platform, no model file.
  fs::remove_all(temp.Path("cnn/1"));
  temp.Write("cnn/config.pbtxt", "max_batch_size: -2");
  CHECK(ReadError(repository, "cnn") ==
        "model \"cnn\": max_batch_size is -2; it is 0 (no batching) or more");

  temp.Write("cnn/1/model.pt");
  temp.Write("cnn/config.pbtxt", std::string(kConfig) + "# " + std::string(100, 'x'));
  ModelRepository::Options small;
  small.max_config_bytes = 100;
  CHECK(ReadError(temp.Open(small), "cnn") ==
        "model \"cnn\": " + temp.Path("cnn/config.pbtxt") +
            " is larger than 100 bytes; a config is a few kB");
  temp.Folder("dir/config.pbtxt");
  temp.Write("dir/1/model.pt");
  CHECK(ReadError(repository, "dir") ==
        "model \"dir\": " + temp.Path("dir/config.pbtxt") + " is not a file");
}

TEST_CASE("the settled config fills Triton's defaults", "[repository]") {
  TempRepository temp;
  temp.Write("m/1/model.pt");
  temp.Write("m/config.pbtxt", std::string(kConfig) + R"pb(
    instance_group
    [ { kind: KIND_CPU }
      , {
        count: 3
        kind: KIND_GPU
        gpus: [ 0 ]
      }]
  )pb");
  const RepositoryModel model = ReadOk(temp.Open(), "m");
  CHECK(model.config.instance_group(0).count() == 1);
  CHECK(model.config.instance_group(1).count() == 3);
  CHECK(ValidateModelConfig(model.config, "m").ok());
  absl::StatusOr<ConfigSignature> signature = SignatureFromConfig(model.config);
  REQUIRE(signature.ok());
  CHECK(signature->max_batch_size == 4);
  CHECK(signature->inputs[0].name == "INPUT__0");
}

TEST_CASE("model_warmup data files lie in the model's warmup folder", "[repository]") {
  TempRepository temp;
  temp.Write("m/1/model.pt");
  temp.Write("m/config.pbtxt", std::string(kConfig) + R"pb(
    model_warmup
    [ {
      name: "sample"
      batch_size: 1
      inputs {
        key: "INPUT__0"
        value: {
          data_type: TYPE_FP32
          dims: [ 3 ]
          input_data_file: "x.bin"
        }
      }
    }]
  )pb");
  const ModelRepository repository = temp.Open();
  CHECK(ReadError(repository, "m") ==
        "model \"m\": model_warmup \"sample\": input \"INPUT__0\": "
        "the input_data_file " +
            temp.Path("m/warmup/x.bin") + " is missing");
  temp.Write("m/warmup/x.bin", std::string(12, '\0'));
  CHECK(ReadOk(repository, "m").config.model_warmup_size() == 1);
}

TEST_CASE("the fingerprint changes when a model's files change, and only then", "[repository]") {
  TempRepository temp;
  temp.Write("m/config.pbtxt", kConfig);
  temp.Write("m/1/model.pt", "weights");
  temp.Write("other/1/model.pt");
  const ModelRepository repository = temp.Open();
  const auto fingerprint = [&] {
    absl::StatusOr<uint64_t> value = repository.Fingerprint("m");
    INFO(value.status().ToString());
    REQUIRE(value.ok());
    return *value;
  };
  const auto set_mtime = [&](const std::string& relative, int seconds) {
    fs::last_write_time(temp.Path(relative),
                        fs::file_time_type(std::chrono::seconds(1'600'000'000 + seconds)));
  };
  uint64_t before = fingerprint();
  CHECK(fingerprint() == before);
  CHECK(ReadOk(repository, "m").fingerprint == before);

  // The config's bytes count, not its times.
  temp.Write("m/config.pbtxt", kConfig);
  set_mtime("m/config.pbtxt", 5);
  CHECK(fingerprint() == before);
  temp.Write("m/config.pbtxt", std::string(kConfig) + "# edited\n");
  CHECK(fingerprint() != before);
  before = fingerprint();

  // A model file rewritten in place with the same size: its times change.
  set_mtime("m/1/model.pt", 1);
  before = fingerprint();
  temp.Write("m/1/model.pt", "WEIGHTS");
  set_mtime("m/1/model.pt", 2);
  CHECK(fingerprint() != before);
  before = fingerprint();

  // Replaced by rename (the usual atomic update) with the same bytes and times, the folder's
  // time put back too: the new inode (and status-change time) still tell.
  temp.Write("staging/model.pt", "WEIGHTS");
  set_mtime("staging/model.pt", 2);
  set_mtime("m/1", 3);
  before = fingerprint();
  fs::rename(temp.Path("staging/model.pt"), temp.Path("m/1/model.pt"));
  set_mtime("m/1", 3);
  CHECK(fingerprint() != before);
  before = fingerprint();

  // A version folder added, then removed.
  temp.Write("m/2/model.pt");
  const uint64_t with_two = fingerprint();
  CHECK(with_two != before);
  fs::remove_all(temp.Path("m/2"));
  CHECK(fingerprint() != with_two);
  before = fingerprint();

  // Hidden files (editors' swap files) and other models do not count.
  temp.Write("m/.config.pbtxt.swp", "x");
  temp.Write("other/2/model.pt");
  CHECK(fingerprint() == before);

  // A version folder that is a link, switched to another target.
  temp.Write("store/a/model.pt", "a");
  temp.Write("store/b/model.pt", "b");
  fs::create_directory_symlink(temp.Path("store/a"), temp.Path("m/3"));
  CHECK(Versions(ReadOk(repository, "m")) == std::vector<int64_t>{3});
  before = fingerprint();
  fs::remove(temp.Path("m/3"));
  fs::create_directory_symlink(temp.Path("store/b"), temp.Path("m/3"));
  CHECK(fingerprint() != before);

  // Gone.
  fs::remove_all(temp.Path("m"));
  absl::StatusOr<uint64_t> gone = repository.Fingerprint("m");
  CHECK(gone.status().code() == absl::StatusCode::kNotFound);
  CHECK(repository.Fingerprint("a b").status().code() == absl::StatusCode::kInvalidArgument);
}

// The repository in test/repository/triton_docs was typed by hand from Triton's documentation
// (see its README.md); nothing of ours generated it.
TEST_CASE("a repository written from Triton's documentation reads as Triton reads it",
          "[repository]") {
  absl::StatusOr<ModelRepository> repository =
      ModelRepository::Create(MODEL_SERVER_SOURCE_DIR "/test/repository/triton_docs");
  REQUIRE(repository.ok());
  const std::string root = repository->dir();
  absl::StatusOr<std::vector<std::string>> models = repository->ListModels();
  REQUIRE(models.ok());
  CHECK(*models ==
        std::vector<std::string>{"image_classifier", "latest_two", "no_config", "two_inputs"});

  const RepositoryModel classifier = ReadOk(*repository, "image_classifier");
  CHECK(Versions(classifier) == std::vector<int64_t>{1, 3});
  CHECK(classifier.versions[1].path == root + "/image_classifier/3/model.pt");
  const inference::ModelConfig& config = classifier.config;
  CHECK(config.max_batch_size() == 8);
  CHECK(config.input(0).format() == inference::ModelInput::FORMAT_NCHW);
  REQUIRE(config.instance_group_size() == 2);
  CHECK(config.instance_group(0).kind() == inference::ModelInstanceGroup::KIND_GPU);
  CHECK(config.instance_group(0).gpus(0) == 0);
  CHECK(config.instance_group(1).kind() == inference::ModelInstanceGroup::KIND_CPU);
  CHECK(config.instance_group(1).count() == 2);
  CHECK(std::vector<int32_t>(config.dynamic_batching().preferred_batch_size().begin(),
                             config.dynamic_batching().preferred_batch_size().end()) ==
        std::vector<int32_t>{4, 8});
  CHECK(config.dynamic_batching().max_queue_delay_microseconds() == 100);
  CHECK(config.parameters().at("DISABLE_OPTIMIZED_EXECUTION").string_value() == "true");
  absl::StatusOr<ConfigSignature> signature = SignatureFromConfig(config);
  REQUIRE(signature.ok());
  CHECK(signature->max_batch_size == 8);
  CHECK(signature->inputs[0].name == "INPUT__0");
  CHECK(signature->inputs[0].type == handlers::DataType::kFp32);
  CHECK(signature->inputs[0].dims == handlers::Dims{3, 32, 32});
  CHECK(signature->outputs[0].name == "OUTPUT__0");
  CHECK(signature->outputs[0].dims == handlers::Dims{10});

  const RepositoryModel two = ReadOk(*repository, "two_inputs");
  CHECK(Versions(two) == std::vector<int64_t>{1, 2});
  CHECK(two.config.name() == "two_inputs");
  signature = SignatureFromConfig(two.config);
  REQUIRE(signature.ok());
  CHECK(signature->max_batch_size == 0);
  CHECK(signature->inputs[0].name == "input0");
  CHECK(signature->inputs[0].dims == handlers::Dims{4, -1});
  CHECK(signature->inputs[1].type == handlers::DataType::kInt64);
  CHECK(signature->inputs[1].reshaped);
  CHECK(signature->inputs[1].reshape.empty());
  CHECK(signature->inputs[1].optional);
  CHECK(signature->outputs[1].name == "OUTPUT__1");

  const RepositoryModel latest = ReadOk(*repository, "latest_two");
  CHECK(Versions(latest) == std::vector<int64_t>{2, 3});
  CHECK(latest.versions[0].path == root + "/latest_two/2/traced.pt");
  CHECK(latest.config.platform() == "pytorch_libtorch");
  CHECK(latest.config.instance_group(0).count() == 2);
  CHECK(latest.config.has_dynamic_batching());
  CHECK(SignatureFromConfig(latest.config)->outputs[0].type == handlers::DataType::kFp16);

  const RepositoryModel no_config = ReadOk(*repository, "no_config");
  CHECK_FALSE(no_config.has_config_file);
  CHECK(no_config.config.platform() == "pytorch_libtorch");
  CHECK(Versions(no_config) == std::vector<int64_t>{1});
}

}  // namespace
}  // namespace model_server::repository
