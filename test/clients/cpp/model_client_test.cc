#include "clients/cpp/model_client.h"

#include <catch2/catch.hpp>

namespace model_server::client {
namespace {

// Hidden from the default run: ctest runs it as its own test, client_wait_for_serving
// (test/clients/cpp/CMakeLists.txt), as it takes 15 s by design.
TEST_CASE("WaitForServing gives up with UNAVAILABLE after the seed's 5 attempts", "[.slow]") {
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status =
      WaitForServing(MakeChannel("127.0.0.1:1", {false, 0}), std::chrono::milliseconds(100));
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(status.code() == absl::StatusCode::kUnavailable);
  // 1 + 2 + 4 + 8 s between the 5 attempts, each refused at once (nothing listens).
  CHECK(waited >= 15.0);
  CHECK(waited < 20.0);
}

}  // namespace
}  // namespace model_server::client
