#pragma once

#include <chrono>
#include <thread>

namespace model_server::testing_support {

// Polls `condition` until it holds or `timeout` passes; returns whether it held. For states a
// test cannot be notified of (another process's or library's), instead of sleeping and hoping.
template <typename Condition>
bool WaitFor(Condition condition, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace model_server::testing_support
