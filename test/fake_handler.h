#pragma once

// A model without torch for tests of the executor and the transport: inputs x FP32 [n, 3] and
// params FP32 [n, 2] (optional, default {1, 0}), output y FP32 [n, 2] (the seed's x_1..x_3 and
// y_1, y_2):
//   y_1 = params[0] * (x_1 + x_2 + x_3) + params[1] + offset,  y_2 = x_1
// (offset 0 unless given: tests tell models and versions apart by it).
// A row with x_1 == kPoison makes the forward pass fail, as a model's runtime check would. The
// control can make forwards run out of memory or lose the device (handlers/fault.h) and records
// which thread warmed the model up and ran each forward.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "handlers/fault.h"
#include "handlers/model_handler.h"
#include "handlers/signature.h"

namespace model_server::testing_support {

inline constexpr float kPoison = 666.0f;

// What a test steers and observes of a FakeHandler. Shared with the handler, so it stays valid
// after the handler's owner (a LoadedModel, a server) has destroyed the handler.
class FakeModelControl {
 public:
  // Holds every forward pass until released, so tests can pile up requests.
  void Hold(bool hold) {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = hold;
    changed_.notify_all();
  }
  void FailEveryCall() { fail_every_call_ = true; }
  // Makes the handler ThreadBound, as a GPU instance is.
  void BindToThread() { thread_bound_ = true; }
  // Forwards of more than `rows` rows fail with Fault::kOutOfMemory, as a GPU's would.
  void OutOfMemoryAbove(int64_t rows) { out_of_memory_above_ = rows; }
  // The `count`-th forward pass (counting from 1) and every one after it fail with
  // Fault::kDeviceLost, as forwards do after a sticky CUDA error.
  void LoseDeviceAtForward(size_t count) { lose_device_at_ = count; }
  // WarmUp fails with `status`.
  void FailWarmUp(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    warm_up_error_ = std::move(status);
  }
  // Waits until `count` forward passes have started.
  bool WaitForForwards(size_t count) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, std::chrono::seconds(10),
                             [&] { return batch_rows_.size() >= count; });
  }
  // Rows of each forward pass so far.
  std::vector<int64_t> batch_rows() {
    std::lock_guard<std::mutex> lock(mu_);
    return batch_rows_;
  }
  // The thread of each forward pass so far.
  std::vector<std::thread::id> forward_threads() {
    std::lock_guard<std::mutex> lock(mu_);
    return forward_threads_;
  }
  // The thread that ran WarmUp and the rows it was asked to cover; nullopt before.
  std::optional<std::pair<std::thread::id, int64_t>> warm_up() {
    std::lock_guard<std::mutex> lock(mu_);
    return warm_up_;
  }
  bool cleaned_up() const { return cleaned_up_; }

 private:
  friend class FakeHandler;

  // Records a forward pass of `rows` rows and waits while held; returns how many have started.
  size_t StartForward(int64_t rows) {
    std::unique_lock<std::mutex> lock(mu_);
    batch_rows_.push_back(rows);
    forward_threads_.push_back(std::this_thread::get_id());
    const size_t count = batch_rows_.size();
    changed_.notify_all();
    changed_.wait(lock, [this] { return !hold_; });
    return count;
  }
  absl::Status WarmUp(int64_t max_rows) {
    std::lock_guard<std::mutex> lock(mu_);
    warm_up_ = std::make_pair(std::this_thread::get_id(), max_rows);
    return warm_up_error_;
  }

  std::mutex mu_;
  std::condition_variable changed_;
  bool hold_ = false;                                           // guarded by mu_
  std::vector<int64_t> batch_rows_;                             // guarded by mu_
  std::vector<std::thread::id> forward_threads_;                // guarded by mu_
  std::optional<std::pair<std::thread::id, int64_t>> warm_up_;  // guarded by mu_
  absl::Status warm_up_error_;                                  // guarded by mu_
  std::atomic<bool> fail_every_call_{false};
  std::atomic<bool> thread_bound_{false};
  std::atomic<int64_t> out_of_memory_above_{-1};
  std::atomic<size_t> lose_device_at_{0};
  std::atomic<bool> cleaned_up_{false};
};

