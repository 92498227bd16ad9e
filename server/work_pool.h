#pragma once

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

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

  std::mutex mu_;
  std::condition_variable wake_;
  Item* head_ = nullptr;   // guarded by mu_; the next item to run
  Item* tail_ = nullptr;   // guarded by mu_
  size_t idle_ = 0;        // guarded by mu_; threads waiting for work
  bool stopping_ = false;  // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace model_server::server
