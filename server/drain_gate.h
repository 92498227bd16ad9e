#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace model_server::server {

// How long no EvaluateModel call may arrive or be in flight before the drain stops gRPC, where
// the drain cannot close the connections itself (ServerSockets found no listener): longer than a
// closed-loop client takes to send its next call after an answer, shorter than kRetryPushback.
inline constexpr std::chrono::milliseconds kDrainQuietPeriod{200};

// How long a call refused by the drain asks gRPC retry policies to wait before retrying
// (trailing metadata grpc-retry-pushback-ms): well past the time the drain takes to close the
// connections once the accepted calls are done, so that the retry finds the connection closed
// (and goes to another replica), not this server's last moments.
inline constexpr std::chrono::milliseconds kRetryPushback{1000};

// Admits EvaluateModel and ModelInfer calls until the drain closes it, and tells the drain when
// the calls it admitted are done.
//
// Why: once gRPC 1.51's Server::Shutdown has started, every stream that reaches the server is
// dropped without a status ("zombified"), and its client sees CANCELLED. So the drain refuses
// calls itself (UNAVAILABLE, which clients retry), waits until every call it admitted has been
// answered, and only then stops new connections and closes the open ones (ServerSockets), so
// that no stream can reach gRPC's Shutdown. docs/RELIABILITY.md ("Drain") has the measurements.
// Thread-safe.
class DrainGate {
 public:
  // A call has arrived (completion-queue thread). Returns whether it is admitted: false once
  // closed (refuse the call). Either way the call counts as in flight until Done.
  bool Arrive() {
    // Counted as admitted before the gate is read, so that WaitForAdmitted, which reads the
    // count after Close, cannot miss a call that saw the gate open (both sequentially
    // consistent).
    admitted_in_flight_.fetch_add(1);
    if (!closed_.load()) {
      admitted_.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    refused_in_flight_.fetch_add(1);
    admitted_in_flight_.fetch_sub(1);
    refused_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  // gRPC is done with a call counted by Arrive, which returned `admitted`: its status has been
  // sent, or its client has gone (any thread).
  void Done(bool admitted) {
    if (admitted) {
      admitted_in_flight_.fetch_sub(1);
    } else {
      refused_in_flight_.fetch_sub(1);
    }
  }

  // Every call that arrives from now on is refused.
  void Close() { closed_.store(true); }

  // After Close: blocks until no admitted call is in flight, or until `deadline`. Returns
  // whether they were all done. Refused calls may keep arriving meanwhile.
  bool WaitForAdmitted(std::chrono::steady_clock::time_point deadline) const;

  // Blocks until no call at all is in flight, or until `deadline`. Returns whether none was.
  bool WaitForNone(std::chrono::steady_clock::time_point deadline) const;

  // After Close: blocks until no call is in flight and none has arrived for `quiet`, or until
  // `deadline`. Returns whether the quiet came.
  bool WaitForQuiet(std::chrono::milliseconds quiet,
                    std::chrono::steady_clock::time_point deadline) const;

  // Calls refused since Close.
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  // Calls admitted since the server started.
  uint64_t admitted() const { return admitted_.load(std::memory_order_relaxed); }
  // Calls admitted and not yet Done.
  int64_t admitted_in_flight() const { return admitted_in_flight_.load(); }
  // Calls counted by Arrive and not yet Done.
  int64_t in_flight() const { return admitted_in_flight_.load() + refused_in_flight_.load(); }

 private:
  std::atomic<bool> closed_{false};
  std::atomic<int64_t> admitted_in_flight_{0};
  std::atomic<int64_t> refused_in_flight_{0};
  std::atomic<uint64_t> admitted_{0};
  std::atomic<uint64_t> refused_{0};
};

}  // namespace model_server::server
