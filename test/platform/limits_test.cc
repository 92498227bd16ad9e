#include "platform/limits.h"

#include <sys/resource.h>

#include <catch2/catch.hpp>

namespace model_server::platform {
namespace {

// Restores this process's open files limit when the test ends.
class SavedLimit {
 public:
  SavedLimit() { REQUIRE(getrlimit(RLIMIT_NOFILE, &saved_) == 0); }
  ~SavedLimit() { setrlimit(RLIMIT_NOFILE, &saved_); }
  const rlimit& saved() const { return saved_; }

 private:
  rlimit saved_{};
};

TEST_CASE("the soft open files limit is raised to the hard limit") {
  SavedLimit saved;
  INFO("the hard limit must be above 64 for this test to lower the soft one below it");
  REQUIRE((saved.saved().rlim_max == RLIM_INFINITY || saved.saved().rlim_max > 64));
  rlimit lowered = saved.saved();
  lowered.rlim_cur = 64;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &lowered) == 0);

  absl::StatusOr<OpenFileLimit> raised = RaiseOpenFileLimit();
  REQUIRE(raised.ok());
  CHECK(raised->soft_before == 64);
  CHECK(raised->hard == saved.saved().rlim_max);
  CHECK(raised->soft_after > 64);
  if (saved.saved().rlim_max != RLIM_INFINITY) CHECK(raised->soft_after == saved.saved().rlim_max);
  rlimit now{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &now) == 0);
  CHECK(now.rlim_cur == raised->soft_after);

  // Already at the hard limit: nothing changes.
  absl::StatusOr<OpenFileLimit> again = RaiseOpenFileLimit();
  REQUIRE(again.ok());
  CHECK(again->soft_before == again->soft_after);
  CHECK(again->soft_after == raised->soft_after);
}

}  // namespace
}  // namespace model_server::platform
