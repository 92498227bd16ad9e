#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "server/served_model.h"

namespace model_server::server {

// Swaps in new versions of the models' files, one at a time, on a thread of its own: a model
// whose file has changed since its last load or attempt (polled every `poll_interval`), and every
// model with a file when asked (SIGHUP). A version that fails to load or warm up, or whose
// signature differs, is refused and the old one serves on (ServedModel::Reload).
class ModelReloader {
 public:
  // `models` outlive the reloader. A zero `poll_interval` polls nothing (requests still work).
  ModelReloader(const std::vector<std::unique_ptr<ServedModel>>* models,
                std::chrono::milliseconds poll_interval);
  // Stop.
  ~ModelReloader();

  // Reloads every model that has a file, changed or not, once the thread is free. Any thread.
  void RequestReload();
  // Stops the thread once a reload in progress is done; nothing is reloaded afterwards.
  // Idempotent; any thread.
  void Stop();

 private:
  void Loop();

  const std::vector<std::unique_ptr<ServedModel>>* const models_;
  const std::chrono::milliseconds poll_interval_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool reload_requested_ = false;  // guarded by mu_
  bool stopping_ = false;          // guarded by mu_
  std::thread thread_;
};

}  // namespace model_server::server
