#include "protocol/seed_json.h"

#include <simdjson.h>

#include <catch2/catch.hpp>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "handlers/signature.h"

namespace model_server::protocol {
namespace {

using handlers::SeedSignature;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

SeedSignature Seed() {
  SeedSignature seed;
  seed.input_names = {"x_1", "x_2", "x_3"};
  seed.output_names = {"y_1", "y_2"};
  seed.num_inputs = 3;
  seed.num_outputs = 2;
  seed.num_params = 2;
  seed.default_params = {1.0f, 0.0f};
  return seed;
}

// A decoded request as the tests read it: the columns row-major, the parameter row.
struct Decoded {
  int64_t rows = 0;
  std::vector<float> inputs;
  std::vector<float> params;  // empty when the model takes none
  std::vector<std::string> output_names;
};

std::vector<float> Floats(const handlers::InputTensor& tensor) {
  std::vector<float> values(tensor.data.size() / sizeof(float));
  std::memcpy(values.data(), tensor.data.data(), tensor.data.size());
  return values;
}

// DecodeRequest for a model made for the seed (SeedModelSignature), read back.
absl::StatusOr<Decoded> Decode(std::string_view payload, const SeedSignature& seed = Seed(),
                               int64_t max_rows = std::numeric_limits<int64_t>::max()) {
  const handlers::ModelSignature signature = handlers::SeedModelSignature(seed, 4096);
  absl::StatusOr<SeedRequest> decoded = DecodeRequest(payload, signature, max_rows);
  if (!decoded.ok()) return decoded.status();
  const handlers::InferenceRequest& request = decoded->request;
  REQUIRE(request.inputs.size() == signature.inputs.size());
  Decoded result{request.rows, Floats(request.inputs[0]), {}, decoded->output_names};
  CHECK(request.inputs[0].shape == handlers::Dims{request.rows, seed.num_inputs});
  if (signature.seed->params_input) {
    const handlers::InputTensor& params = request.inputs[*signature.seed->params_input];
    CHECK(params.broadcast);  // one vector for every row
    CHECK(params.shape == handlers::Dims{1, seed.num_params});
    result.params = Floats(params);
  }
  return result;
}

const char* const kSeedPayload = R"({
  "analyticSettings": {
    "modelParams": {"input_var_order": ["x_1", "x_2", "x_3"], "output_var_order": ["y_1"],
                    "bias_weight_map": {"final": {"weights": [1, 2, 3, 4], "bias": [0]}}},
    "tunableParams": {"bias_weight_array": [0.5, -2]}},
  "inputs": {"x_1": [1, 2], "x_2": [0.25, 3e2], "x_3": [-1.5, 0], "unused": ["a"]},
  "somethingElse": {"deep": [[[]]]}})";

// The error for `payload`, which must be INVALID_ARGUMENT and mention `fragment`.
void RequireRejected(const std::string& payload, const std::string& fragment,
                     const SeedSignature& signature = Seed()) {
  absl::StatusOr<Decoded> decoded = Decode(payload, signature);
  INFO("payload: " << payload.substr(0, 200));
  REQUIRE_FALSE(decoded.ok());
  CHECK(decoded.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(decoded.status().message()), Catch::Contains(fragment));
}

TEST_CASE("the seed's payload decodes into row-major inputs and its parameters", "[codec]") {
  absl::StatusOr<Decoded> decoded = Decode(kSeedPayload, Seed());
  REQUIRE(decoded.ok());
  CHECK(decoded->rows == 2);
  CHECK(decoded->inputs == std::vector<float>{1, 0.25f, -1.5f, 2, 300, 0});
  CHECK(decoded->params == std::vector<float>{0.5f, -2});
  CHECK(decoded->output_names == std::vector<std::string>{"y_1"});
}

