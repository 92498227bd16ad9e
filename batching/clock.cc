#include "batching/clock.h"

namespace model_server::batching {
namespace {

class SteadyClock final : public Clock {
 public:
  TimePoint Now() override { return std::chrono::steady_clock::now(); }
  void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& wake,
                 TimePoint deadline) override {
    wake.wait_until(lock, deadline);
  }
};

}  // namespace

Clock* RealClock() {
  static SteadyClock* const clock = new SteadyClock();  // never destroyed: no exit-time order
  return clock;
}

}  // namespace model_server::batching
