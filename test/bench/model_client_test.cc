#include "model_client.h"

#include <catch2/catch.hpp>

#include "simdjson.h"

using model_client::BuildRequestJson;
using model_client::Columns;
using model_client::ParseResponseJson;
using model_client::RequestRows;

TEST_CASE("BuildRequestJson writes the seed's request shape") {
  const Columns inputs = {{"x_1", {1.5, -2}}, {"x_2", {0.1, 3e-7}}};
  const std::string json = BuildRequestJson(inputs, {0.1, 0.2, 0.3, 0.4, 0.5}, {"y_1"});

  simdjson::dom::parser parser;
  simdjson::dom::element root = parser.parse(json);
  simdjson::dom::element settings = root["analyticSettings"];
  CHECK(std::string_view(settings["modelParams"]["input_var_order"].at(0)) == "x_1");
  CHECK(std::string_view(settings["modelParams"]["input_var_order"].at(1)) == "x_2");
  CHECK(std::string_view(settings["modelParams"]["output_var_order"].at(0)) == "y_1");
  simdjson::dom::array params = settings["tunableParams"]["bias_weight_array"];
  REQUIRE(params.size() == 5);
  CHECK(double(params.at(4)) == 0.5);
  simdjson::dom::array x2 = root["inputs"]["x_2"];
  REQUIRE(x2.size() == 2);
  // Numbers are written exactly (shortest round-trip form).
  CHECK(double(x2.at(1)) == 3e-7);
  CHECK(double(root["inputs"]["x_1"].at(1)) == -2);
}

TEST_CASE("BuildRequestJson omits what is not given and escapes names") {
  const std::string json = BuildRequestJson({{"a\"b", {1}}}, {}, {});
  simdjson::dom::parser parser;
  simdjson::dom::element root = parser.parse(json);
  simdjson::dom::element unused;
  CHECK(root["analyticSettings"]["tunableParams"].get(unused) == simdjson::NO_SUCH_FIELD);
  CHECK(root["analyticSettings"]["modelParams"]["output_var_order"].get(unused) ==
        simdjson::NO_SUCH_FIELD);
  CHECK(double(root["inputs"]["a\"b"].at(0)) == 1);
}

TEST_CASE("ParseResponseJson reads the prediction columns in order") {
  const absl::StatusOr<Columns> columns =
      ParseResponseJson(R"({"prediction": {"y_1": [1, 2.5], "y_2": [-3, 4e2]}})");
  REQUIRE(columns.ok());
  REQUIRE(columns->size() == 2);
  CHECK(columns->at(0).first == "y_1");
  CHECK(columns->at(0).second == std::vector<double>{1, 2.5});
  CHECK(columns->at(1).first == "y_2");
  CHECK(columns->at(1).second == std::vector<double>{-3, 400});
}

TEST_CASE("ParseResponseJson refuses malformed responses") {
  for (const char* bad :
       {"not json", R"({"result": {}})", R"({"prediction": [1]})", R"({"prediction": {"y_1": 3}})",
        R"({"prediction": {"y_1": ["a"]}})", R"({"prediction": {"y_1": [1, 2], "y_2": [1]}})"}) {
    INFO(bad);
    const absl::StatusOr<Columns> columns = ParseResponseJson(bad);
    REQUIRE_FALSE(columns.ok());
    CHECK(columns.status().code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("A built request round-trips through RequestRows") {
  const std::string json = BuildRequestJson({{"x_1", {1, 2, 3}}, {"x_2", {4, 5, 6}}}, {1}, {});
  REQUIRE(RequestRows(json).ok());
  CHECK(*RequestRows(json) == 3);
  CHECK_FALSE(RequestRows(R"({"inputs": 5})").ok());
  CHECK_FALSE(RequestRows("[]").ok());
}

TEST_CASE("The seed's retry policy is a valid service config") {
  // A channel refuses an invalid service config only when it resolves; parsing it here checks
  // the JSON and the values the seed uses.
  simdjson::dom::parser parser;
  simdjson::dom::element policy =
      parser.parse(std::string(model_client::kSeedServiceConfig))["methodConfig"].at(0);
  CHECK(bool(policy["waitForReady"]));
  CHECK(int64_t(policy["retryPolicy"]["maxAttempts"]) == 5);
  CHECK(std::string_view(policy["retryPolicy"]["initialBackoff"]) == "1s");
  CHECK(std::string_view(policy["retryPolicy"]["maxBackoff"]) == "30s");
  CHECK(double(policy["retryPolicy"]["backoffMultiplier"]) == 2);
  CHECK(std::string_view(policy["retryPolicy"]["retryableStatusCodes"].at(0)) == "UNAVAILABLE");
}

TEST_CASE("WaitForServing gives up with UNAVAILABLE when nothing listens", "[.slow]") {
  // 5 attempts with 1+2+4+8 s between them: 15 s; hidden by default.
  const absl::Status status = model_client::WaitForServing(
      model_client::MakeChannel("127.0.0.1:1", {false, 0}), std::chrono::milliseconds(100));
  CHECK(status.code() == absl::StatusCode::kUnavailable);
}