TEST_CASE("input_var_order picks the columns and their order", "[codec]") {
  absl::StatusOr<Decoded> decoded = Decode(
      R"({"analyticSettings": {"modelParams": {"input_var_order": ["b", "c", "a"],
                                               "output_var_order": ["out"]}},
          "inputs": {"a": [1], "b": [2], "c": [3]}})",
      Seed());
  REQUIRE(decoded.ok());
  CHECK(decoded->inputs == std::vector<float>{2, 3, 1});
  CHECK(decoded->output_names == std::vector<std::string>{"out"});
}

TEST_CASE("one thread's decodes carry nothing over from the request before", "[codec]") {
  const std::string named =
      R"({"analyticSettings": {"modelParams": {"input_var_order": ["b", "c", "a"],
                                               "output_var_order": ["out"]}},
          "inputs": {"a": [1], "b": [2], "c": [3]}})";
  for (int round = 0; round < 2; ++round) {
    absl::StatusOr<Decoded> decoded = Decode(named, Seed());
    REQUIRE(decoded.ok());
    CHECK(decoded->inputs == std::vector<float>{2, 3, 1});
    CHECK(decoded->output_names == std::vector<std::string>{"out"});
  }
  absl::StatusOr<Decoded> unnamed =
      Decode(R"({"inputs": {"x_1": [1], "x_2": [2], "x_3": [3]}})", Seed());
  REQUIRE(unnamed.ok());
  CHECK(unnamed->inputs == std::vector<float>{1, 2, 3});
  CHECK(unnamed->output_names == std::vector<std::string>{"y_1", "y_2"});
  RequireRejected(R"({"analyticSettings": {"modelParams": {"input_var_order": ["a", 1]}},
                      "inputs": {"a": [1]}})",
                  "input_var_order must be an array of strings");
  absl::StatusOr<Decoded> after_bad = Decode(named, Seed());
  REQUIRE(after_bad.ok());
  CHECK(after_bad->inputs == std::vector<float>{2, 3, 1});
}

TEST_CASE("without modelParams or tunableParams the model's own names and defaults apply",
          "[codec]") {
  absl::StatusOr<Decoded> decoded =
      Decode(R"({"inputs": {"x_1": [1], "x_2": [2], "x_3": [3]}})", Seed());
  REQUIRE(decoded.ok());
  CHECK(decoded->params == std::vector<float>{1, 0});
  CHECK(decoded->output_names == std::vector<std::string>{"y_1", "y_2"});
}

TEST_CASE("a model without tunable parameters gets none", "[codec]") {
  SeedSignature signature = Seed();
  signature.num_params = 0;
  signature.default_params.clear();
  absl::StatusOr<Decoded> decoded =
      Decode(R"({"inputs": {"x_1": [1], "x_2": [2], "x_3": [3]}})", signature);
  REQUIRE(decoded.ok());
  CHECK(decoded->params.empty());
  RequireRejected(R"({"analyticSettings": {"tunableParams": {"bias_weight_array": [1]}},
                      "inputs": {"x_1": [1], "x_2": [2], "x_3": [3]}})",
                  "takes no tunable parameters", signature);
}

