// model_forward_bench: the model's own limit. Times the handler's forward pass (the one
// model_server runs: TorchScript, or AOTInductor for a .pt2 package) at given batch sizes, in
// process, with no gRPC and no JSON: of a model file (--model), of a repository model as
// model_server would load it (--model-repository, --model-name: its config.pbtxt, parameters and
// latest picked version), or of the demo model; on the CPU or a GPU, in any precision, with or
// without CUDA graphs; warmed up as the server's batch threads warm it up. --instances N runs N
// handlers on N threads at once (a .pt2 package loaded once and shared, one runner each, or with
// --aoti-separate loaded per instance); --forwards N runs N forward passes per batch size instead
// of timing, and under `valgrind --tool=callgrind --instr-atstart=no` counts their instructions
// alone: one dump per batch size, labelled "rows=N" (bench/aoti/cost.sh).

#include <absl/strings/match.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cxxopts.hpp>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>
#include <vector>

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else  // no instruction counts; --forwards still runs
#define CALLGRIND_START_INSTRUMENTATION
#define CALLGRIND_STOP_INSTRUMENTATION
#define CALLGRIND_ZERO_STATS
#define CALLGRIND_DUMP_STATS_AT(label)
#endif

#include "handlers/torch/aoti_handler.h"
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

// The process's resident memory (VmRSS), MiB.
double ResidentMiB() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024;
  }
  return 0;
}

// Shapes of a batch of `rows` rows of `signature`'s inputs.
std::vector<handlers::Dims> BatchShapes(const handlers::ModelSignature& signature, int64_t rows,
                                        int64_t variable_size) {
  std::vector<handlers::Dims> shapes;
  for (const handlers::TensorSpec& input : signature.inputs) {
    handlers::Dims shape;
    if (signature.batches()) shape.push_back(rows);
    for (const int64_t size : input.dims) shape.push_back(size < 0 ? variable_size : size);
    shapes.push_back(std::move(shape));
  }
  return shapes;
}

