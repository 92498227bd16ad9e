#include "protocol/oip.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "handlers/signature.h"

namespace model_server::protocol::oip {
namespace {

using handlers::DataType;
using handlers::Dims;
using handlers::InputTensor;
using handlers::MakeSpec;
using handlers::ModelSignature;
using inference::ModelInferRequest;
using inference::ModelInferResponse;

// x FP32 [n, 3], params FP32 [n, 2] (optional with defaults), y FP32 [n, 2].
ModelSignature Signature(bool defaults = true, int64_t params = 2) {
  handlers::SeedSignature seed;
  seed.num_inputs = 3;
  seed.num_outputs = 2;
  seed.num_params = params;
  if (defaults && params > 0) seed.default_params = {1.0f, 0.0f};
  return handlers::SeedModelSignature(std::move(seed), 64);
}

std::vector<float> Floats(const InputTensor& tensor) {
  std::vector<float> values(tensor.data.size() / sizeof(float));
  std::memcpy(values.data(), tensor.data.data(), tensor.data.size());
  return values;
}

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// Two rows of x and a parameter vector per row.
ModelInferRequest Good(bool raw) {
  return EncodeInferRequest(
      "m", {{"x", {2, 3}, {1, 2, 3, 4, 5, 6}}, {"params", {2, 2}, {7, 8, 9, 10}}}, raw);
}

TEST_CASE("raw and typed requests decode to the same rows and parameters", "[oip]") {
  for (const bool raw : {true, false}) {
    const ModelInferRequest request = Good(raw);  // raw data is read in place: keep it
    absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(request, Signature());
    REQUIRE(decoded.ok());
    CHECK(decoded->request.rows == 2);
    REQUIRE(decoded->request.inputs.size() == 2);
    CHECK(Floats(decoded->request.inputs[0]) == std::vector<float>{1, 2, 3, 4, 5, 6});
    CHECK(Floats(decoded->request.inputs[1]) == std::vector<float>{7, 8, 9, 10});
    CHECK_FALSE(decoded->request.inputs[1].broadcast);
    CHECK(decoded->outputs == std::vector<size_t>{0});  // all outputs when none is named
    CHECK(decoded->raw_output);
  }
}

TEST_CASE("params of one row serve every row; no params means the model's defaults", "[oip]") {
  ModelInferRequest one_row = EncodeInferRequest(
      "m", {{"x", {2, 3}, {1, 2, 3, 4, 5, 6}}, {"params", {1, 2}, {7, 8}}}, true);
  absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(one_row, Signature());
  REQUIRE(decoded.ok());
  CHECK(Floats(decoded->request.inputs[1]) == std::vector<float>{7, 8});
  CHECK(decoded->request.inputs[1].broadcast);
  decoded = DecodeInferRequest(EncodeInferRequest("m", {{"x", {2, 3}, {1, 2, 3, 4, 5, 6}}}, true),
                               Signature());
  REQUIRE(decoded.ok());
  CHECK(Floats(decoded->request.inputs[1]) == std::vector<float>{1, 0});
  CHECK(decoded->request.inputs[1].broadcast);
  CHECK(decoded->request.inputs[1].shape == Dims{1, 2});
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
       "unknown input \"z\"; the model takes \"x\" FP32 [n, 3], \"params\" FP32 [n, 2] (optional)"},
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
       "input \"params\" is missing; the model takes \"x\" FP32 [n, 3], \"params\" FP32 [n, 2]",
       false},
      {"datatype", [](auto& r) { r.mutable_inputs(0)->set_datatype("INT32"); },
       "input \"x\" has datatype \"INT32\"; the model takes FP32"},
      {"empty datatype", [](auto& r) { r.mutable_inputs(1)->set_datatype(""); },
       "input \"params\" has datatype \"\""},
      {"rank", [](auto& r) { r.mutable_inputs(0)->mutable_shape()->RemoveLast(); },
       "input \"x\" has shape [2]; the model takes \"x\" FP32 [n, 3]"},
      {"width", [](auto& r) { r.mutable_inputs(0)->set_shape(1, 4); },
       "input \"x\" has shape [2, 4]"},
      {"negative rows", [](auto& r) { r.mutable_inputs(0)->set_shape(0, -2); },
       "input \"x\" has negative rows"},
      {"zero rows", [](auto& r) { r.mutable_inputs(0)->set_shape(0, 0); },
       "input \"x\" has zero rows"},
      {"too many rows", [](auto& r) { r.mutable_inputs(0)->set_shape(0, int64_t{1} << 40); },
       "request has 1099511627776 rows; this model takes at most 1000 per request"},
      {"params rows", [](auto& r) { r.mutable_inputs(1)->set_shape(0, 3); },
       "input \"params\" has shape [3, 2]; the model takes \"params\" FP32 [n, 2] (optional) with "
       "the 2 rows of the other inputs"},
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
       "unknown output \"z\"; the model gives \"y\" FP32 [n, 2]"},
      {"output twice",
       [](auto& r) {
         r.add_outputs()->set_name("y");
         r.add_outputs()->set_name("y");
       },
       "output \"y\" is requested twice"},
      {"parameter type",
       [](auto& r) { (*r.mutable_parameters())["binary_data_output"].set_int64_param(0); },
       "parameter \"binary_data_output\" of the request must be a bool"},
      {"negative priority",
       [](auto& r) { (*r.mutable_parameters())["priority"].set_int64_param(-1); },
       "parameter \"priority\" of the request must be an integer >= 0"},
      {"priority as text",
       [](auto& r) { (*r.mutable_parameters())["priority"].set_string_param("1"); },
       "parameter \"priority\" of the request must be an integer >= 0"},
      {"negative timeout",
       [](auto& r) { (*r.mutable_parameters())["timeout"].set_int64_param(-5); },
       "parameter \"timeout\" of the request must be an integer >= 0 (microseconds)"},
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

