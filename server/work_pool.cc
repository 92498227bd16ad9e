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
    base::MutexLock lock(mu_);
    item->next_ = nullptr;
    (tail_ != nullptr ? tail_->next_ : head_) = item;
    tail_ = item;
    wake = idle_ > 0;
  }
  if (wake) wake_.Signal();
}

void WorkPool::Submit(const std::vector<Item*>& items) {
  if (items.empty()) return;
  size_t wake;
  {
    base::MutexLock lock(mu_);
    for (Item* item : items) {
      item->next_ = nullptr;
      (tail_ != nullptr ? tail_->next_ : head_) = item;
      tail_ = item;
    }
    wake = std::min(idle_, items.size());
  }
  // One thread per item, as many as wait: a woken thread that finds the queue empty waits again.
  if (wake == 1) {
    wake_.Signal();
  } else if (wake > 1) {
    wake_.SignalAll();
  }
}

void WorkPool::Shutdown() {
  {
    base::MutexLock lock(mu_);
    stopping_ = true;
  }
  wake_.SignalAll();
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

void WorkPool::Loop() {
  base::MutexLock lock(mu_);
  while (true) {
    if (head_ != nullptr) {
      Item* const item = head_;
      head_ = item->next_;
      if (head_ == nullptr) tail_ = nullptr;
      lock.Unlock();
      item->Run();
      lock.Lock();
      continue;
    }
    if (stopping_) return;
    ++idle_;
    wake_.Wait(mu_);
    --idle_;
  }
}

}  // namespace model_server::server