TEST_CASE("every bad input is refused with a message naming the problem", "[codec]") {
  const std::string columns = R"("inputs": {"x_1": [1, 2], "x_2": [3, 4], "x_3": [5, 6]})";
  RequireRejected("{\"inputs\": {\"x_1\": [1], \"x\xff\": [2]}}", "not valid UTF-8");
  RequireRejected("{\"inputs\": ", "not valid JSON");
  RequireRejected("", "not valid JSON");
  RequireRejected("[1, 2, 3]", "must be an object");
  RequireRejected(R"({"analyticSettings": {}})", "no \"inputs\"");
  RequireRejected(R"({"inputs": [1, 2]})", "\"inputs\" must be a JSON object");
  RequireRejected(R"({"inputs": {"x_1": [1], "x_3": [3]}})", "\"x_2\"");
  RequireRejected(R"({"inputs": {"x_1": [1, 2], "x_2": [3], "x_3": [5, 6]}})",
                  "inputs.x_2 has 1 values but inputs.x_1 has 2");
  RequireRejected(R"({"inputs": {"x_1": [], "x_2": [], "x_3": []}})", "zero rows");
  RequireRejected(R"({"inputs": {"x_1": [1], "x_2": ["two"], "x_3": [3]}})",
                  "inputs.x_2[0] is not a number");
  RequireRejected(R"({"inputs": {"x_1": 1, "x_2": [2], "x_3": [3]}})",
                  "inputs.x_1 must be an array");
  RequireRejected(R"({"analyticSettings": {"tunableParams": {"bias_weight_array": [1, 2, 3]}},)" +
                      columns + "}",
                  "bias_weight_array has 3 values but the model takes 2");
  RequireRejected(
      R"({"analyticSettings": {"tunableParams": {"bias_weight_array": [1, "x"]}},)" + columns + "}",
      "bias_weight_array[1] is not a number");
  RequireRejected(
      R"({"analyticSettings": {"modelParams": {"output_var_order": ["a", "b", "c"]}},)" + columns +
          "}",
      "output_var_order names 3 outputs but the model produces 2");
  RequireRejected(R"({"analyticSettings": {"modelParams": {"input_var_order": ["x_1", "x_2"]}},)" +
                      columns + "}",
                  "input_var_order names 2 variables but the model takes 3");
  RequireRejected(
      R"({"analyticSettings": {"modelParams": {"input_var_order": "x_1"}},)" + columns + "}",
      "input_var_order must be an array of strings");
  RequireRejected(R"({"analyticSettings": 7,)" + columns + "}",
                  "analyticSettings must be a JSON object");
}

TEST_CASE("a request over the row limit is refused", "[codec]") {
  const std::string payload =
      R"({"inputs": {"x_1": [1, 2, 3], "x_2": [1, 2, 3], "x_3": [1, 2, 3]}})";
  CHECK(Decode(payload, Seed(), 3).ok());
  absl::StatusOr<Decoded> refused = Decode(payload, Seed(), 2);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(refused.status().message()), Catch::Contains("at most 2 per request"));
}

TEST_CASE("JSON nested deeper than 32 levels is refused, however deep it goes", "[codec]") {
  const std::string deep =
      "{\"inputs\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  RequireRejected(deep, "nested deeper than 32 levels");
  // The root object is level 1: 31 arrays inside it are the most a request may hold.
  const std::string nested = [](int arrays) {
    return "{\"x\": " + std::string(arrays, '[') + std::string(arrays, ']') +
           R"(, "inputs": {"x_1": [1], "x_2": [2], "x_3": [3]}})";
  }(31);
  CHECK(Decode(nested, Seed()).ok());
  RequireRejected("{\"x\": " + std::string(32, '[') + std::string(32, ']') + "}",
                  "nested deeper than 32 levels");
}

TEST_CASE("NaN, Infinity and -Infinity are read as Python's json reads them", "[codec]") {
  absl::StatusOr<Decoded> decoded = Decode(
      R"({"analyticSettings": {"tunableParams": {"bias_weight_array": [NaN, -Infinity]}},
          "inputs": {"x_1": [Infinity, 1], "x_2": [-Infinity, NaN], "x_3": [0, 2]},
          "ignored": [NaN, {"a": Infinity}]})",
      Seed());
  REQUIRE(decoded.ok());
  REQUIRE(decoded->inputs.size() == 6);
  CHECK(decoded->inputs[0] == std::numeric_limits<float>::infinity());
  CHECK(decoded->inputs[1] == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(decoded->inputs[4]));
  CHECK(std::isnan(decoded->params[0]));
  CHECK(decoded->params[1] == -std::numeric_limits<float>::infinity());
  // Other spellings are not JSON, nor Python's.
  for (const char* bad : {"nan", "-NaN", "inf", "+Infinity", "Infinity1", "NaNa", "infinity"}) {
    RequireRejected(absl::StrCat(R"({"inputs": {"x_1": [)", bad, R"(], "x_2": [2], "x_3": [3]}})"),
                    "not valid JSON");
  }
}

