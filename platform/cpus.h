#pragma once

namespace model_server::platform {

// CPUs this process may run on (its affinity mask, as taskset and container CPU sets narrow
// it), at least 1. std::thread::hardware_concurrency counts every CPU of the machine instead.
int UsableCpus();

}  // namespace model_server::platform
