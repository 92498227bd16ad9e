#pragma once

// The classes of a failed forward pass that the layers above a handler act on, carried in the
// handler's absl::Status as a payload (the status code alone is ambiguous: RESOURCE_EXHAUSTED
// also means a full queue, UNAVAILABLE a draining server). The handler classifies; the batch
// executor splits a batch that ran out of memory and stops an instance whose device is lost; the
// server stops serving after a device fault.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"

namespace model_server::handlers {

enum class Fault {
  kNone,         // any other error: the model's own (a bad request, a bug), or none
  kOutOfMemory,  // the forward did not fit in (device) memory; a smaller batch may
  kDeviceLost,   // the device can compute nothing any more (a sticky CUDA error): restart
};

// The payload's type URL; its value is FaultName.
inline constexpr char kFaultPayload[] = "type.model-server/handlers.Fault";

inline const char* FaultName(Fault fault) {
  switch (fault) {
    case Fault::kNone:
      return "none";
    case Fault::kOutOfMemory:
      return "out_of_memory";
    case Fault::kDeviceLost:
      return "device_lost";
  }
  return "none";
}

// RESOURCE_EXHAUSTED with `message`, classed kOutOfMemory.
inline absl::Status OutOfMemoryError(absl::string_view message) {
  absl::Status status = absl::ResourceExhaustedError(message);
  status.SetPayload(kFaultPayload, absl::Cord(FaultName(Fault::kOutOfMemory)));
  return status;
}

// UNAVAILABLE with `message` (a client may retry on another replica), classed kDeviceLost.
inline absl::Status DeviceLostError(absl::string_view message) {
  absl::Status status = absl::UnavailableError(message);
  status.SetPayload(kFaultPayload, absl::Cord(FaultName(Fault::kDeviceLost)));
  return status;
}

// The class of `status`: kNone for OK and for errors without the payload.
inline Fault FaultOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kFaultPayload);
  if (!payload) return Fault::kNone;
  if (*payload == FaultName(Fault::kOutOfMemory)) return Fault::kOutOfMemory;
  if (*payload == FaultName(Fault::kDeviceLost)) return Fault::kDeviceLost;
  return Fault::kNone;
}

// `status` with `prefix` before its message, its code and class kept.
inline absl::Status WithContext(const absl::Status& status, absl::string_view prefix) {
  absl::Status result(status.code(), std::string(prefix) + std::string(status.message()));
  status.ForEachPayload(
      [&](absl::string_view url, const absl::Cord& payload) { result.SetPayload(url, payload); });
  return result;
}

}  // namespace model_server::handlers