TEST_CASE("numbers are JSON numbers, in simdjson's ranges, rounded once to double", "[codec]") {
  // Numbers near the end of the document take the decoder's general path; with 40 bytes or more
  // after them, its inline path for the usual -d.ddd form. Every check runs on both.
  const std::string padding = GENERATE(std::string(), std::string(48, ' '));
  auto x_1 = [&padding](const std::string& number) -> absl::StatusOr<float> {
    absl::StatusOr<Decoded> decoded = Decode(
        absl::StrCat(R"({"inputs": {"x_1": [)", number, padding, R"(], "x_2": [0], "x_3": [0]}})"),
        Seed());
    if (!decoded.ok()) return decoded.status();
    return decoded->inputs[0];
  };
  for (const char* bad :
       {"01", "1.", ".5", "1e", "1e+", "-", "--1", "+1", "0x10", "1e400", "-1e400",
        "18446744073709551616", "-9223372036854775809", "123456789012345678901234567890"}) {
    INFO(bad);
    CHECK_FALSE(x_1(bad).ok());
  }
  for (const char* bad : {"01.5", "00.5", "-.5", "0.", "-0.", "1.5.5", "0.5e", "0.5e+", "- 0.5",
                          "0.1234x", "1234567.", "0.-5"}) {
    INFO(bad);
    CHECK_FALSE(x_1(bad).ok());
  }
  // Up to 19 significant digits are exact on the inline path; more take fast_float.
  for (const char* text :
       {"0.1234567890123456789", "-9.999999999999999999", "1234567.123456789012", "12345678.5",
        "0.00000000000000000001", "0.000000000000000000012345", "7.0", "1234567.1234567812345678",
        "0.16447135051243542", "-0.9589242746631385", "0.5e-3", "5.5E+2"}) {
    INFO(text);
    double exact = 0;
    std::from_chars(text, text + std::strlen(text), exact);
    CHECK(*x_1(text) == static_cast<float>(exact));
  }
  CHECK(*x_1("18446744073709551615") == 18446744073709551615.0f);
  CHECK(*x_1("-9223372036854775808") == -9223372036854775808.0f);
  CHECK(*x_1("1E+2") == 100);
  CHECK(*x_1("1e-400") == 0);
  CHECK(*x_1("0.1") == 0.1f);
  // The integer -0 is 0 (an integer first, as simdjson stored it); -0.0 keeps its sign.
  CHECK_FALSE(std::signbit(*x_1("-0")));
  CHECK(std::signbit(*x_1("-0.0")));
  // Parsed as a double, then rounded to float, as the DOM decoder did: this text lies just above
  // the midpoint between 1 and the next float, so a direct parse to float rounds up, while the
  // double it parses to is that midpoint, which rounds to even: 1.
  const std::string just_above_midpoint = "1.00000005960464477550";
  float direct = 0;
  std::from_chars(just_above_midpoint.data(),
                  just_above_midpoint.data() + just_above_midpoint.size(), direct);
  CHECK(direct == std::nextafter(1.0f, 2.0f));
  CHECK(*x_1(just_above_midpoint) == 1.0f);
}

