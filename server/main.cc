// model_server: serves TorchScript models over the seed's gRPC ModelService and the Open
// Inference Protocol with dynamic micro-batching. See README.md for flags and payloads.

#include <fcntl.h>
#include <grpc/support/log.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>

#include "handlers/torch/torch_handler.h"
#include "platform/cpus.h"
#include "platform/limits.h"
#include "platform/memory.h"
#include "server/flags.h"
#include "server/model_server.h"
#include "server/torch_loader.h"

namespace model_server {
namespace {

// The exit code after a failed self-check: new connections were no longer accepted, so the
// orchestrator should restart the server (docs/SECURITY.md).
constexpr int kExitUnreachable = 3;

// The exit code after a model instance's device was lost (a sticky CUDA error: a device-side
// assert, an illegal memory access, ...): nothing on that device computes until the process
// restarts, so the server turned NOT_SERVING, drained (requests on the lost device were answered
// UNAVAILABLE) and exits for the orchestrator to restart it (README.md, "Exit codes").
constexpr int kExitDeviceLost = 4;

// The exit code after a usage error (a bad flag or environment variable).
constexpr int kExitUsage = 2;

// What the self-check's failure and a lost device write into the signal pipe (no signal is
// numbered 0, and none above 64).
constexpr char kSelfCheckFailed = 0;
constexpr char kDeviceLost = 100;

// The catalog of the models the command line names: a model repository, or the --model files
// (the demo model without any).
absl::StatusOr<std::unique_ptr<server::ModelCatalog>> MakeCatalog(const server::Config& config) {
  server::TorchLoaderOptions loader;
  loader.handler = config.handler;
  loader.instances = config.instances;
  if (!config.model_repository.empty()) {
    absl::StatusOr<repository::ModelRepository> repository =
        repository::ModelRepository::Create(config.model_repository);
    if (!repository.ok()) return repository.status();
    return server::MakeRepositoryCatalog(*std::move(repository), server::MakeTorchLoader(loader));
  }
  std::vector<server::FileModel> files;
  for (const server::ModelFlag& flag : config.models) {
    files.push_back({flag.name, flag.path, server::MakeTorchLoader(loader)});
  }
  return server::MakeFileCatalog(std::move(files));
}

// gRPC's own log lines, through spdlog like every other line. gRPC's errors are warnings here:
// what they cause reaches our code as a status, which is reported as the one error line (a port in
// use is gRPC's bind error, then our "cannot listen on"). The drain stops gRPC's listening socket
// at the socket (ServerSockets::StopListening), which gRPC then reports as an accept error
// ("Failed accept4: Invalid argument"): expected then, so a debug line.
void LogGrpc(gpr_log_func_args* args) {
  switch (args->severity) {
    case GPR_LOG_SEVERITY_DEBUG:
      spdlog::debug("grpc: {}", args->message);
      break;
    case GPR_LOG_SEVERITY_INFO:
      spdlog::info("grpc: {}", args->message);
      break;
    case GPR_LOG_SEVERITY_ERROR:
      if (std::strstr(args->message, "Failed accept4: Invalid argument")) {
        spdlog::debug("grpc: {}", args->message);
      } else {
        spdlog::warn("grpc: {} ({}:{})", args->message, args->file, args->line);
      }
      break;
  }
}

// The write end of a pipe the signal handler writes each SIGINT/SIGTERM/SIGHUP to. A handler
// (rather than a blocked mask and sigwait) works whichever thread the kernel picks, including
// threads that libraries such as OpenBLAS start before main.
int signal_pipe_write = -1;

void OnShutdownSignal(int signal_number) {
  const char byte = static_cast<char>(signal_number);
  [[maybe_unused]] const ssize_t written = write(signal_pipe_write, &byte, 1);
}

// Returns the read end of the pipe that receives SIGINT, SIGTERM and SIGHUP.
int InstallShutdownSignals() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    spdlog::error("cannot create the signal pipe: {}", strerror(errno));
    std::exit(1);
  }
  signal_pipe_write = fds[1];
  struct sigaction action = {};
  action.sa_handler = OnShutdownSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGHUP, &action, nullptr);
  return fds[0];
}

int NextSignal(int signal_pipe) {
  char byte = 0;
  while (read(signal_pipe, &byte, 1) < 0 && errno == EINTR) {
  }
  return byte;
}

// The next SIGINT or SIGTERM; each SIGHUP before it asks `running` (when given) to swap in new
// versions of its models' files.
int NextShutdownSignal(int signal_pipe, server::ModelServer* running) {
  int signal_number;
  while ((signal_number = NextSignal(signal_pipe)) == SIGHUP) {
    if (running == nullptr) continue;
    spdlog::info("received SIGHUP: reloading the models' files");
    running->ReloadModels();
  }
  return signal_number;
}

