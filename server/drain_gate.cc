#include "server/drain_gate.h"

#include <thread>

namespace model_server::server {
namespace {

// The waits poll: they run once per process, and a refused call is answered within
// microseconds, so only a counter of arrivals (not a snapshot of unanswered calls) can show one.
constexpr std::chrono::milliseconds kPoll{5};

template <typename Done>
bool PollUntil(Done done, std::chrono::steady_clock::time_point deadline) {
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kPoll);
  }
  return true;
}

}  // namespace

bool DrainGate::WaitForAdmitted(std::chrono::steady_clock::time_point deadline) const {
  return PollUntil([this] { return admitted_in_flight() == 0; }, deadline);
}

bool DrainGate::WaitForNone(std::chrono::steady_clock::time_point deadline) const {
  return PollUntil([this] { return in_flight() == 0; }, deadline);
}

bool DrainGate::WaitForQuiet(std::chrono::milliseconds quiet,
                             std::chrono::steady_clock::time_point deadline) const {
  uint64_t seen = refused();
  auto quiet_since = std::chrono::steady_clock::now();
  while (true) {
    const auto now = std::chrono::steady_clock::now();
    const uint64_t arrivals = refused();
    if (arrivals != seen || in_flight() > 0) {
      seen = arrivals;
      quiet_since = now;
    } else if (now - quiet_since >= quiet) {
      return true;
    }
    if (now >= deadline) return false;
    std::this_thread::sleep_for(kPoll);
  }
}

}  // namespace model_server::server
