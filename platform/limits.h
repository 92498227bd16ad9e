#pragma once

#include <cstdint>

#include "absl/status/statusor.h"

namespace model_server::platform {

struct OpenFileLimit {
  // The soft limit (what the kernel enforces) before and after the call, and the hard limit.
  uint64_t soft_before = 0;
  uint64_t soft_after = 0;
  uint64_t hard = 0;
};

// Raises this process's soft RLIMIT_NOFILE to its hard limit (at most fs.nr_open, which an
// "unlimited" hard limit stands for). Every accepted connection is a file descriptor; a common
// default soft limit of 1024 lets about a thousand connections exhaust it, and gRPC 1.51 then
// stops accepting for good (CVE-2023-4785). Errors: INTERNAL when getrlimit/setrlimit fail.
absl::StatusOr<OpenFileLimit> RaiseOpenFileLimit();

}  // namespace model_server::platform