class FakeHandler final : public handlers::ModelHandler {
 public:
  // `max_batch_size` 0 makes a model without a batch dimension (x [3], y [2]).
  explicit FakeHandler(float offset = 0, int64_t max_batch_size = 4096)
      : offset_(offset), signature_(MakeSignature(max_batch_size)) {}

  absl::Status Initialize() override { return absl::OkStatus(); }
  absl::Status WarmUp(int64_t max_rows) override { return control_->WarmUp(max_rows); }
  bool ThreadBound() const override { return control_->thread_bound_; }
  const handlers::ModelSignature& signature() const override { return signature_; }
  handlers::InitializeTimes initialize_times() const override { return {}; }

  std::vector<char*> PrepareBatch(const std::vector<handlers::Dims>& shapes) override {
    rows_ = signature_.batches() ? shapes[0][0] : 1;
    inputs_.resize(rows_ * 3);
    params_.resize(rows_ * 2);
    return {reinterpret_cast<char*>(inputs_.data()), reinterpret_cast<char*>(params_.data())};
  }

  absl::StatusOr<const std::vector<handlers::OutputTensor>*> Run() override {
    const size_t count = control_->StartForward(rows_);
    if (control_->fail_every_call_)
      return absl::InternalError("model forward failed: always broken");
    const size_t lose_device_at = control_->lose_device_at_;
    if (lose_device_at > 0 && count >= lose_device_at) {
      return handlers::DeviceLostError(
          "model forward failed: CUDA error: an illegal memory access was encountered");
    }
    const int64_t out_of_memory_above = control_->out_of_memory_above_;
    if (out_of_memory_above >= 0 && rows_ > out_of_memory_above) {
      return handlers::OutOfMemoryError(
          "model forward failed: CUDA out of memory. Tried to allocate 2.00 GiB");
    }
    outputs_.resize(rows_ * 2);
    for (int64_t row = 0; row < rows_; ++row) {
      const float* x = &inputs_[row * 3];
      const float* p = &params_[row * 2];
      if (x[0] == kPoison) return absl::InternalError("model forward failed: poison row");
      outputs_[row * 2] = p[0] * (x[0] + x[1] + x[2]) + p[1];
      if (offset_ != 0) outputs_[row * 2] += offset_;  // (+0 would turn -0 into 0)
      outputs_[row * 2 + 1] = x[0];
    }
    output_.type = handlers::DataType::kFp32;
    output_.shape = signature_.batches() ? handlers::Dims{rows_, 2} : handlers::Dims{2};
    output_.data = reinterpret_cast<const char*>(outputs_.data());
    return &output_list_;
  }

  void Cleanup() override { control_->cleaned_up_ = true; }

  const std::shared_ptr<FakeModelControl>& control() const { return control_; }
  // Shorthands for the control's.
  void Hold(bool hold) { control_->Hold(hold); }
  void FailEveryCall() { control_->FailEveryCall(); }
  bool WaitForForwards(size_t count) { return control_->WaitForForwards(count); }
  std::vector<int64_t> batch_rows() { return control_->batch_rows(); }

 private:
  static handlers::ModelSignature MakeSignature(int64_t max_batch_size) {
    handlers::SeedSignature seed;
    seed.input_names = {"x_1", "x_2", "x_3"};
    seed.output_names = {"y_1", "y_2"};
    seed.num_inputs = 3;
    seed.num_outputs = 2;
    seed.num_params = 2;
    seed.default_params = {1.0f, 0.0f};
    handlers::ModelSignature signature =
        handlers::SeedModelSignature(std::move(seed), max_batch_size);
    if (max_batch_size == 0) signature.seed.reset();  // the seed's columns need rows
    return signature;
  }

  const float offset_;
  const handlers::ModelSignature signature_;
  int64_t rows_ = 0;
  std::vector<float> inputs_, params_, outputs_;
  std::vector<handlers::OutputTensor> output_list_{1};
  handlers::OutputTensor& output_ = output_list_[0];
  const std::shared_ptr<FakeModelControl> control_ = std::make_shared<FakeModelControl>();
};

}  // namespace model_server::testing_support