TEST_CASE("every number rounds as the double it denotes does, near float midpoints too",
          "[codec]") {
  // Decimal texts of random doubles (shortest, as clients write them), and of doubles a few
  // ulps either side of the midpoint between two floats, where a shortcut would round wrong.
  std::mt19937_64 random(7);
  std::vector<std::string> texts;
  char buffer[64];
  for (int i = 0; i < 20000; ++i) {
    const double value = std::ldexp(std::uniform_real_distribution<double>(0.5, 1)(random),
                                    std::uniform_int_distribution<int>(-30, 30)(random)) *
                         (i % 2 == 0 ? 1 : -1);
    texts.emplace_back(buffer, std::to_chars(buffer, buffer + sizeof(buffer), value).ptr);
    const float below = static_cast<float>(value);
    const double midpoint =
        (static_cast<double>(below) + static_cast<double>(std::nextafter(below, 2 * below))) / 2;
    double near = midpoint;
    for (int step = 0; step < (i % 7); ++step) near = std::nextafter(near, i % 3 == 0 ? 0 : 1e30);
    texts.emplace_back(buffer, std::to_chars(buffer, buffer + sizeof(buffer), near).ptr);
  }
  std::string column;
  for (const std::string& text : texts) absl::StrAppend(&column, column.empty() ? "" : ",", text);
  SeedSignature signature = Seed();
  signature.num_inputs = 1;
  signature.input_names = {"x"};
  absl::StatusOr<Decoded> decoded =
      Decode(absl::StrCat(R"({"inputs": {"x": [)", column, "]}}"), signature);
  REQUIRE(decoded.ok());
  REQUIRE(decoded->inputs.size() == texts.size());
  size_t wrong = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    double exact = 0;
    std::from_chars(texts[i].data(), texts[i].data() + texts[i].size(), exact);
    if (decoded->inputs[i] != static_cast<float>(exact)) {
      UNSCOPED_INFO(texts[i] << " decoded " << decoded->inputs[i]);
      ++wrong;
    }
  }
  CHECK(wrong == 0);
}

TEST_CASE("keys and names may be escaped; the first of duplicate keys counts", "[codec]") {
  absl::StatusOr<Decoded> decoded = Decode(
      R"({"inputs": {"x\u005f1": [1], "x_1": [9], "x_2": [2], "x_3": [3]},
          "analytic\u0053ettings": {"modelParams": {"output_var_order": ["\u00e9\ud83d\ude00"]}},
          "analyticSettings": {"modelParams": {"output_var_order": ["ignored"]}},
          "inputs": {"x_1": [7], "x_2": [7], "x_3": [7]}})",
      Seed());
  REQUIRE(decoded.ok());
  CHECK(decoded->inputs == std::vector<float>{1, 2, 3});
  CHECK(decoded->output_names == std::vector<std::string>{"\xc3\xa9\xf0\x9f\x98\x80"});
  // Surrogates must pair up; control characters must be escaped.
  RequireRejected(R"({"inputs": {"\ud800": [1]}})", "not valid JSON");
  RequireRejected(R"({"inputs": {"\udc00": [1]}})", "not valid JSON");
  RequireRejected("{\"inputs\": {\"a\tb\": [1]}}", "not valid JSON");
  RequireRejected(R"({"inputs": {"\x": [1]}})", "not valid JSON");
}

TEST_CASE("inputs may come before analyticSettings", "[codec]") {
  absl::StatusOr<Decoded> decoded = Decode(
      R"({"inputs": {"a": [1, 4], "b": [2, 5], "c": [3, 6]},
          "analyticSettings": {"modelParams": {"input_var_order": ["c", "a", "b"]},
                               "tunableParams": {"bias_weight_array": [7, 8]}}})",
      Seed());
  REQUIRE(decoded.ok());
  CHECK(decoded->inputs == std::vector<float>{3, 1, 2, 6, 4, 5});
  CHECK(decoded->params == std::vector<float>{7, 8});
}

TEST_CASE("anything after the object, or a broken value anywhere, is refused", "[codec]") {
  const std::string ok = R"({"inputs": {"x_1": [1], "x_2": [2], "x_3": [3]})";
  CHECK(Decode(ok + "}  \n", Seed()).ok());
  RequireRejected(ok + "} x", "not valid JSON");
  RequireRejected(ok + "}\x0b", "not valid JSON");
  RequireRejected(ok + ", \"other\": [1, 2,]}", "not valid JSON");
  RequireRejected(ok + ", \"other\": tru}", "not valid JSON");
  RequireRejected(ok + ", \"other\": {\"a\" 1}}", "not valid JSON");
  RequireRejected(ok + ",}", "not valid JSON");
}

