// libFuzzer target: protocol::oip::DecodeInferRequest on ModelInferRequests built from the
// fuzzer's bytes, then the decoded rows through the batch executor beside a seed request.
//
// The bytes choose a request's structure (FuzzedDataProvider): inputs named x, params or
// otherwise; datatypes; shapes of any rank with small, negative or huge dimensions; raw or typed
// data of about the shape's size (exact, one value short or over, an odd byte, the wrong typed
// field, both forms); raw_input_contents entries one short or over; requested outputs and the
// binary_data parameters with values of any type; the floats themselves, any bits. Mutating
// serialized protobuf bytes instead seldom keeps a shape and its data in step, which is where the
// decoder's checks are.
//
// Checks, beyond "no crash, leak or UB":
//  - A refusal is INVALID_ARGUMENT with a message, for each of three model signatures (the fake
//    model: parameters with defaults; the same without defaults; no parameters at all).
//  - An accepted request keeps the contract the batch thread relies on without checking: rows
//    >= 1, inputs of rows * num_inputs values, params of num_params or rows * num_params values
//    (none when the model takes none), no output names.
//  - An independent oracle: the inputs are x's data bit for bit, read straight from the request
//    (raw bytes or fp32_contents), and the params are "params"'s data, or the defaults.
//  - The executor: the request shares one forward pass with a seed request of another shape of
//    parameters (one vector for all rows); each of its rows gets the fake model's value for its
//    own x and its own parameter vector, bit for bit, so rows and parameters neither shift nor
//    mix between requests.
//  - The reply: y encoded raw and typed reads back as the same floats, bit for bit.

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "batching/batch_task.h"
#include "handlers/batch_executor.h"
#include "protocol/oip.h"
#include "test/fake_handler.h"
#include "test/fuzz/fuzz_check.h"

namespace {

namespace handlers = model_server::handlers;
namespace oip = model_server::protocol::oip;
namespace testing_support = model_server::testing_support;
using handlers::InferenceRequest;
using handlers::ModelSignature;

bool SameBits(const float* a, const float* b, size_t count) {
  return std::memcmp(a, b, count * sizeof(float)) == 0;
}

std::vector<ModelSignature> Signatures() {
  ModelSignature fake = testing_support::FakeHandler().signature();
  ModelSignature no_defaults = fake;
  no_defaults.default_params.clear();
  ModelSignature no_params;
  no_params.num_inputs = 3;
  no_params.num_outputs = 1;
  return {fake, no_defaults, no_params};
}

// The data of input `name` as the request carries it, or null when it is not there.
std::unique_ptr<std::vector<float>> Oracle(const inference::ModelInferRequest& request,
                                           const std::string& name) {
  for (int i = 0; i < request.inputs_size(); ++i) {
    if (request.inputs(i).name() != name) continue;
    auto values = std::make_unique<std::vector<float>>();
    if (request.raw_input_contents_size() > 0) {
      const std::string& raw = request.raw_input_contents(i);
      values->resize(raw.size() / sizeof(float));
      std::memcpy(values->data(), raw.data(), values->size() * sizeof(float));
    } else {
      const auto& typed = request.inputs(i).contents().fp32_contents();
      values->assign(typed.begin(), typed.end());
    }
    return values;
  }
  return nullptr;
}

// Records what the executor hands each task.
class Task final : public handlers::InferenceTask {
 public:
  explicit Task(InferenceRequest request) : InferenceTask(std::move(request)) {}
  absl::Status Dequeue(model_server::batching::TimePoint) override { return absl::OkStatus(); }
  void Complete(const float* outputs, int64_t stride) override {
    FUZZ_CHECK(stride == 2);
    outputs_.assign(outputs, outputs + request().rows * stride);
  }
  void Fail(absl::Status status) override { failure_ = std::move(status); }
  const std::vector<float>& outputs() const { return outputs_; }
  const absl::Status& failure() const { return failure_; }