// Serves until SIGINT/SIGTERM, a failed self-check or a lost device, then drains; a second
// signal exits at once. SIGHUP reloads models. Returns the exit code: 0 after a signal,
// kExitUnreachable after a failed self-check, kExitDeviceLost after a lost device.
int ServeUntilSignalled(server::ModelServer& running, int signal_pipe) {
  const int signal_number = NextShutdownSignal(signal_pipe, &running);
  const int exit_code = signal_number == kSelfCheckFailed ? kExitUnreachable
                        : signal_number == kDeviceLost    ? kExitDeviceLost
                                                          : 0;
  if (exit_code != 0) {
    spdlog::error(
        "draining, then exiting with code {} so that the orchestrator restarts the server",
        exit_code);
  } else {
    spdlog::info("received {}: draining (health NOT_SERVING)", strsignal(signal_number));
  }
  std::thread([signal_pipe] {
    int second;  // no swap while draining; the server's own reasons are no second signal
    do {
      second = NextShutdownSignal(signal_pipe, nullptr);
    } while (second == kSelfCheckFailed || second == kDeviceLost);
    spdlog::warn("received {} again: exiting without draining", strsignal(second));
    std::_Exit(1);
  }).detach();
  running.Shutdown();
  return exit_code;
}

int Main(int argc, char** argv) {
  const absl::StatusOr<server::ParsedFlags> parsed =
      server::ParseFlags(argc, argv, server::ProcessEnvironment);
  if (!parsed.ok()) {
    std::cerr << "model_server: " << parsed.status().message()
              << "\n(model_server --help lists the flags)" << std::endl;
    return kExitUsage;
  }
  if (parsed->help) {
    std::cout << server::FlagsHelp() << std::endl;
    return 0;
  }
  const server::Config& config = parsed->config;
  spdlog::set_level(spdlog::level::from_str(config.log_level));  // checked by ParseFlags
  gpr_set_log_function(LogGrpc);

  if (!config.export_demo_model.empty()) {
    const absl::Status exported =
        handlers::ExportDemoModel(config.export_demo_model, config.handler.demo_hidden);
    if (!exported.ok()) {
      spdlog::error("{}", std::string(exported.message()));
      return 1;
    }
    spdlog::info("wrote the demo model to {}", config.export_demo_model);
    return 0;
  }

  if (absl::StatusOr<platform::OpenFileLimit> files = platform::RaiseOpenFileLimit(); !files.ok()) {
    spdlog::warn("cannot raise the open files limit: {}", std::string(files.status().message()));
  } else if (files->soft_after != files->soft_before) {
    spdlog::info("open files limit raised from {} to {} (the hard limit)", files->soft_before,
                 files->soft_after);
  } else {
    spdlog::info("open files limit {} (hard limit {})", files->soft_after, files->hard);
  }

  const int signal_pipe = InstallShutdownSignals();

  server::ServerOptions options = config.server;
  if (options.seed_model.empty() && !config.models.empty()) {
    options.seed_model = config.models.front().name;  // ModelService serves the first --model
  }
  options.self_check.on_failure = [] {
    [[maybe_unused]] const ssize_t written = write(signal_pipe_write, &kSelfCheckFailed, 1);
  };
  options.on_device_lost = [](const absl::Status&) {
    [[maybe_unused]] const ssize_t written = write(signal_pipe_write, &kDeviceLost, 1);
  };
  options.device_memory = [] {
    std::vector<server::metrics::DeviceMemory> devices;
    for (const handlers::GpuMemory& gpu : handlers::GpuMemoryStats()) {
      devices.push_back({gpu.device, gpu.allocated_bytes, gpu.reserved_bytes,
                         gpu.peak_allocated_bytes, gpu.alloc_retries, gpu.ooms});
    }
    return devices;
  };
  const server::CodecPlan codec = server::PlanCodec(options);
  spdlog::info("config: {}", server::DescribeConfig(config));
  spdlog::info("threads: cq_threads={} codec_threads={}{}",
               options.cq_threads > 0 ? options.cq_threads : platform::UsableCpus(), codec.threads,
               codec.threads > 0 && !codec.decode_there ? " (replies only)" : "");

  absl::StatusOr<std::unique_ptr<server::ModelCatalog>> catalog = MakeCatalog(config);
  if (!catalog.ok()) {
    spdlog::error("cannot start: {}", std::string(catalog.status().message()));
    return 1;
  }
  absl::StatusOr<std::unique_ptr<server::ModelServer>> started =
      server::ModelServer::Start(options, *std::move(catalog));
  if (!started.ok()) {
    spdlog::error("cannot start: {}", std::string(started.status().message()));
    return 1;
  }
  spdlog::info("listening on port {} ({}); health SERVING", (*started)->port(), options.address);
  const platform::MemoryTrimmer trimmer(config.memory_trim);

  const int exit_code = ServeUntilSignalled(**started, signal_pipe);
  const server::metrics::ServerMetrics& metrics = (*started)->metrics();
  spdlog::info("stopped: {} requests in {} batches, {} forward passes; {} requests run where they "
               "arrived (idle)",
               metrics.batched_requests(), metrics.batches(), metrics.forward_passes(),
               metrics.idle_requests());
  return exit_code;
}

}  // namespace
}  // namespace model_server

int main(int argc, char** argv) { return model_server::Main(argc, argv); }
