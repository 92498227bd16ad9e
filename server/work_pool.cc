#include "server/work_pool.h"

#include <algorithm>

namespace model_server::server {

WorkPool::WorkPool(int threads) {
  for (int i = 0; i < std::max(threads, 1); ++i) threads_.emplace_back([this] { Loop(); });
}

WorkPool::~WorkPool() { Shutdown(); }

void WorkPool::Submit(Item* item) {
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    item->next_ = nullptr;
    (tail_ != nullptr ? tail_->next_ : head_) = item;
    tail_ = item;
    wake = idle_ > 0;
  }
  if (wake) wake_.notify_one();
}

void WorkPool::Submit(const std::vector<Item*>& items) {
  if (items.empty()) return;
  size_t wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Item* item : items) {
      item->next_ = nullptr;
      (tail_ != nullptr ? tail_->next_ : head_) = item;
      tail_ = item;
    }
    wake = std::min(idle_, items.size());
  }
  // One thread per item, as many as wait: a woken thread that finds the queue empty waits again.
  if (wake == 1) {
    wake_.notify_one();
  } else if (wake > 1) {
    wake_.notify_all();
  }
}

void WorkPool::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

void WorkPool::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (head_ != nullptr) {
      Item* const item = head_;
      head_ = item->next_;
      if (head_ == nullptr) tail_ = nullptr;
      lock.unlock();
      item->Run();
      lock.lock();
      continue;
    }
    if (stopping_) return;
    ++idle_;
    wake_.wait(lock);
    --idle_;
  }
}

}  // namespace model_server::server