TEST_CASE("requests without parameters need model defaults; without names, model names",
          "[codec]") {
  SeedSignature signature = Seed();
  signature.default_params.clear();
  RequireRejected(R"({"inputs": {"x_1": [1], "x_2": [2], "x_3": [3]}})",
                  "no analyticSettings.tunableParams.bias_weight_array", signature);
  signature = Seed();
  signature.input_names.clear();
  RequireRejected(R"({"inputs": {"x_1": [1], "x_2": [2], "x_3": [3]}})",
                  "no analyticSettings.modelParams.input_var_order", signature);
}

TEST_CASE("responses are the seed's JSON with exact float text", "[codec]") {
  const float outputs[] = {0.5f, 9, -1.25f, 9, 3e-8f, 9};  // column 0 of 3 rows, stride 2
  std::string out = "stale contents";
  EncodeResponse({"y_1"}, outputs, 3, 2, &out);
  CHECK(out == R"({"prediction": {"y_1": [0.5, -1.25, 3e-08]}})");
  EncodeResponse({"a", "b"}, outputs, 1, 2, &out);
  CHECK(out == R"({"prediction": {"a": [0.5], "b": [9]}})");
}

// Floats whose text differs from std::to_chars's, over every `stride`th bit pattern.
size_t FloatTextMismatches(uint64_t stride) {
  std::string out;
  size_t wrong = 0;
  char expected[64];
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32); bits += stride) {
    const uint32_t pattern = static_cast<uint32_t>(bits);
    float value;
    std::memcpy(&value, &pattern, sizeof(value));
    if (!std::isfinite(value)) continue;
    out.clear();
    AppendJsonNumber(value, &out);
    const std::string_view text(
        expected, std::to_chars(expected, expected + sizeof(expected), value).ptr - expected);
    if (out != text && ++wrong <= 10) UNSCOPED_INFO(text << " written as " << out);
  }
  return wrong;
}

TEST_CASE("every float's text is std::to_chars's, over a stride of all bit patterns", "[codec]") {
  // Every 509th bit pattern (8.4 million floats): all exponents, 1 to 9 significant digits, fixed
  // and scientific layouts.
  CHECK(FloatTextMismatches(509) == 0);
}

// All 2^32 bit patterns, ~4 minutes: run by name (test/protocol_tests "[exhaustive]") after a
// change to protocol/float_text.h.
TEST_CASE("every float's text is std::to_chars's", "[.][exhaustive]") {
  CHECK(FloatTextMismatches(1) == 0);
}

TEST_CASE("responses spell non-finite values and odd names as Python's json reads them",
          "[codec]") {
  const float outputs[] = {std::numeric_limits<float>::quiet_NaN(),
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity()};
  std::string out;
  EncodeResponse({"q\"\\\n"}, outputs, 3, 1, &out);
  CHECK(out == R"({"prediction": {"q\"\\\u000a": [NaN, Infinity, -Infinity]}})");
}

TEST_CASE("an encoded response decodes back to the same floats", "[codec]") {
  const float outputs[] = {0.1f, 1.0f / 3, 123456.789f, -7e-20f};
  std::string out;
  EncodeResponse({"x_1"}, outputs, 4, 1, &out);
  // The response is itself valid input for a one-column model: decode it back.
  SeedSignature signature;
  signature.input_names = {"x_1"};
  signature.output_names = {"y"};
  signature.num_inputs = 1;
  signature.num_outputs = 1;
  std::string payload = out;
  payload.replace(0, std::string("{\"prediction\"").size(), "{\"inputs\"");
  absl::StatusOr<Decoded> decoded = Decode(payload, signature);
  REQUIRE(decoded.ok());
  CHECK(decoded->inputs == std::vector<float>(std::begin(outputs), std::end(outputs)));
}