TEST_CASE("priority and timeout are read as tritonclient sends them", "[oip]") {
  ModelInferRequest request = Good(true);
  absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(request, Signature());
  REQUIRE(decoded.ok());
  CHECK(decoded->priority == 0);
  CHECK(decoded->timeout.count() == 0);
  (*request.mutable_parameters())["priority"].set_uint64_param(2);  // tritonclient's form
  (*request.mutable_parameters())["timeout"].set_int64_param(1500);
  decoded = DecodeInferRequest(request, Signature());
  REQUIRE(decoded.ok());
  CHECK(decoded->priority == 2);
  CHECK(decoded->timeout.count() == 1500);
  (*request.mutable_parameters())["priority"].set_int64_param(1);  // the documented int64 form
  decoded = DecodeInferRequest(request, Signature());
  REQUIRE(decoded.ok());
  CHECK(decoded->priority == 1);
}

TEST_CASE("the cache key's parameters leave out scheduling and encoding, and tell others apart",
          "[oip]") {
  const auto parameters = [](const std::function<void(ModelInferRequest&)>& set) {
    ModelInferRequest request = Good(true);
    set(request);
    absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(request, Signature());
    REQUIRE(decoded.ok());
    return decoded->cache_parameters;
  };
  const std::string none = parameters([](ModelInferRequest&) {});
  CHECK(none.empty());
  CHECK(parameters([](ModelInferRequest& r) {
          (*r.mutable_parameters())["priority"].set_uint64_param(1);
          (*r.mutable_parameters())["timeout"].set_int64_param(10);
          (*r.mutable_parameters())["binary_data_output"].set_bool_param(false);
        }) == none);
  const std::string a = parameters(
      [](ModelInferRequest& r) { (*r.mutable_parameters())["temperature"].set_string_param("1"); });
  const std::string b = parameters(
      [](ModelInferRequest& r) { (*r.mutable_parameters())["temperature"].set_string_param("2"); });
  const std::string c = parameters(
      [](ModelInferRequest& r) { (*r.mutable_parameters())["temperature"].set_int64_param(1); });
  CHECK(a != none);
  CHECK(a != b);
  CHECK(a != c);  // same text, another type
  // Key order does not matter.
  CHECK(parameters([](ModelInferRequest& r) {
          (*r.mutable_parameters())["a"].set_int64_param(1);
          (*r.mutable_parameters())["b"].set_int64_param(2);
        }) == parameters([](ModelInferRequest& r) {
          (*r.mutable_parameters())["b"].set_int64_param(2);
          (*r.mutable_parameters())["a"].set_int64_param(1);
        }));
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
  absl::StatusOr<DecodedInfer> decoded =
      DecodeInferRequest(Good(true), Signature(/*defaults=*/false, /*params=*/0));
  REQUIRE_FALSE(decoded.ok());
  CHECK_THAT(std::string(decoded.status().message()),
             Catch::Contains("unknown input \"params\"; the model takes \"x\" FP32 [n, 3]"));
}

