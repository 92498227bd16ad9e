#include "platform/limits.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace model_server::platform {
namespace {

// The kernel's ceiling for RLIMIT_NOFILE; 1048576 when it cannot be read (the kernel default).
uint64_t KernelOpenFileCeiling() {
  std::ifstream nr_open("/proc/sys/fs/nr_open");
  uint64_t ceiling = 0;
  return nr_open >> ceiling && ceiling > 0 ? ceiling : 1048576;
}

}  // namespace

absl::StatusOr<OpenFileLimit> RaiseOpenFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(absl::StrCat("getrlimit(RLIMIT_NOFILE): ", strerror(errno)));
  }
  OpenFileLimit result{limit.rlim_cur, limit.rlim_cur, limit.rlim_max};
  rlim_t target = limit.rlim_max;
  if (target == RLIM_INFINITY) target = KernelOpenFileCeiling();
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= target) return result;
  limit.rlim_cur = target;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(
        absl::StrCat("setrlimit(RLIMIT_NOFILE, ", target, "): ", strerror(errno)));
  }
  result.soft_after = target;
  return result;
}

}  // namespace model_server::platform
