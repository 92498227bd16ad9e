#pragma once

// The numbers of model_bench's built-in requests, shared with bench/cost/codec_cost so that the
// codec is measured on the payload the load generator sends.

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "protocol/seed_json.h"

namespace model_server::bench {

struct BuiltInNumbers {
  protocol::Columns inputs;    // x_1..x_vars, `rows` values each
  std::vector<double> params;  // the 5-value bias_weight_array
};

// Variant `variant` of the built-in request: every variant has its own inputs, and with
// `distinct_params` its own parameters too.
inline BuiltInNumbers BuiltInRequest(int rows, int vars, int variant, bool distinct_params) {
  BuiltInNumbers numbers;
  for (int v = 0; v < vars; ++v) {
    std::vector<double> values;
    for (int r = 0; r < rows; ++r) values.push_back(std::sin(0.37 * r + 1.3 * v + variant));
    numbers.inputs.emplace_back("x_" + std::to_string(v + 1), std::move(values));
  }
  numbers.params = {0.1, 0.2, 0.3, 0.4, 0.5};
  for (double& param : numbers.params) {
    if (distinct_params) param += 0.001 * variant;
  }
  return numbers;
}

}  // namespace model_server::bench