// An image and token ids in, a score per class and a flag out: the tensors of any model.
ModelSignature General() {
  ModelSignature signature;
  signature.max_batch_size = 8;
  signature.inputs = {MakeSpec("image", DataType::kFp32, {3, -1, -1}),
                      MakeSpec("ids", DataType::kInt64, {2}),
                      MakeSpec("mask", DataType::kBool, {2})};
  signature.outputs = {MakeSpec("scores", DataType::kFp32, {10}),
                       MakeSpec("flag", DataType::kUint8, {}),
                       MakeSpec("half", DataType::kFp16, {2})};
  return signature;
}

ModelInferRequest GeneralRequest(bool raw, int64_t rows = 2, int64_t side = 4) {
  std::vector<float> image(rows * 3 * side * side);
  for (size_t i = 0; i < image.size(); ++i) image[i] = 0.5f * i;
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < rows * 2; ++i) ids.push_back((int64_t{1} << 40) + i);
  std::vector<char> mask(rows * 2, 1);
  mask[0] = 0;
  return EncodeInferRequest("cnn",
                            {{"image", DataType::kFp32, {rows, 3, side, side}, Bytes(image)},
                             {"ids", DataType::kInt64, {rows, 2}, Bytes(ids)},
                             {"mask", DataType::kBool, {rows, 2}, Bytes(mask)}},
                            raw);
}

TEST_CASE("general tensors decode from raw and typed contents alike", "[oip]") {
  for (const bool raw : {true, false}) {
    INFO("raw " << raw);
    const ModelInferRequest request = GeneralRequest(raw);
    absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(request, General());
    REQUIRE(decoded.ok());
    const handlers::InferenceRequest& out = decoded->request;
    CHECK(out.rows == 2);
    CHECK(out.inputs[0].shape == Dims{2, 3, 4, 4});
    CHECK(out.inputs[1].shape == Dims{2, 2});
    std::vector<int64_t> ids(4);
    REQUIRE(out.inputs[1].data.size() == ids.size() * sizeof(int64_t));
    std::memcpy(ids.data(), out.inputs[1].data.data(), out.inputs[1].data.size());
    CHECK(ids[3] == (int64_t{1} << 40) + 3);  // exact, whatever the form
    CHECK(out.inputs[2].data == std::string("\0\1\1\1", 4));
    CHECK(Floats(out.inputs[0])[95] == 47.5f);
    // Raw data is read in place, not copied.
    if (raw) CHECK(out.inputs[0].data.data() == request.raw_input_contents(0).data());
    CHECK(handlers::BatchKey(out) == Dims{3, 4, 4, -1, 2, -1, 2, -1});
  }
}

TEST_CASE("requests of other variable sizes get other batch keys", "[oip]") {
  absl::StatusOr<DecodedInfer> small = DecodeInferRequest(GeneralRequest(true, 1, 4), General());
  absl::StatusOr<DecodedInfer> large = DecodeInferRequest(GeneralRequest(true, 3, 8), General());
  REQUIRE(small.ok());
  REQUIRE(large.ok());
  CHECK(handlers::BatchKey(small->request) != handlers::BatchKey(large->request));
}