// One forward pass with fresh inputs, as the batch executor writes them; false on error.
bool Forward(handlers::ModelHandler& handler, const std::vector<handlers::Dims>& shapes) {
  const handlers::ModelSignature& signature = handler.signature();
  const std::vector<char*> buffers = handler.PrepareBatch(shapes);
  for (size_t i = 0; i < shapes.size(); ++i) {
    Fill(signature.inputs[i].type, *handlers::ElementCount(shapes[i]), buffers[i]);
  }
  const absl::StatusOr<const std::vector<handlers::OutputTensor>*> outputs = handler.Run();
  if (!outputs.ok()) {
    std::cerr << "model_forward_bench: " << outputs.status().message() << std::endl;
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("model_forward_bench",
                           "Raw forward throughput (rows/s) of a model at given batch sizes");
  // clang-format off
  options.add_options()
    ("model", "TorchScript file or .pt2 package; none uses the built-in demo model",
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
    ("variable-size", "size given to the model's variable dimensions",
     cxxopts::value<int64_t>()->default_value("16"))
    ("device", "cpu, cuda, cuda:N or auto", cxxopts::value<std::string>()->default_value("cpu"))
    ("precision", "fp32, tf32, fp16 or bf16", cxxopts::value<std::string>()->default_value("fp32"))
    ("cuda-graphs", "true: replay CUDA graphs of bucketed batch sizes (on a GPU)",
     cxxopts::value<std::string>()->default_value("false"))
    ("instances", "handlers run at once, one thread each",
     cxxopts::value<int>()->default_value("1"))
    ("aoti-separate", "each instance loads the .pt2 package itself (default: one shared loader)")
    ("forwards", "forward passes per batch size and instance instead of --seconds (0: time)",
     cxxopts::value<int64_t>()->default_value("0"))
    ("h,help", "show this help");
  // clang-format on
  std::vector<int64_t> sizes;
  handlers::TorchHandlerOptions handler_options;
  double seconds = 0;
  int64_t variable_size = 0;
  int instances = 1;
  std::string repository_dir, model_name;
  bool separate = false;
  int64_t fixed_forwards = 0;
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
    instances = std::max(flags["instances"].as<int>(), 1);
    separate = flags.count("aoti-separate") > 0;
    fixed_forwards = flags["forwards"].as<int64_t>();
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
    absl::StatusOr<std::vector<handlers::TorchHandlerOptions>> each =
        model_server::server::InstanceOptions(*model, model->versions.back(), loader);
    if (!each.ok()) {
      std::cerr << "model_forward_bench: " << each.status().message() << std::endl;
      return 1;
    }
    handler_options = each->front();
    std::cout << "model " << model_name << " version " << model->versions.back().version << " from "
              << handler_options.model_path << " on " << handler_options.device << std::endl;
  }
  const bool aoti = absl::EndsWith(handler_options.model_path, ".pt2");
  std::shared_ptr<handlers::SharedAotiPackage> shared;
  if (aoti && !separate && instances > 1) shared = handlers::MakeSharedAotiPackage(instances);
  const double resident_before = ResidentMiB();
  const auto load_start = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<handlers::LoadedModel>> loaded;
  for (int i = 0; i < instances; ++i) {
    std::unique_ptr<handlers::ModelHandler> handler;
    if (aoti) {
      handlers::AotiHandlerOptions package;
      package.package_path = handler_options.model_path;
      package.device = handler_options.device;
      package.torch_threads = handler_options.torch_threads;
      package.max_batch_rows = handler_options.max_batch_rows;
      package.shared = shared;
      handler = handlers::MakeAotiHandler(package);
    } else {
      handler = handlers::MakeTorchHandler(handler_options);
    }
    absl::StatusOr<std::unique_ptr<handlers::LoadedModel>> one =
        handlers::LoadedModel::Load(std::move(handler));
    if (!one.ok()) {
      std::cerr << "model_forward_bench: " << one.status().message() << std::endl;
      return 1;
    }
    loaded.push_back(*std::move(one));
  }
  std::printf(
      "# %d instance(s)%s loaded in %.0f ms; resident memory %.0f MiB -> %.0f MiB\n", instances,
      aoti ? (shared ? ", one shared .pt2 loader" : ", a .pt2 loader each") : "",
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start)
          .count(),
      resident_before, ResidentMiB());
  const handlers::ModelSignature& signature = loaded[0]->signature();
  // As the server's batch threads do before it serves: every size up to the largest, each
  // instance on the thread that runs it.
  {
    std::vector<std::thread> threads;
    std::atomic<bool> failed{false};
    for (int i = 0; i < instances; ++i) {
      threads.emplace_back([&, i] {
        const absl::Status warmed = loaded[i]->handler().WarmUp(handler_options.max_batch_rows);
        if (!warmed.ok()) {
          std::cerr << "model_forward_bench: " << warmed.message() << std::endl;
          failed = true;
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    if (failed) return 1;
  }
  std::printf("%10s %12s %14s %12s\n", "batch_rows", "forwards/s", "rows/s", "us/forward");
  for (const int64_t rows : sizes) {
    if (signature.batches() && rows > signature.max_batch_size) {
      std::printf("%10lld  (above the model's max batch %lld)\n", static_cast<long long>(rows),
                  static_cast<long long>(signature.max_batch_size));
      continue;
    }
    const std::vector<handlers::Dims> shapes = BatchShapes(signature, rows, variable_size);
    const std::string label = "rows=" + std::to_string(rows);
    std::atomic<int64_t> forwards{0};
    std::atomic<bool> failed{false};
    // With --forwards, each thread runs one forward first (a fresh thread's first one pays for
    // its thread-local set-up), then all start together, instrumented.
    std::atomic<int> ready{0};
    std::atomic<bool> go{fixed_forwards == 0};
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int i = 0; i < instances; ++i) {
      threads.emplace_back([&, i] {
        handlers::ModelHandler& handler = loaded[i]->handler();
        if (fixed_forwards > 0 && !Forward(handler, shapes)) failed = true;
        ++ready;
        while (!go) std::this_thread::yield();
        if (failed) return;
        int64_t done = 0;
        while (
            fixed_forwards > 0
                ? done < fixed_forwards
                : std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() <
                      seconds) {
          if (!Forward(handler, shapes)) {
            failed = true;
            return;
          }
          ++done;
        }
        forwards += done;
      });
    }
    if (fixed_forwards > 0) {
      while (ready < instances) std::this_thread::yield();
      CALLGRIND_START_INSTRUMENTATION;
      CALLGRIND_ZERO_STATS;
      start = std::chrono::steady_clock::now();
      go = true;
    }
    for (std::thread& thread : threads) thread.join();
    if (fixed_forwards > 0) {
      CALLGRIND_DUMP_STATS_AT(label.c_str());
      CALLGRIND_STOP_INSTRUMENTATION;
    }
    if (failed) return 1;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%10lld %12.0f %14.0f %12.1f\n", static_cast<long long>(rows), forwards / elapsed,
                forwards * rows / elapsed, elapsed * 1e6 * instances / forwards);
  }
  return 0;
}
