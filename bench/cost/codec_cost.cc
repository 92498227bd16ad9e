// The JSON codec alone, for counting its instructions under callgrind (bench/cost/codec_cost.sh):
// decodes model_bench's built-in 50-row seed request and encodes a 50-value reply, ITERATIONS
// times, one of four ways. Run it with 0 iterations too and subtract: the rest is set-up.
//
//   codec_cost decode|encode|ondemand|fastfloat ITERATIONS
//
// decode: protocol::DecodeRequest (the server's decoder). encode: protocol::EncodeResponse.
// ondemand: simdjson's On-Demand API reading the same numbers as doubles (the library baseline
// a decoder could be built on; it checks less than DecodeRequest does). fastfloat:
// fast_float::from_chars on each of the request's numbers, found beforehand (the numbers alone,
// no JSON).

#include <simdjson.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "bench/model_bench/built_in_payload.h"
#include "fast_float/fast_float.h"
#include "handlers/signature.h"
#include "protocol/seed_json.h"

namespace {

using namespace model_server;

// model_bench's built-in payload (--rows 50 --distinct-params, its first variant).
std::string Payload() {
  const bench::BuiltInNumbers numbers =
      bench::BuiltInRequest(50, 3, /*variant=*/0, /*distinct_params=*/true);
  return protocol::EncodeRequest(numbers.inputs, numbers.params, {"y_1"});
}

// Every number of the request through On-Demand; returns how many, or -1 on an error.
int OnDemandNumbers(simdjson::ondemand::parser& parser, const simdjson::padded_string& json,
                    float* out) {
  int count = 0;
  auto numbers = [&](simdjson::ondemand::array values) {
    for (auto value : values) {
      double number;
      if (value.get_double().get(number) != simdjson::SUCCESS) return false;
      out[count++] = static_cast<float>(number);
    }
    return true;
  };
  simdjson::ondemand::document document;
  simdjson::ondemand::object root;
  if (parser.iterate(json).get(document) || document.get_object().get(root)) return -1;
  for (auto field : root) {
    std::string_view key;
    simdjson::ondemand::object object;
    if (field.unescaped_key().get(key) || field.value().get_object().get(object)) return -1;
    for (auto inner : object) {
      std::string_view name;
      if (inner.unescaped_key().get(name)) return -1;
      if (key == "inputs") {
        simdjson::ondemand::array column;
        if (inner.value().get_array().get(column) || !numbers(column)) return -1;
        continue;
      }
      simdjson::ondemand::object settings;
      if (inner.value().get_object().get(settings)) return -1;
      for (auto setting : settings) {
        simdjson::ondemand::array values;
        if (setting.value().get_array().get(values)) return -1;
        if (name == "tunableParams") {
          if (!numbers(values)) return -1;
          continue;
        }
        for (auto value : values) {  // input_var_order, output_var_order
          std::string_view text;
          if (value.get_string().get(text)) return -1;
        }
      }
    }
  }
  return count;
}

// Where each number of the request starts: after '[' or ", ".
std::vector<const char*> NumberStarts(const std::string& json) {
  std::vector<const char*> starts;
  for (size_t i = 2; i < json.size(); ++i) {
    const char c = json[i];
    const bool opens = c == '-' || (c >= '0' && c <= '9');
    const bool after = json[i - 1] == '[' || (json[i - 1] == ' ' && json[i - 2] == ',');
    if (opens && after) starts.push_back(json.data() + i);
  }
  return starts;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc == 3 ? argv[1] : "";
  if (mode != "decode" && mode != "encode" && mode != "ondemand" && mode != "fastfloat") {
    std::fprintf(stderr, "usage: codec_cost decode|encode|ondemand|fastfloat ITERATIONS\n");
    return 2;
  }
  const int iterations = std::atoi(argv[2]);
  const std::string payload = Payload();
  handlers::SeedSignature seed;
  seed.input_names = {"x_1", "x_2", "x_3"};
  seed.output_names = {"y_1"};
  seed.num_inputs = 3;
  seed.num_outputs = 1;
  seed.num_params = 5;
  const handlers::ModelSignature signature = handlers::SeedModelSignature(seed, 4096);
  std::vector<float> outputs(50);
  for (int r = 0; r < 50; ++r) outputs[r] = std::sin(0.37f * r + 0.1f);
  const simdjson::padded_string padded(payload);
  simdjson::ondemand::parser parser;
  std::vector<float> numbers(payload.size());
  const std::vector<const char*> starts = NumberStarts(payload);
  if (starts.size() != 155) {
    std::fprintf(stderr, "found %zu numbers in the request, expected 155\n", starts.size());
    return 1;
  }
  std::string reply;
  double checksum = 0;  // keeps the work observable
  for (int i = 0; i < iterations; ++i) {
    if (mode == "decode") {
      absl::StatusOr<protocol::SeedRequest> request = protocol::DecodeRequest(payload, signature);
      if (!request.ok()) {
        std::fprintf(stderr, "decode failed: %s\n", request.status().ToString().c_str());
        return 1;
      }
      checksum += reinterpret_cast<const float*>(request->request.inputs[0].data.data())[7];
    } else if (mode == "encode") {
      protocol::EncodeResponse(seed.output_names, outputs.data(), 50, 1, &reply);
      checksum += static_cast<double>(reply.size());
    } else if (mode == "fastfloat") {
      for (size_t k = 0; k < starts.size(); ++k) {
        double number;
        if (fast_float::from_chars(starts[k], payload.data() + payload.size(), number).ec !=
            std::errc()) {
          std::fprintf(stderr, "fast_float refused number %zu\n", k);
          return 1;
        }
        numbers[k] = static_cast<float>(number);
      }
      checksum += numbers[7];
    } else {
      const int count = OnDemandNumbers(parser, padded, numbers.data());
      if (count != 155) {
        std::fprintf(stderr, "On-Demand read %d numbers, expected 155\n", count);
        return 1;
      }
      checksum += numbers[7];
    }
  }
  if (mode == "encode" && iterations > 0) {  // the reply must read back as the outputs
    absl::StatusOr<protocol::Columns> read = protocol::DecodeResponse(reply);
    if (!read.ok() || read->size() != 1 || read->front().second.size() != 50 ||
        static_cast<float>(read->front().second[49]) != outputs[49]) {
      std::fprintf(stderr, "the reply does not read back as the outputs\n");
      return 1;
    }
  }
  std::printf("%s: %zu-byte request, %d iterations, checksum %g\n", mode.c_str(), payload.size(),
              iterations, checksum);
  return 0;
}
