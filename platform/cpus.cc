#include "platform/cpus.h"

#include <sched.h>

#include <algorithm>

namespace model_server::platform {

int UsableCpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

}  // namespace model_server::platform
