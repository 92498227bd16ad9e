#pragma once

// model_server's command line: one table of flags (server/flags.cc), each with its help, its
// environment variable if it has one, how it reads its value into a Config and how it shows it.
// Every default is the default of the Config field the flag sets (ServerOptions,
// TorchHandlerOptions, MemoryTrimOptions, Config): the table repeats none of them. Adding a flag
// is one entry in that table; its help, its parsing, its environment fallback and its place in
// the `config:` log line follow from it.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "handlers/torch/torch_handler.h"
#include "platform/memory.h"
#include "server/model_server.h"

namespace model_server::server {

// One --model: NAME=PATH, or PATH (named "default"); an empty path is the built-in demo model.
struct ModelFlag {
  std::string name = kDefaultModelName;
  std::string path;
  bool operator==(const ModelFlag& other) const { return name == other.name && path == other.path; }
};

// Where model_server serves Prometheus metrics unless told otherwise (the ModelServer library
// serves none by default; the binary does, on the port its manifests and image declare).
inline constexpr char kDefaultMetricsAddress[] = "0.0.0.0:8002";

// What the command line asks model_server to do. Default-constructed: every flag's default.
struct Config {
  // ServerOptions' defaults, except that metrics are served.
  ServerOptions server = [] {
    ServerOptions options;
    options.metrics_address = kDefaultMetricsAddress;
    return options;
  }();
  platform::MemoryTrimOptions memory_trim;
  // Options of every model's handler (model_path aside: each model has its own).
  handlers::TorchHandlerOptions handler;
  // The models to serve from files, in order; without a model repository the parser always
  // leaves at least one (the demo model), with one none.
  std::vector<ModelFlag> models;
  // A Triton model repository to serve the models of; empty: none (the models above).
  std::string model_repository;
  // Loaded instances of each model, each with its own batch thread.
  int instances = 1;
  // Non-empty: write the demo model to this path and exit.
  std::string export_demo_model;
  // spdlog's level name.
  std::string log_level = "info";
};

// Reads an environment variable: nullopt when it is unset. The parser treats an empty value as
// unset.
using Environment = std::function<std::optional<std::string>(const std::string& name)>;

// The process's environment (getenv).
std::optional<std::string> ProcessEnvironment(const std::string& name);

struct ParsedFlags {
  // --help was given: print FlagsHelp() and exit 0 (config then holds the defaults).
  bool help = false;
  Config config;
};

// Parses argv[1..argc) and the environment variables some flags fall back to (a flag given on
// the command line beats its variable). A flag given twice takes its last value, except --model
// and --load-model, which add one each time. Errors: INVALID_ARGUMENT naming the flag (or the
// variable) and what is wrong with its value: an unknown flag, a stray argument, a value that
// does not parse or is out of range (a negative duration, zero instances, ...), a model name
// given twice, --model with --model-repository, --load-model outside explicit mode.
absl::StatusOr<ParsedFlags> ParseFlags(int argc, const char* const* argv, const Environment& env);

// The --help text: each flag, its default and its environment variable.
std::string FlagsHelp();

// Every flag's value in `config`, as "name=value" pairs separated by spaces, in the table's
// order (the `config:` log line).
std::string DescribeConfig(const Config& config);

}  // namespace model_server::server