 private:
  std::vector<float> outputs_;
  absl::Status failure_;
};

// Runs `request` (for the fake model) in one batch behind a seed-style request and checks every
// row's outputs against the fake model's formula with that row's own parameters.
void CheckExecutor(const InferenceRequest& request) {
  InferenceRequest seed;
  seed.rows = 2;
  seed.inputs = {1, 2, 3, 4, 5, 6};
  seed.params = {0.5f, -1};
  std::vector<std::unique_ptr<handlers::InferenceTask>> batch;
  batch.push_back(std::make_unique<Task>(seed));
  batch.push_back(std::make_unique<Task>(request));
  const Task& seed_task = static_cast<const Task&>(*batch[0]);
  const Task& task = static_cast<const Task&>(*batch[1]);
  testing_support::FakeHandler handler;
  FUZZ_CHECK(handler.Initialize().ok());
  handlers::BatchExecutor executor(handler);
  executor.Execute(batch);

  bool poisoned = false;
  for (int64_t row = 0; row < request.rows; ++row) {
    poisoned = poisoned || request.inputs[row * 3] == testing_support::kPoison;
  }
  if (poisoned) {  // only the poisoned request fails; its batch-mate is rerun alone
    FUZZ_CHECK(task.failure().code() == absl::StatusCode::kInternal);
    FUZZ_CHECK(seed_task.failure().ok() && seed_task.outputs().size() == 4);
    return;
  }
  FUZZ_CHECK(task.failure().ok());
  const bool per_row = static_cast<int64_t>(request.params.size()) == request.rows * 2;
  for (int64_t row = 0; row < request.rows; ++row) {
    const float* x = &request.inputs[row * 3];
    const float* p = &request.params[per_row ? row * 2 : 0];
    const float y[2] = {p[0] * (x[0] + x[1] + x[2]) + p[1], x[0]};
    FUZZ_CHECK(SameBits(&task.outputs()[row * 2], y, 2));
  }
  FUZZ_CHECK(seed_task.outputs() == (std::vector<float>{0.5f * 6 - 1, 1, 0.5f * 15 - 1, 4}));

  for (const bool raw : {true, false}) {
    inference::ModelInferResponse response;
    oip::EncodeInferResponse({"m", "1", ""}, task.outputs().data(), request.rows, 2, raw,
                             &response);
    absl::StatusOr<oip::Fp32Tensor> y = oip::DecodeOutput(response);
    FUZZ_CHECK(y.ok());
    FUZZ_CHECK((y->shape == std::vector<int64_t>{request.rows, 2}));
    FUZZ_CHECK(y->values.size() == task.outputs().size());
    FUZZ_CHECK(SameBits(y->values.data(), task.outputs().data(), y->values.size()));
  }
}

// A value of any type for a parameter that must be a bool.
void SetParameter(FuzzedDataProvider& fuzz, inference::InferParameter* parameter) {
  switch (fuzz.ConsumeIntegralInRange(0, 3)) {
    case 0:
      parameter->set_int64_param(fuzz.ConsumeIntegral<int64_t>());
      break;
    case 1:
      parameter->set_string_param("false");
      break;
    default:
      parameter->set_bool_param(fuzz.ConsumeBool());
  }
}

inference::ModelInferRequest BuildRequest(FuzzedDataProvider& fuzz) {
  inference::ModelInferRequest request;
  request.set_model_name("default");
  const bool raw = fuzz.ConsumeBool();
  const int inputs = fuzz.ConsumeIntegralInRange(0, 3);
  for (int i = 0; i < inputs; ++i) {
    inference::ModelInferRequest::InferInputTensor* tensor = request.add_inputs();
    tensor->set_name(fuzz.PickValueInArray({"x", "x", "params", "params", "y", "", "X"}));
    tensor->set_datatype(fuzz.PickValueInArray({"FP32", "FP32", "FP32", "FP64", "INT32", ""}));
    const int rank = fuzz.PickValueInArray({2, 2, 2, 0, 1, 3});
    int64_t elements = 1;
    for (int d = 0; d < rank; ++d) {
      const int64_t dimension =
          fuzz.ConsumeBool()
              ? fuzz.ConsumeIntegralInRange<int64_t>(-1, 6)
              : fuzz.PickValueInArray<int64_t>(
                    {0, 1, 2, 3, 4096, 4097, 1 << 20, int64_t{1} << 40, INT64_MAX, INT64_MIN});
      tensor->add_shape(dimension);
      elements = (dimension >= 0 && dimension <= 64 && elements <= 64) ? elements * dimension : 0;
    }
    // About the shape's number of values (capped), each of any bits.
    const int64_t count =
        std::max<int64_t>(0, elements + fuzz.PickValueInArray<int64_t>({0, 0, 0, -1, 1}));
    std::vector<float> values(static_cast<size_t>(count));
    for (float& value : values) {
      const uint32_t bits = fuzz.ConsumeIntegral<uint32_t>();
      std::memcpy(&value, &bits, sizeof(value));
    }
    if (raw) {
      std::string* bytes = request.add_raw_input_contents();
      bytes->assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
      if (fuzz.ConsumeIntegralInRange(0, 15) == 0) bytes->push_back('\0');
      if (fuzz.ConsumeIntegralInRange(0, 15) == 0) tensor->mutable_contents()->add_fp32_contents(1);
    } else {
      auto* contents = tensor->mutable_contents();
      switch (fuzz.ConsumeIntegralInRange(0, 15)) {
        case 0:
          contents->add_fp64_contents(1);
          break;
        case 1:
          contents->add_int_contents(1);
          break;
        default:
          contents->mutable_fp32_contents()->Add(values.begin(), values.end());
      }
    }
  }
  if (raw && fuzz.ConsumeIntegralInRange(0, 15) == 0) request.add_raw_input_contents();
  if (raw && inputs > 0 && fuzz.ConsumeIntegralInRange(0, 15) == 0) {
    request.mutable_raw_input_contents()->RemoveLast();
  }
  const int outputs = fuzz.PickValueInArray({0, 0, 1, 1, 2});
  for (int o = 0; o < outputs; ++o) {
    auto* output = request.add_outputs();
    output->set_name(fuzz.PickValueInArray({"y", "y", "x", ""}));
    if (fuzz.ConsumeBool()) SetParameter(fuzz, &(*output->mutable_parameters())["binary_data"]);
  }
  if (fuzz.ConsumeBool()) {
    SetParameter(fuzz, &(*request.mutable_parameters())["binary_data_output"]);
  }
  return request;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<ModelSignature> signatures = Signatures();
  FuzzedDataProvider fuzz(data, size);
  const inference::ModelInferRequest request = BuildRequest(fuzz);
  for (size_t s = 0; s < signatures.size(); ++s) {
    const ModelSignature& signature = signatures[s];
    absl::StatusOr<oip::DecodedInfer> decoded =
        oip::DecodeInferRequest(request, signature, /*max_rows=*/4096);
    if (!decoded.ok()) {
      FUZZ_CHECK(decoded.status().code() == absl::StatusCode::kInvalidArgument);
      FUZZ_CHECK(!decoded.status().message().empty());
      continue;
    }
    const InferenceRequest& out = decoded->request;
    FUZZ_CHECK(out.rows >= 1 && out.rows <= 4096);
    FUZZ_CHECK(out.inputs.size() == static_cast<size_t>(out.rows * signature.num_inputs));
    FUZZ_CHECK(out.output_names.empty());
    if (signature.num_params == 0) {
      FUZZ_CHECK(out.params.empty());
    } else {
      FUZZ_CHECK(out.params.size() == static_cast<size_t>(signature.num_params) ||
                 out.params.size() == static_cast<size_t>(out.rows * signature.num_params));
    }
    const std::unique_ptr<std::vector<float>> x = Oracle(request, oip::kInput);
    FUZZ_CHECK(x != nullptr && x->size() == out.inputs.size());
    FUZZ_CHECK(SameBits(x->data(), out.inputs.data(), x->size()));
    if (signature.num_params > 0) {
      const std::unique_ptr<std::vector<float>> params = Oracle(request, oip::kParams);
      const std::vector<float>& expected = params ? *params : signature.default_params;
      FUZZ_CHECK(expected.size() == out.params.size());
      FUZZ_CHECK(SameBits(expected.data(), out.params.data(), expected.size()));
    }
    if (s == 0) CheckExecutor(out);
  }
  return 0;
}
