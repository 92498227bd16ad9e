#include "server/model_reloader.h"

namespace model_server::server {

ModelReloader::ModelReloader(const std::vector<std::unique_ptr<ServedModel>>* models,
                             std::chrono::milliseconds poll_interval)
    : models_(models), poll_interval_(poll_interval), thread_([this] { Loop(); }) {}

ModelReloader::~ModelReloader() { Stop(); }

void ModelReloader::RequestReload() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    reload_requested_ = true;
  }
  wake_.notify_one();
}

void ModelReloader::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void ModelReloader::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    const auto woken = [this] { return stopping_ || reload_requested_; };
    if (poll_interval_.count() > 0) {
      wake_.wait_for(lock, poll_interval_, woken);
    } else {
      wake_.wait(lock, woken);
    }
    if (stopping_) return;
    const bool every_model = reload_requested_;
    reload_requested_ = false;
    lock.unlock();
    for (const auto& model : *models_) {
      // Errors are the model's to log and count: the old version serves on.
      if (every_model ? model->reloadable() : model->FileChanged()) (void)model->Reload();
    }
    lock.lock();
  }
}

}  // namespace model_server::server
