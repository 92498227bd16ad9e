#include "server/flags.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace model_server::server {
namespace {

using namespace std::chrono_literals;
using Env = std::map<std::string, std::string>;

absl::StatusOr<ParsedFlags> Parse(const std::vector<std::string>& args, const Env& env = {}) {
  std::vector<const char*> argv{"model_server"};
  for (const std::string& arg : args) argv.push_back(arg.c_str());
  return ParseFlags(static_cast<int>(argv.size()), argv.data(),
                    [env](const std::string& name) -> std::optional<std::string> {
                      const auto found = env.find(name);
                      if (found == env.end()) return std::nullopt;
                      return found->second;
                    });
}

Config ParseOk(const std::vector<std::string>& args, const Env& env = {}) {
  const absl::StatusOr<ParsedFlags> parsed = Parse(args, env);
  INFO(parsed.status().message());
  REQUIRE(parsed.ok());
  REQUIRE_FALSE(parsed->help);
  return parsed->config;
}

std::string ParseError(const std::vector<std::string>& args, const Env& env = {}) {
  const absl::StatusOr<ParsedFlags> parsed = Parse(args, env);
  REQUIRE_FALSE(parsed.ok());
  CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(parsed.status().message());
}

// The flag names, in the table's order, as DescribeConfig lists them.
std::vector<std::string> FlagNames() {
  std::vector<std::string> names;
  for (const absl::string_view pair : absl::StrSplit(DescribeConfig(Config{}), ' ')) {
    names.emplace_back(pair.substr(0, pair.find('=')));
  }
  return names;
}

TEST_CASE("without flags or variables every value is its option's default", "[flags]") {
  const Config config = ParseOk({});
  const Config defaults;
  const ServerOptions server;
  CHECK(config.models == std::vector<ModelFlag>{{kDefaultModelName, ""}});  // the demo model
  CHECK(config.server.address == server.address);
  CHECK(config.server.max_message_bytes == server.max_message_bytes);
  CHECK(config.server.self_check.interval == server.self_check.interval);
  CHECK(config.server.connections.max_age == server.connections.max_age);
  CHECK(config.memory_trim.interval == defaults.memory_trim.interval);
  CHECK(config.server.metrics_address == kDefaultMetricsAddress);  // the binary's own default
  CHECK(config.server.drain_grace == server.drain_grace);
  CHECK(config.server.drain_timeout == server.drain_timeout);
  CHECK(config.server.models.mode == server.models.mode);
  CHECK(config.server.models.poll_interval == server.models.poll_interval);
  CHECK(config.server.models.exit_on_error == server.models.exit_on_error);
  CHECK(config.server.seed_model.empty());
  CHECK(config.server.cq_threads == server.cq_threads);
  CHECK(config.server.batching.max_queue_delay == server.batching.max_queue_delay);
  CHECK(config.server.response_cache_bytes == 0);  // no cache
  CHECK(config.server.max_idle_forward == server.max_idle_forward);
  CHECK(config.instances == defaults.instances);
  CHECK(config.handler.device == defaults.handler.device);
  CHECK(config.log_level == defaults.log_level);
  // The whole table: every flag shows its default.
  CHECK(DescribeConfig(config) ==
        DescribeConfig(defaults).replace(0, std::string("model=").size(), "model=default=demo"));
  // Warm-up covers the batcher's largest batch.
  CHECK(config.handler.max_batch_rows ==
        static_cast<int64_t>(config.server.batching.max_batch_rows));
}

// Each flag with a value other than its default, and where that value lands.
struct FlagCase {
  std::string flag;
  std::string value;
  std::function<bool(const Config&)> landed;
  // Flags it needs beside it.
  std::vector<std::string> with = {};
  // Whether it goes with every other case's flag (--model-repository does not go with --model,
  // nor --model-poll-seconds, which asks for poll mode, with --load-model).
  bool combines = true;
};

const std::vector<FlagCase>& FlagCases() {
  static const std::vector<FlagCase> cases = {
      {"model", "a=/m/a.pt",
       [](const Config& c) {
         return c.models == std::vector<ModelFlag>{{"a", "/m/a.pt"}};
       }},
      {"model-repository",
       "/repo",
       [](const Config& c) { return c.model_repository == "/repo" && c.models.empty(); },
       {},
       false},
      {"model-control-mode", "explicit",
       [](const Config& c) { return c.server.models.mode == ControlMode::kExplicit; }},
      {"load-model",
       "cnn",
       [](const Config& c) {
         return c.server.models.startup_models == std::vector<std::string>{"cnn"};
       },
       {"--model-control-mode=explicit"}},
      {"repository-poll-secs", "2.5",
       [](const Config& c) { return c.server.models.poll_interval == 2500ms; }},
      {"exit-on-error", "false", [](const Config& c) { return !c.server.models.exit_on_error; }},
      {"seed-model", "b", [](const Config& c) { return c.server.seed_model == "b"; }},
      {"address", "127.0.0.1:7", [](const Config& c) { return c.server.address == "127.0.0.1:7"; }},
      {"device", "cuda:1", [](const Config& c) { return c.handler.device == "cuda:1"; }},
      {"max-batch-rows", "7",
       [](const Config& c) {
         return c.server.batching.max_batch_rows == 7 && c.handler.max_batch_rows == 7;
       }},
      {"max-queue-delay-us", "250",
       [](const Config& c) { return c.server.batching.max_queue_delay == 250us; }},
      {"idle-max-forward-us", "0",
       [](const Config& c) { return c.server.max_idle_forward == 0us; }},
      {"max-queue-rows", "9",
       [](const Config& c) { return c.server.batching.max_queue_rows == 9; }},
      {"cache-config", "local,size=1048576",
       [](const Config& c) { return c.server.response_cache_bytes == 1048576; }},
      {"cq-threads", "3", [](const Config& c) { return c.server.cq_threads == 3; }},
      {"codec-threads", "-1", [](const Config& c) { return c.server.codec_threads == -1; }},
      {"instances", "4", [](const Config& c) { return c.instances == 4; }},
      {"precision", "bf16", [](const Config& c) { return c.handler.precision == "bf16"; }},
      {"cuda-graphs", "true", [](const Config& c) { return c.handler.cuda_graphs; }},
      {"torch-threads", "0", [](const Config& c) { return c.handler.torch_threads == 0; }},
      {"max-rows-per-request", "11",
       [](const Config& c) { return c.server.max_rows_per_request == 11; }},
      {"max-concurrent-streams", "12",
       [](const Config& c) { return c.server.max_concurrent_streams == 12; }},
      {"grpc-memory-bytes", "8589934592",  // beyond 32 bits
       [](const Config& c) { return c.server.grpc_memory_bytes == 8589934592u; }},
      {"tls-cert", "/c.pem", [](const Config& c) { return c.server.tls.cert_file == "/c.pem"; }},
      {"tls-key", "/c.key", [](const Config& c) { return c.server.tls.key_file == "/c.key"; }},
      {"tls-client-ca", "/ca.pem",
       [](const Config& c) { return c.server.tls.client_ca_file == "/ca.pem"; }},
      {"metrics-address", "127.0.0.1:9",
       [](const Config& c) { return c.server.metrics_address == "127.0.0.1:9"; }},
      {"max-message-bytes", "1000",
       [](const Config& c) { return c.server.max_message_bytes == 1000; }},
      {"model-poll-seconds",
       "0.25",
       [](const Config& c) {
         return c.server.models.mode == ControlMode::kPoll &&
                c.server.models.poll_interval == 250ms;
       },
       {},
       false},
      {"drain-grace", "5", [](const Config& c) { return c.server.drain_grace == 5s; }},
      {"drain-timeout", "0", [](const Config& c) { return c.server.drain_timeout == 0s; }},
      {"max-connection-idle-ms", "1001",
       [](const Config& c) { return c.server.connections.max_idle == 1001ms; }},
      {"max-connection-age-ms", "1002",
       [](const Config& c) { return c.server.connections.max_age == 1002ms; }},
      {"max-connection-age-grace-ms", "1003",
       [](const Config& c) { return c.server.connections.max_age_grace == 1003ms; }},
      {"handshake-timeout-ms", "1004",
       [](const Config& c) { return c.server.connections.handshake_timeout == 1004ms; }},
      {"keepalive-time-ms", "1005",
       [](const Config& c) { return c.server.connections.keepalive_time == 1005ms; }},
      {"keepalive-timeout-ms", "1006",
       [](const Config& c) { return c.server.connections.keepalive_timeout == 1006ms; }},
      {"min-ping-interval-ms", "1007",
       [](const Config& c) { return c.server.connections.min_ping_interval == 1007ms; }},
      {"max-ping-strikes", "0",
       [](const Config& c) { return c.server.connections.max_ping_strikes == 0; }},
      {"self-check-interval-ms", "0",
       [](const Config& c) { return c.server.self_check.interval == 0ms; }},
      {"self-check-failures", "5",
       [](const Config& c) { return c.server.self_check.max_failures == 5; }},
      {"memory-trim-interval-ms", "1008",
       [](const Config& c) { return c.memory_trim.interval == 1008ms; }},
      {"demo-hidden", "8", [](const Config& c) { return c.handler.demo_hidden == 8; }},
      {"log-level", "warn", [](const Config& c) { return c.log_level == "warn"; }},
      {"export-demo-model", "/tmp/demo.pt",
       [](const Config& c) { return c.export_demo_model == "/tmp/demo.pt"; }},
  };
  return cases;
}

TEST_CASE("the cases below cover every flag in the table", "[flags]") {
  std::vector<std::string> covered;
  for (const FlagCase& c : FlagCases()) covered.push_back(c.flag);
  CHECK(covered == FlagNames());
}

TEST_CASE("every flag sets its field, as --flag=value and as --flag value", "[flags]") {
  for (const FlagCase& c : FlagCases()) {
    INFO("--" << c.flag << " " << c.value);
    const Config defaults = ParseOk({});
    CHECK_FALSE(c.landed(defaults));  // the case's value is not the default
    std::vector<std::string> joined = c.with, separate = c.with;
    joined.push_back("--" + c.flag + "=" + c.value);
    separate.insert(separate.end(), {"--" + c.flag, c.value});
    CHECK(c.landed(ParseOk(joined)));
    CHECK(c.landed(ParseOk(separate)));
  }
}

TEST_CASE("the config line shows each flag's value, and reads back as the same config", "[flags]") {
  std::vector<std::string> args;
  for (const FlagCase& c : FlagCases()) {
    if (c.combines) args.push_back("--" + c.flag + "=" + c.value);
  }
  const Config config = ParseOk(args);
  const std::string described = DescribeConfig(config);
  for (const FlagCase& c : FlagCases()) {
    if (c.flag == "model" || !c.combines) continue;
    CHECK_THAT(described, Catch::Contains(" " + c.flag + "=" + c.value));
  }
  CHECK_THAT(described, Catch::StartsWith("model=a=/m/a.pt "));
  std::vector<std::string> again{"--model=a=/m/a.pt"};
  for (const absl::string_view pair : absl::StrSplit(described, ' ')) {
    // Flags the config shows at their defaults (an empty repository) are left out.
    if (absl::StartsWith(pair, "model=") || absl::EndsWith(pair, "=")) continue;
    again.push_back(absl::StrCat("--", pair));
  }
  CHECK(DescribeConfig(ParseOk(again)) == described);
}

TEST_CASE("an empty --metrics-address serves no metrics", "[flags]") {
  CHECK(ParseOk({"--metrics-address="}).server.metrics_address.empty());
  CHECK(ParseOk({"--metrics-address", ""}).server.metrics_address.empty());
}

TEST_CASE("a flag given twice takes its last value; --model adds a model each time", "[flags]") {
  CHECK(ParseOk({"--instances=2", "--instances=3"}).instances == 3);
  CHECK(ParseOk({"--model", "a=/a.pt", "--model", "b=/b.pt", "--model", "./c=d.pt"}).models ==
        std::vector<ModelFlag>{{"a", "/a.pt"}, {"b", "/b.pt"}, {"default", "./c=d.pt"}});
}

TEST_CASE("environment variables stand in for flags that are not given", "[flags]") {
  SECTION("MODEL_LOC: a path (never NAME=PATH) for the model named default") {
    CHECK(ParseOk({}, {{"MODEL_LOC", "/m/x=y.pt"}}).models ==
          std::vector<ModelFlag>{{"default", "/m/x=y.pt"}});
    CHECK(ParseOk({"--model", "a=/a.pt"}, {{"MODEL_LOC", "/m/x.pt"}}).models ==
          std::vector<ModelFlag>{{"a", "/a.pt"}});
  }
  SECTION("PORT_INTERNAL: the port of the default address") {
    CHECK(ParseOk({}, {{"PORT_INTERNAL", "8500"}}).server.address == "0.0.0.0:8500");
    CHECK(ParseOk({"--address", "127.0.0.1:1"}, {{"PORT_INTERNAL", "8500"}}).server.address ==
          "127.0.0.1:1");
  }
  SECTION("PROCESSOR: the seed's cpu or gpu") {
    CHECK(ParseOk({}, {{"PROCESSOR", "cpu"}}).handler.device == "cpu");
    CHECK(ParseOk({}, {{"PROCESSOR", "gpu"}}).handler.device == "cuda");
    CHECK(ParseOk({"--device", "cpu"}, {{"PROCESSOR", "gpu"}}).handler.device == "cpu");
  }
  SECTION("DRAIN_GRACE_S: seconds") {
    CHECK(ParseOk({}, {{"DRAIN_GRACE_S", "10"}}).server.drain_grace == 10s);
    CHECK(ParseOk({"--drain-grace=0"}, {{"DRAIN_GRACE_S", "10"}}).server.drain_grace == 0s);
  }
  SECTION("an empty variable counts as unset") {
    const Config config = ParseOk(
        {}, {{"MODEL_LOC", ""}, {"PORT_INTERNAL", ""}, {"PROCESSOR", ""}, {"DRAIN_GRACE_S", ""}});
    CHECK(DescribeConfig(config) == DescribeConfig(ParseOk({})));
  }
  SECTION("a bad variable is not read when its flag is given") {
    CHECK(ParseOk({"--drain-grace=1"}, {{"DRAIN_GRACE_S", "soon"}}).server.drain_grace == 1s);
  }
}

TEST_CASE("each bad value is refused with a message naming its flag or variable", "[flags]") {
  const auto [args, env, message] = GENERATE(table<std::vector<std::string>, Env, std::string>({
      {{"--drain-timeout=-5"}, {}, "--drain-timeout=-5: must not be negative"},
      {{"--drain-timeout", "-5"}, {}, "--drain-timeout=-5: must not be negative"},
      {{"--drain-timeout=30s"}, {}, "--drain-timeout=30s: not an integer"},
      {{"--drain-timeout=99999999999999999"},
       {},
       "--drain-timeout=99999999999999999: must be at most 9223372036854775"},
      {{"--drain-grace=-1"}, {}, "--drain-grace=-1: must not be negative"},
      {{"--instances=0"}, {}, "--instances=0: must be at least 1"},
      {{"--instances=-2"}, {}, "--instances=-2: must be at least 1"},
      {{"--instances=3000000000"}, {}, "--instances=3000000000: must be at most 2147483647"},
      {{"--max-batch-rows=0"}, {}, "--max-batch-rows=0: must be at least 1"},
      {{"--max-batch-rows=-1"}, {}, "--max-batch-rows=-1: must be at least 1"},
      {{"--max-queue-rows=0"}, {}, "--max-queue-rows=0: must be at least 1"},
      {{"--max-queue-delay-us=-1"}, {}, "--max-queue-delay-us=-1: must not be negative"},
      {{"--cache-config=redis,size=10"},
       {},
       "--cache-config=redis,size=10: must be local,size=BYTES (the local cache is the only one "
       "served)"},
      {{"--cache-config=local,bytes=10"},
       {},
       "--cache-config=local,bytes=10: the local cache takes size=BYTES, not \"bytes=10\""},
      {{"--cache-config=local,size=1MB"},
       {},
       "--cache-config=local,size=1MB: size \"1MB\" is not a number of bytes above 0"},
      {{"--cache-config=local,size=0"},
       {},
       "--cache-config=local,size=0: size \"0\" is not a number of bytes above 0"},
      {{"--idle-max-forward-us=-5"}, {}, "--idle-max-forward-us=-5: must not be negative"},
      {{"--cq-threads=-1"}, {}, "--cq-threads=-1: must be at least 0"},
      {{"--codec-threads=-2"}, {}, "--codec-threads=-2: must be at least -1"},
      {{"--torch-threads=-1"}, {}, "--torch-threads=-1: must be at least 0"},
      {{"--max-rows-per-request=0"}, {}, "--max-rows-per-request=0: must be at least 1"},
      {{"--max-concurrent-streams=0"}, {}, "--max-concurrent-streams=0: must be at least 1"},
      {{"--grpc-memory-bytes=0"}, {}, "--grpc-memory-bytes=0: must be at least 1"},
      {{"--max-message-bytes=0"}, {}, "--max-message-bytes=0: must be at least 1"},
      {{"--model-poll-seconds=-0.5"}, {}, "--model-poll-seconds=-0.5: must not be negative"},
      {{"--model-poll-seconds=nan"}, {}, "--model-poll-seconds=nan: not a number of seconds"},
      {{"--model-poll-seconds=inf"}, {}, "--model-poll-seconds=inf: not a number of seconds"},
      {{"--model-poll-seconds=often"}, {}, "--model-poll-seconds=often: not a number of seconds"},
      {{"--max-connection-idle-ms=-1"}, {}, "--max-connection-idle-ms=-1: must not be negative"},
      {{"--max-connection-age-ms=-1"}, {}, "--max-connection-age-ms=-1: must not be negative"},
      {{"--max-connection-age-grace-ms=-1"},
       {},
       "--max-connection-age-grace-ms=-1: must not be negative"},
      {{"--handshake-timeout-ms=-1"}, {}, "--handshake-timeout-ms=-1: must not be negative"},
      {{"--keepalive-time-ms=-1"}, {}, "--keepalive-time-ms=-1: must not be negative"},
      {{"--keepalive-timeout-ms=-1"}, {}, "--keepalive-timeout-ms=-1: must not be negative"},
      {{"--min-ping-interval-ms=-1"}, {}, "--min-ping-interval-ms=-1: must not be negative"},
      {{"--max-ping-strikes=-1"}, {}, "--max-ping-strikes=-1: must be at least 0"},
      {{"--self-check-interval-ms=-1"}, {}, "--self-check-interval-ms=-1: must not be negative"},
      {{"--self-check-failures=0"}, {}, "--self-check-failures=0: must be at least 1"},
      {{"--memory-trim-interval-ms=-1"}, {}, "--memory-trim-interval-ms=-1: must not be negative"},
      {{"--demo-hidden=0"}, {}, "--demo-hidden=0: must be at least 1"},
      {{"--precision=fp64"}, {}, "--precision=fp64: must be fp32, tf32, fp16 or bf16"},
      {{"--cuda-graphs=yes"}, {}, "--cuda-graphs=yes: must be true or false"},
      {{"--log-level=loud"}, {}, "--log-level=loud: not a log level"},
      {{"--address="}, {}, "--address=: must not be empty"},
      {{"--model-control-mode=auto"},
       {},
       "--model-control-mode=auto: must be none, poll or explicit"},
      {{"--load-model=cnn"}, {}, "--load-model needs --model-control-mode explicit"},
      {{"--load-model="}, {}, "--load-model=: must name a model"},
      {{"--exit-on-error=yes"}, {}, "--exit-on-error=yes: must be true or false"},
      {{"--repository-poll-secs=-1"}, {}, "--repository-poll-secs=-1: must not be negative"},
      {{"--model-repository=/r", "--model", "a=/a.pt"},
       {},
       "--model and --model-repository cannot be combined: put the model into the repository "
       "(DIR/<name>/1/model.pt)"},
      {{"--model", "a=/a.pt", "--model", "a=/b.pt"},
       {},
       "--model: model name \"a\" is given twice"},
      {{"--model", "/a.pt", "--model", "/b.pt"},
       {},
       "--model: model name \"default\" is given twice"},
      {{}, {{"DRAIN_GRACE_S", "-3"}}, "DRAIN_GRACE_S=-3 (for --drain-grace): must not be negative"},
      {{}, {{"DRAIN_GRACE_S", "soon"}}, "DRAIN_GRACE_S=soon (for --drain-grace): not an integer"},
      {{},
       {{"PORT_INTERNAL", "http"}},
       "PORT_INTERNAL=http (for --address): not a port number (0 to 65535)"},
      {{},
       {{"PORT_INTERNAL", "65536"}},
       "PORT_INTERNAL=65536 (for --address): not a port number (0 to 65535)"},
      {{}, {{"PROCESSOR", "tpu"}}, "PROCESSOR=tpu (for --device): must be cpu or gpu"},
  }));
  INFO(Catch::Detail::stringify(args));
  CHECK(ParseError(args, env) == message);
}

TEST_CASE("unknown flags, missing values and stray arguments are refused", "[flags]") {
  CHECK_THAT(ParseError({"--max-batch-size=4"}), Catch::Contains("max-batch-size"));
  CHECK_THAT(ParseError({"--instances"}), Catch::Contains("instances"));
  CHECK(ParseError({"model.pt"}) == "unexpected argument \"model.pt\"");
}

TEST_CASE("--help is a result, not an exit; its text has each flag and its default", "[flags]") {
  const absl::StatusOr<ParsedFlags> parsed = Parse({"--instances=0", "--help"});
  REQUIRE(parsed.ok());
  CHECK(parsed->help);
  CHECK(Parse({"-h"})->help);
  // Words only: --help wraps its lines.
  const std::string help =
      absl::StrJoin(absl::StrSplit(FlagsHelp(), absl::ByAnyChar(" \n"), absl::SkipEmpty()), " ");
  for (const std::string& name : FlagNames()) CHECK_THAT(help, Catch::Contains("--" + name + " "));
  const ServerOptions defaults;
  CHECK_THAT(
      help,
      Catch::Contains(
          "(default: " +
          std::to_string(
              std::chrono::duration_cast<std::chrono::seconds>(defaults.drain_timeout).count()) +
          ")"));
  CHECK_THAT(help, Catch::Contains("(default: " + defaults.address + ")"));
  CHECK_THAT(help, Catch::Contains("(default: " + std::string(kDefaultMetricsAddress) + ")"));
  CHECK_THAT(help, Catch::Contains("(env DRAIN_GRACE_S)"));
  CHECK_THAT(help, Catch::Contains("(env MODEL_LOC)"));
}

}  // namespace
}  // namespace model_server::server
