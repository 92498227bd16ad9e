#include "protocol/oip.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace model_server::protocol::oip {
namespace {

using handlers::ModelSignature;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

ModelSignature Signature(bool defaults = true) {
  ModelSignature signature;
  signature.num_inputs = 3;
  signature.num_outputs = 2;
  signature.num_params = 2;
  if (defaults) signature.default_params = {1.0f, 0.0f};
  return signature;
}

// Two rows of x and a parameter vector per row.
ModelInferRequest Good(bool raw) {
  return EncodeInferRequest(
      "m", {{"x", {2, 3}, {1, 2, 3, 4, 5, 6}}, {"params", {2, 2}, {7, 8, 9, 10}}}, raw);
}

TEST_CASE("raw and typed requests decode to the same rows and parameters", "[oip]") {
  for (const bool raw : {true, false}) {
    absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(Good(raw), Signature());
    REQUIRE(decoded.ok());
    CHECK(decoded->request.rows == 2);
    CHECK(decoded->request.inputs == std::vector<float>{1, 2, 3, 4, 5, 6});
    CHECK(decoded->request.params == std::vector<float>{7, 8, 9, 10});
    CHECK(decoded->request.output_names.empty());
    CHECK(decoded->raw_output);
  }
}

TEST_CASE("params of one row serve every row; no params means the model's defaults", "[oip]") {
  ModelInferRequest one_row = EncodeInferRequest(
      "m", {{"x", {2, 3}, {1, 2, 3, 4, 5, 6}}, {"params", {1, 2}, {7, 8}}}, true);
  absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(one_row, Signature());
  REQUIRE(decoded.ok());
  CHECK(decoded->request.params == std::vector<float>{7, 8});
  decoded =
      DecodeInferRequest(EncodeInferRequest("m", {{"x", {1, 3}, {1, 2, 3}}}, true), Signature());
  REQUIRE(decoded.ok());
  CHECK(decoded->request.params == std::vector<float>{1, 0});
}

TEST_CASE("the reply's form follows binary_data_output and the output's binary_data", "[oip]") {
  ModelInferRequest request = Good(true);
  (*request.mutable_parameters())["binary_data_output"].set_bool_param(false);
  CHECK_FALSE(DecodeInferRequest(request, Signature())->raw_output);
  request = Good(false);  // typed inputs alone do not change the default
  CHECK(DecodeInferRequest(request, Signature())->raw_output);
  auto* output = request.add_outputs();
  output->set_name("y");
  (*output->mutable_parameters())["binary_data"].set_bool_param(false);
  CHECK_FALSE(DecodeInferRequest(request, Signature())->raw_output);
}

TEST_CASE("every bad request is refused with a message naming the problem", "[oip]") {
  struct Case {
    const char* what;
    std::function<void(ModelInferRequest&)> spoil;
    const char* message;
    bool defaults = true;
  };
  const std::vector<Case> cases = {
      {"unknown input", [](auto& r) { r.mutable_inputs(1)->set_name("z"); },
       "unknown input \"z\"; the model takes \"x\" [n, 3] and \"params\" [n, 2]"},
      {"x twice", [](auto& r) { r.mutable_inputs(1)->set_name("x"); },
       "input \"x\" is given twice"},
      {"x missing", [](auto& r) { r.mutable_inputs(0)->set_name("params"); },
       "input \"params\" is given twice"},
      {"no inputs",
       [](auto& r) {
         r.clear_inputs();
         r.clear_raw_input_contents();
       },
       "input \"x\" is missing"},
      {"params missing without defaults",
       [](auto& r) {
         r.mutable_inputs()->RemoveLast();
         r.mutable_raw_input_contents()->RemoveLast();
       },
       "input \"params\" is missing and the model has no default parameters", false},
      {"datatype", [](auto& r) { r.mutable_inputs(0)->set_datatype("INT32"); },
       "input \"x\" has datatype \"INT32\"; the model takes FP32"},
      {"empty datatype", [](auto& r) { r.mutable_inputs(1)->set_datatype(""); },
       "input \"params\" has datatype \"\""},
      {"rank", [](auto& r) { r.mutable_inputs(0)->mutable_shape()->RemoveLast(); },
       "input \"x\" has shape [2]; the model takes [n, 3]"},
      {"width", [](auto& r) { r.mutable_inputs(0)->set_shape(1, 4); },
       "input \"x\" has shape [2, 4]"},
      {"negative rows", [](auto& r) { r.mutable_inputs(0)->set_shape(0, -2); },
       "input \"x\" has shape [-2, 3]"},
      {"zero rows", [](auto& r) { r.mutable_inputs(0)->set_shape(0, 0); },
       "input \"x\" has zero rows"},
      {"too many rows", [](auto& r) { r.mutable_inputs(0)->set_shape(0, int64_t{1} << 40); },
       "request has 1099511627776 rows; this server takes at most 1000 per request"},
      {"params rows", [](auto& r) { r.mutable_inputs(1)->set_shape(0, 3); },
       "input \"params\" has shape [3, 2]; with 2 rows of x the model takes [2, 2] or [1, 2]"},
      {"params width", [](auto& r) { r.mutable_inputs(1)->set_shape(1, 5); },
       "input \"params\" has shape [2, 5]"},
      {"raw size", [](auto& r) { r.mutable_raw_input_contents(0)->pop_back(); },
       "raw_input_contents of input \"x\" has 23 bytes; shape [2, 3] of FP32 takes 24"},
      {"raw count", [](auto& r) { r.mutable_raw_input_contents()->RemoveLast(); },
       "raw_input_contents has 1 entries for 2 inputs"},
      {"raw and typed",
       [](auto& r) { r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1); },
       "input \"x\" has contents and raw_input_contents"},
      {"unknown output", [](auto& r) { r.add_outputs()->set_name("z"); },
       "unknown output \"z\"; the model gives \"y\" [n, 2]"},
      {"output twice",
       [](auto& r) {
         r.add_outputs()->set_name("y");
         r.add_outputs()->set_name("y");
       },
       "output \"y\" is requested twice"},
      {"parameter type",
       [](auto& r) { (*r.mutable_parameters())["binary_data_output"].set_int64_param(0); },
       "parameter \"binary_data_output\" of the request must be a bool"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    ModelInferRequest request = Good(true);
    c.spoil(request);
    absl::StatusOr<DecodedInfer> decoded =
        DecodeInferRequest(request, Signature(c.defaults), /*max_rows=*/1000);
    REQUIRE_FALSE(decoded.ok());
    CHECK(decoded.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(decoded.status().message()), Catch::Contains(c.message));
  }
}

TEST_CASE("typed contents must be in fp32_contents and match the shape", "[oip]") {
  ModelInferRequest request = Good(false);
  request.mutable_inputs(0)->mutable_contents()->add_fp32_contents(7);
  absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(request, Signature());
  REQUIRE_FALSE(decoded.ok());
  CHECK_THAT(std::string(decoded.status().message()),
             Catch::Contains("input \"x\" has 7 values in fp32_contents; shape [2, 3] takes 6"));
  request = Good(false);
  request.mutable_inputs(1)->mutable_contents()->add_int_contents(1);
  decoded = DecodeInferRequest(request, Signature());
  REQUIRE_FALSE(decoded.ok());
  CHECK_THAT(std::string(decoded.status().message()),
             Catch::Contains("input \"params\" has its data in int_contents"));
}

TEST_CASE("a model without parameters refuses params", "[oip]") {
  ModelSignature signature;
  signature.num_inputs = 3;
  signature.num_outputs = 1;
  absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(Good(true), signature);
  REQUIRE_FALSE(decoded.ok());
  CHECK_THAT(std::string(decoded.status().message()),
             Catch::Contains("unknown input \"params\"; the model takes \"x\" [n, 3]"));
}

TEST_CASE("responses carry y in the form asked and read back the same", "[oip]") {
  const std::vector<float> y = {1.5f, -2, 3.25f, 4, 5, 6};
  for (const bool raw : {true, false}) {
    ModelInferResponse response;
    EncodeInferResponse({"m", "3", "id-1"}, y.data(), 3, 2, raw, &response);
    CHECK(response.model_name() == "m");
    CHECK(response.model_version() == "3");
    CHECK(response.id() == "id-1");
    CHECK(response.raw_output_contents_size() == (raw ? 1 : 0));
    absl::StatusOr<Fp32Tensor> decoded = DecodeOutput(response);
    REQUIRE(decoded.ok());
    CHECK(decoded->shape == std::vector<int64_t>{3, 2});
    CHECK(decoded->values == y);
    if (raw) {  // little-endian floats, row-major
      float first;
      std::memcpy(&first, response.raw_output_contents(0).data(), sizeof(float));
      CHECK(first == 1.5f);
    }
  }
}

}  // namespace
}  // namespace model_server::protocol::oip
