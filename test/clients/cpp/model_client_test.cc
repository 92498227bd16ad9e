#include "clients/cpp/model_client.h"

#include <simdjson.h>

#include <catch2/catch.hpp>

namespace model_server::client {
namespace {

TEST_CASE("The seed's retry policy is a valid service config") {
  // A channel refuses an invalid service config only when it resolves; parsing it here checks
  // the JSON and the values the seed uses.
  simdjson::dom::parser parser;
  simdjson::dom::element policy =
      parser.parse(std::string(kSeedServiceConfig))["methodConfig"].at(0);
  CHECK(bool(policy["waitForReady"]));
  CHECK(int64_t(policy["retryPolicy"]["maxAttempts"]) == 5);
  CHECK(std::string_view(policy["retryPolicy"]["initialBackoff"]) == "1s");
  CHECK(std::string_view(policy["retryPolicy"]["maxBackoff"]) == "30s");
  CHECK(double(policy["retryPolicy"]["backoffMultiplier"]) == 2);
  CHECK(std::string_view(policy["retryPolicy"]["retryableStatusCodes"].at(0)) == "UNAVAILABLE");
}

TEST_CASE("WaitForServing gives up with UNAVAILABLE when nothing listens", "[.slow]") {
  // 5 attempts with 1+2+4+8 s between them: 15 s; hidden by default.
  const absl::Status status =
      WaitForServing(MakeChannel("127.0.0.1:1", {false, 0}), std::chrono::milliseconds(100));
  CHECK(status.code() == absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace model_server::client