TEST_CASE("bad general requests are refused naming the input and what it takes", "[oip]") {
  struct Case {
    const char* what;
    std::function<void(ModelInferRequest&)> spoil;
    const char* message;
    bool raw = true;
  };
  const std::vector<Case> cases = {
      {"fixed dim", [](auto& r) { r.mutable_inputs(0)->set_shape(1, 4); },
       "input \"image\" has shape [2, 4, 4, 4]; the model takes \"image\" FP32 [n, 3, -1, -1]"},
      {"rows differ", [](auto& r) { r.mutable_inputs(1)->set_shape(0, 1); },
       "input \"ids\" has shape [1, 2]; the model takes \"ids\" INT64 [n, 2] with the 2 rows"},
      {"more rows than max_batch_size", [](auto& r) { r.mutable_inputs(0)->set_shape(0, 9); },
       "request has 9 rows; this model "
       "takes at most 8 per request"},
      {"bool byte", [](auto& r) { (*r.mutable_raw_input_contents(2))[1] = 7; },
       "input \"mask\" is BOOL but byte 1 is neither 0 nor 1"},
      {"typed in the wrong field",
       [](auto& r) {
         auto* contents = r.mutable_inputs(1)->mutable_contents();
         contents->mutable_int_contents()->Add(contents->int64_contents().begin(),
                                               contents->int64_contents().end());
         contents->clear_int64_contents();
       },
       "input \"ids\" has its data in int_contents; INT64 data goes in int64_contents", false},
      {"typed half", [](auto& r) { r.mutable_inputs(1)->set_datatype("FP16"); },
       "input \"ids\" has datatype \"FP16\"; the model takes INT64", false},
      {"typed outputs of FP16",
       [](auto& r) { (*r.mutable_parameters())["binary_data_output"].set_bool_param(false); },
       "output \"half\" is FP16: it comes only in raw_output_contents"},
      {"outputs asking for different forms",
       [](auto& r) {
         auto* a = r.add_outputs();
         a->set_name("scores");
         (*a->mutable_parameters())["binary_data"].set_bool_param(false);
         auto* b = r.add_outputs();
         b->set_name("flag");
         (*b->mutable_parameters())["binary_data"].set_bool_param(true);
       },
       "outputs ask for different forms"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    ModelInferRequest request = GeneralRequest(c.raw);
    c.spoil(request);
    absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(request, General(), 8);
    REQUIRE_FALSE(decoded.ok());
    CHECK(decoded.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(decoded.status().message()), Catch::Contains(c.message));
  }
}

TEST_CASE("typed INT8 contents must fit the datatype", "[oip]") {
  ModelSignature signature;
  signature.inputs = {MakeSpec("small", DataType::kInt8, {2})};
  signature.outputs = {MakeSpec("y", DataType::kInt8, {2})};
  ModelInferRequest request = EncodeInferRequest(
      "m", {{"small", DataType::kInt8, {2}, Bytes(std::vector<int8_t>{-128, 127})}}, false);
  absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(request, signature);
  REQUIRE(decoded.ok());  // a model without a batch dimension: the shape is all of it
  CHECK(decoded->request.rows == 1);
  CHECK(decoded->request.inputs[0].data == std::string("\x80\x7f", 2));
  request.mutable_inputs(0)->mutable_contents()->set_int_contents(1, 300);
  decoded = DecodeInferRequest(request, signature);
  REQUIRE_FALSE(decoded.ok());
  CHECK_THAT(std::string(decoded.status().message()),
             Catch::Contains("input \"small\" value 300 at 1 does not fit its datatype"));
}

TEST_CASE("the reply carries the outputs asked for, in the order asked", "[oip]") {
  ModelInferRequest request = GeneralRequest(true);
  request.add_outputs()->set_name("half");
  request.add_outputs()->set_name("scores");
  absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(request, General());
  REQUIRE(decoded.ok());
  CHECK(decoded->outputs == std::vector<size_t>{2, 0});
}

TEST_CASE("responses carry outputs in the form asked and read back the same", "[oip]") {
  const std::vector<float> y = {1.5f, -2, 3.25f, 4, 5, 6};
  const std::vector<int64_t> ids = {int64_t{1} << 50, -3};
  for (const bool raw : {true, false}) {
    std::vector<ReplyTensor> outputs;
    outputs.push_back({"y", DataType::kFp32, {3, 2}, Bytes(y)});
    outputs.push_back({"ids", DataType::kInt64, {2, 1}, Bytes(ids)});
    ModelInferResponse response;
    EncodeInferResponse({"m", "3", "id-1"}, outputs, raw, &response);
    CHECK(response.model_name() == "m");
    CHECK(response.model_version() == "3");
    CHECK(response.id() == "id-1");
    CHECK(response.raw_output_contents_size() == (raw ? 2 : 0));
    absl::StatusOr<Fp32Tensor> decoded = DecodeOutput(response);
    REQUIRE(decoded.ok());
    CHECK(decoded->shape == std::vector<int64_t>{3, 2});
    CHECK(decoded->values == y);
    absl::StatusOr<Tensor> typed = DecodeTensor(response, "ids");
    REQUIRE(typed.ok());
    CHECK(typed->type == DataType::kInt64);
    CHECK(typed->data == Bytes(ids));
    if (raw) {  // little-endian floats, row-major
      float first;
      std::memcpy(&first, response.raw_output_contents(0).data(), sizeof(float));
      CHECK(first == 1.5f);
    } else {
      CHECK(response.outputs(1).contents().int64_contents(0) == int64_t{1} << 50);
    }
  }
}

// Found by oip_fuzzer: a tensor of no elements (a size of 0 anywhere) decodes, typed or raw,
// however large its other sizes, and reads back from a reply.
TEST_CASE("tensors of no elements decode and read back", "[oip]") {
  ModelSignature signature;
  signature.max_batch_size = 4;
  signature.inputs = {MakeSpec("ids", DataType::kInt64, {-1, -1})};
  signature.outputs = {MakeSpec("ids", DataType::kInt64, {-1, -1})};
  for (const bool raw : {true, false}) {
    INFO("raw " << raw);
    const ModelInferRequest request =
        EncodeInferRequest("m", {{"ids", DataType::kInt64, {2, int64_t{1} << 51, 0}, ""}}, raw);
    absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(request, signature);
    REQUIRE(decoded.ok());
    CHECK(decoded->request.rows == 2);
    CHECK(decoded->request.inputs[0].data.empty());
    std::vector<ReplyTensor> outputs;
    outputs.push_back({"ids", DataType::kInt64, {2, int64_t{1} << 51, 0}, ""});
    ModelInferResponse response;
    EncodeInferResponse({"m", "1", ""}, outputs, raw, &response);
    absl::StatusOr<Tensor> tensor = DecodeTensor(response, "ids");
    REQUIRE(tensor.ok());
    CHECK(tensor->shape == std::vector<int64_t>{2, int64_t{1} << 51, 0});
    CHECK(tensor->data.empty());
  }
}

// Found by oip_fuzzer: an optional input without a default (a config may declare one) left out
// is refused as missing, never read.
TEST_CASE("an optional input without a default must be given", "[oip]") {
  ModelSignature signature;
  signature.max_batch_size = 4;
  signature.inputs = {MakeSpec("x", DataType::kFp32, {2}), MakeSpec("mask", DataType::kBool, {2})};
  signature.inputs[1].optional = true;
  signature.outputs = {MakeSpec("y", DataType::kFp32, {2})};
  const ModelInferRequest request = EncodeInferRequest("m", {{"x", {1, 2}, {1, 2}}}, true);
  absl::StatusOr<DecodedInfer> decoded = DecodeInferRequest(request, signature);
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(decoded.status().message()),
             Catch::Contains("input \"mask\" is missing; the model takes"));
}

}  // namespace
}  // namespace model_server::protocol::oip
