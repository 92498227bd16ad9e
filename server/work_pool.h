#pragma once

#include <cstddef>
#include <thread>
#include <vector>

#include "base/mutex.h"

namespace model_server::server {

// A fixed set of threads running work items in arrival order. The request path's per-request
// work — decoding a request as it arrives, encoding and finishing it after its forward pass —
// goes here, so any core can take it whichever connection's completion queue or batch thread it
// comes from (gRPC runs all of one connection's arrivals on one completion queue).
class WorkPool {
 public:
  // A unit of work; items are linked through `next_`, so queuing one allocates nothing.
  class Item {
   public:
    virtual ~Item() = default;
    // Runs on a pool thread; the item may delete itself.
    virtual void Run() = 0;

   private:
    friend class WorkPool;
    Item* next_ = nullptr;
  };

  // Starts `threads` (at least 1) threads.
  explicit WorkPool(int threads);
  // Shutdown, if it has not run.
  ~WorkPool();

  // Queues `item`, which must not be queued already. Any thread.
  void Submit(Item* item);
  // Queues `items` in order, under one lock. Any thread.
  void Submit(const std::vector<Item*>& items);

  // Runs every item queued, then joins the threads; items submitted afterwards are not run.
  // Idempotent; any thread but a pool thread.
  void Shutdown();

 private:
  void Loop();

  base::Mutex mu_;
  base::CondVar wake_;
  Item* head_ ABSL_GUARDED_BY(mu_) = nullptr;  // the next item to run
  Item* tail_ ABSL_GUARDED_BY(mu_) = nullptr;
  size_t idle_ ABSL_GUARDED_BY(mu_) = 0;  // threads waiting for work
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace model_server::server
