// model_forward_bench: the model's own limit. Times the TorchScript handler's forward pass (the
// one model_server runs, warmed up as its batch threads warm it up) at given batch sizes, in
// process, with no gRPC and no JSON: of a model file (--model), of a repository model as
// model_server would load it (--model-repository, --model-name: its config.pbtxt, parameters and
// latest picked version), or of the demo model; on the CPU or a GPU, in any precision, with or
// without CUDA graphs.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cxxopts.hpp>
#include <iostream>
#include <sstream>
#include <vector>

#include "handlers/torch/torch_handler.h"
#include "repository/model_repository.h"
#include "server/torch_loader.h"

namespace handlers = model_server::handlers;

namespace {

// `count` elements of `type` at `to`: sin(i) for floats (the demo model's default params come
// out as 0.1 * (i % 5) within its rows), small non-negative integers (valid embedding ids),
// alternating booleans.
void Fill(handlers::DataType type, int64_t count, char* to) {
  using handlers::DataType;
  for (int64_t i = 0; i < count; ++i) {
    switch (type) {
      case DataType::kFp32:
        reinterpret_cast<float*>(to)[i] = std::sin(static_cast<float>(i));
        break;
      case DataType::kFp64:
        reinterpret_cast<double*>(to)[i] = std::sin(static_cast<double>(i));
        break;
      case DataType::kInt64:
        reinterpret_cast<int64_t*>(to)[i] = i % 8;
        break;
      case DataType::kInt32:
        reinterpret_cast<int32_t*>(to)[i] = static_cast<int32_t>(i % 8);
        break;
      default:  // one-byte and two-byte types: small integers or their bit patterns
        std::memset(to + i * handlers::ElementSize(type), static_cast<int>(i % 2),
                    handlers::ElementSize(type));
        break;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("model_forward_bench",
                           "Raw forward throughput (rows/s) of a model at given batch sizes");
  // clang-format off
  options.add_options()
    ("model", "TorchScript model file; none uses the built-in demo model",
     cxxopts::value<std::string>()->default_value(""))
    ("model-repository", "a Triton model repository: time --model-name as model_server loads it",
     cxxopts::value<std::string>()->default_value(""))
    ("model-name", "with --model-repository: the model (its latest picked version)",
     cxxopts::value<std::string>()->default_value(""))
    ("batch-rows", "comma-separated batch sizes",
     cxxopts::value<std::string>()->default_value("1,50,100,200,400,800,1600,3200"))
    ("seconds", "seconds timed per batch size", cxxopts::value<double>()->default_value("2"))
    ("torch-threads", "torch intra-op threads", cxxopts::value<int>()->default_value("1"))
    ("demo-hidden", "hidden width of the demo model", cxxopts::value<int64_t>()->default_value("32"))
    ("device", "cpu, cuda, cuda:N or auto", cxxopts::value<std::string>()->default_value("cpu"))
    ("precision", "fp32, tf32, fp16 or bf16", cxxopts::value<std::string>()->default_value("fp32"))
    ("cuda-graphs", "true: replay CUDA graphs of bucketed batch sizes (on a GPU)",
     cxxopts::value<std::string>()->default_value("false"))
    ("variable-size", "size given to the model's variable dimensions",
     cxxopts::value<int64_t>()->default_value("16"))
    ("h,help", "show this help");
  // clang-format on
  std::vector<int64_t> sizes;
  handlers::TorchHandlerOptions handler_options;
  std::string repository_dir, model_name;
  double seconds = 0;
  int64_t variable_size = 0;
  try {
    const cxxopts::ParseResult flags = options.parse(argc, argv);
    if (flags.count("help") > 0) {
      std::cout << options.help() << std::endl;
      return 0;
    }
    std::stringstream list(flags["batch-rows"].as<std::string>());
    for (std::string item; std::getline(list, item, ',');) sizes.push_back(std::stoll(item));
    seconds = flags["seconds"].as<double>();
    variable_size = flags["variable-size"].as<int64_t>();
    handler_options.model_path = flags["model"].as<std::string>();
    handler_options.torch_threads = flags["torch-threads"].as<int>();
    handler_options.demo_hidden = flags["demo-hidden"].as<int64_t>();
    handler_options.device = flags["device"].as<std::string>();
    handler_options.precision = flags["precision"].as<std::string>();
    handler_options.cuda_graphs = flags["cuda-graphs"].as<std::string>() == "true";
    repository_dir = flags["model-repository"].as<std::string>();
    model_name = flags["model-name"].as<std::string>();
    if (repository_dir.empty() != model_name.empty()) {
      throw cxxopts::exceptions::exception("--model-repository and --model-name go together");
    }
    if (!repository_dir.empty() && !handler_options.model_path.empty()) {
      throw cxxopts::exceptions::exception("--model or --model-repository, not both");
    }
  } catch (const std::exception& error) {
    std::cerr << "model_forward_bench: " << error.what() << "\n\n" << options.help() << std::endl;
    return 2;
  }
  for (const int64_t rows : sizes) {
    if (rows < 1) {
      std::cerr << "model_forward_bench: batch sizes must be positive" << std::endl;
      return 2;
    }
    handler_options.max_batch_rows = std::max(handler_options.max_batch_rows, rows);
  }

  if (!repository_dir.empty()) {
    // The options of the model's first instance, as model_server's loader makes them.
    absl::StatusOr<model_server::repository::ModelRepository> repository =
        model_server::repository::ModelRepository::Create(repository_dir);
    if (!repository.ok()) {
      std::cerr << "model_forward_bench: " << repository.status().message() << std::endl;
      return 1;
    }
    absl::StatusOr<model_server::repository::RepositoryModel> model = repository->Read(model_name);
    if (!model.ok()) {
      std::cerr << "model_forward_bench: " << model.status().message() << std::endl;
      return 1;
    }
    model_server::server::TorchLoaderOptions loader;
    loader.handler = handler_options;
    absl::StatusOr<std::vector<handlers::TorchHandlerOptions>> instances =
        model_server::server::InstanceOptions(*model, model->versions.back(), loader);
    if (!instances.ok()) {
      std::cerr << "model_forward_bench: " << instances.status().message() << std::endl;
      return 1;
    }
    handler_options = instances->front();
    std::cout << "model " << model_name << " version " << model->versions.back().version << " from "
              << handler_options.model_path << " on " << handler_options.device << std::endl;
  }
  absl::StatusOr<std::unique_ptr<handlers::LoadedModel>> loaded =
      handlers::LoadedModel::Load(handlers::MakeTorchHandler(handler_options));
  if (!loaded.ok()) {
    std::cerr << "model_forward_bench: " << loaded.status().message() << std::endl;
    return 1;
  }
  handlers::ModelHandler* handler = &(*loaded)->handler();
  const handlers::ModelSignature& signature = handler->signature();
  for (const int64_t rows : sizes) {
    if (signature.batches() && rows > signature.max_batch_size) {
      std::cerr << "model_forward_bench: batch size " << rows << " is more than the model's "
                << "max_batch_size " << signature.max_batch_size << std::endl;
      return 2;
    }
  }
  // As a batch thread of the server does before it serves: every size up to the largest.
  if (const absl::Status warmed = handler->WarmUp(handler_options.max_batch_rows); !warmed.ok()) {
    std::cerr << "model_forward_bench: " << warmed.message() << std::endl;
    return 1;
  }
  std::printf("%10s %12s %14s %12s\n", "batch_rows", "forwards/s", "rows/s", "us/forward");
  for (const int64_t rows : sizes) {
    std::vector<handlers::Dims> shapes;
    for (const handlers::TensorSpec& input : signature.inputs) {
      handlers::Dims shape;
      if (signature.batches()) shape.push_back(rows);
      for (const int64_t size : input.dims) shape.push_back(size < 0 ? variable_size : size);
      shapes.push_back(std::move(shape));
    }
    int64_t forwards = 0;
    const auto start = std::chrono::steady_clock::now();
    std::chrono::duration<double> elapsed{0};
    while (elapsed.count() < seconds) {
      // Fresh inputs every pass, as the batch executor writes them.
      const std::vector<char*> buffers = handler->PrepareBatch(shapes);
      for (size_t i = 0; i < shapes.size(); ++i) {
        Fill(signature.inputs[i].type, *handlers::ElementCount(shapes[i]), buffers[i]);
      }
      const absl::StatusOr<const std::vector<handlers::OutputTensor>*> outputs = handler->Run();
      if (!outputs.ok()) {
        std::cerr << "model_forward_bench: " << outputs.status().message() << std::endl;
        return 1;
      }
      ++forwards;
      elapsed = std::chrono::steady_clock::now() - start;
    }
    std::printf("%10lld %12.0f %14.0f %12.1f\n", static_cast<long long>(rows),
                forwards / elapsed.count(), forwards * rows / elapsed.count(),
                elapsed.count() * 1e6 / forwards);
  }
  return 0;
}