TEST_CASE("EncodeRequest writes the seed's request shape", "[codec]") {
  const Columns inputs = {{"x_1", {1.5, -2}}, {"x_2", {0.1, 3e-7}}};
  const std::string json = EncodeRequest(inputs, {0.1, 0.2, 0.3, 0.4, 0.5}, {"y_1"});

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

TEST_CASE("EncodeRequest omits what is not given and escapes names", "[codec]") {
  const std::string json = EncodeRequest({{"a\"b", {1}}}, {}, {});
  simdjson::dom::parser parser;
  simdjson::dom::element root = parser.parse(json);
  simdjson::dom::element unused;
  CHECK(root["analyticSettings"]["tunableParams"].get(unused) == simdjson::NO_SUCH_FIELD);
  CHECK(root["analyticSettings"]["modelParams"]["output_var_order"].get(unused) ==
        simdjson::NO_SUCH_FIELD);
  CHECK(double(root["inputs"]["a\"b"].at(0)) == 1);
}

TEST_CASE("DecodeResponse reads the prediction columns in order", "[codec]") {
  const absl::StatusOr<Columns> columns =
      DecodeResponse(R"({"prediction": {"y_1": [1, 2.5], "y_2": [-3, 4e2]}})");
  REQUIRE(columns.ok());
  REQUIRE(columns->size() == 2);
  CHECK(columns->at(0).first == "y_1");
  CHECK(columns->at(0).second == std::vector<double>{1, 2.5});
  CHECK(columns->at(1).first == "y_2");
  CHECK(columns->at(1).second == std::vector<double>{-3, 400});
}

TEST_CASE("DecodeResponse refuses malformed responses", "[codec]") {
  for (const char* bad :
       {"not json", R"({"result": {}})", R"({"prediction": [1]})", R"({"prediction": {"y_1": 3}})",
        R"({"prediction": {"y_1": ["a"]}})", R"({"prediction": {"y_1": [1, 2], "y_2": [1]}})"}) {
    INFO(bad);
    const absl::StatusOr<Columns> columns = DecodeResponse(bad);
    REQUIRE_FALSE(columns.ok());
    CHECK(columns.status().code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("an encoded request round-trips through RequestRows", "[codec]") {
  const std::string json = EncodeRequest({{"x_1", {1, 2, 3}}, {"x_2", {4, 5, 6}}}, {1}, {});
  REQUIRE(RequestRows(json).ok());
  CHECK(*RequestRows(json) == 3);
  CHECK_FALSE(RequestRows(R"({"inputs": 5})").ok());
  CHECK_FALSE(RequestRows("[]").ok());
}

TEST_CASE("non-finite numbers are written and read as Python's json does", "[codec]") {
  const std::string request = EncodeRequest({{"x_1", {kNaN, kInf, -kInf, 1.5}}}, {-kInf}, {});
  CHECK_THAT(request, Catch::Contains(R"("x_1": [NaN, Infinity, -Infinity, 1.5])"));
  CHECK_THAT(request, Catch::Contains(R"("bias_weight_array": [-Infinity])"));

  const float outputs[] = {std::numeric_limits<float>::quiet_NaN(), 2.5f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity()};
  std::string response;
  EncodeResponse({"y_1"}, outputs, 4, 1, &response);
  const absl::StatusOr<Columns> columns = DecodeResponse(response);
  REQUIRE(columns.ok());
  REQUIRE(columns->at(0).second.size() == 4);
  CHECK(std::isnan(columns->at(0).second[0]));
  CHECK(columns->at(0).second[1] == 2.5);
  CHECK(columns->at(0).second[2] == kInf);
  CHECK(columns->at(0).second[3] == -kInf);
  // Only Python's spellings: not "nan", "inf" or "-NaN".
  for (const char* bad : {R"({"prediction": {"y": [nan]}})", R"({"prediction": {"y": [inf]}})",
                          R"({"prediction": {"y": [-NaN]}})"}) {
    INFO(bad);
    CHECK_FALSE(DecodeResponse(bad).ok());
  }
}

}  // namespace
}  // namespace model_server::protocol
