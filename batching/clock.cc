#include "batching/clock.h"

namespace model_server::batching {
namespace {

class SteadyClock final : public Clock {
 public:
  TimePoint Now() override { return std::chrono::steady_clock::now(); }
  void WaitUntil(base::Mutex& mu, base::CondVar& wake, TimePoint deadline) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    wake.WaitUntil(mu, deadline);
  }
};

}  // namespace

Clock* RealClock() {
  static SteadyClock* const clock = new SteadyClock();  // never destroyed: no exit-time order
  return clock;
}

}  // namespace model_server::batching
