#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace model_server::server {

// How long no EvaluateModel call may arrive or be in flight before the drain stops gRPC: longer
// than a closed-loop client takes to send its next call after an answer, shorter than
// kRetryPushback.
inline constexpr std::chrono::milliseconds kDrainQuietPeriod{200};

// How long a call refused by the drain asks gRPC retry policies to wait before retrying
// (trailing metadata grpc-retry-pushback-ms): well past kDrainQuietPeriod, so that the retry
// finds the connection closed (and goes to another replica), not this server's last moments.
inline constexpr std::chrono::milliseconds kRetryPushback{1000};

// Admits EvaluateModel calls until the drain closes it, and tells the drain when calls have
// stopped coming.
//
// Why: once gRPC 1.51's Server::Shutdown has started, every stream that reaches the server is
// dropped without a status ("zombified"), and its client sees CANCELLED. A client learns of the
// shutdown only when it reads the GOAWAY, and a synchronous client (gRPC Python's, C++'s
// blocking stubs) reads nothing while it has no call in flight: an idle client's next call goes
// out on the old connection. So the drain refuses calls itself (UNAVAILABLE, which clients retry
// after a back-off), stops gRPC only once no call is in flight and none has arrived for
// kDrainQuietPeriod, and then closes the connections at once: a later call finds the connection
// closed, which is UNAVAILABLE too. docs/RELIABILITY.md ("Drain") has the measurements.
// Thread-safe.
class DrainGate {
 public:
  // A call has arrived (completion-queue thread). Returns false once closed: refuse the call.
  // Either way the call counts as in flight until Done.
  bool Arrive() {
    in_flight_.fetch_add(1);
    if (!closed_.load()) return true;
    refused_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  // gRPC is done with a call counted by Arrive: its status has been sent, or its client has
  // gone (any thread).
  void Done() { in_flight_.fetch_sub(1); }

  // Every call that arrives from now on is refused.
  void Close() { closed_.store(true); }

  // After Close: blocks until no call is in flight and none has arrived for `quiet`, or until
  // `deadline`. Returns whether the quiet came.
  bool WaitForQuiet(std::chrono::milliseconds quiet,
                    std::chrono::steady_clock::time_point deadline) const;

  // Calls refused since Close.
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  // Calls counted by Arrive and not yet Done.
  int64_t in_flight() const { return in_flight_.load(); }

 private:
  std::atomic<bool> closed_{false};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<uint64_t> refused_{0};
};

}  // namespace model_server::server
