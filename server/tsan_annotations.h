#pragma once

// Happens-before edges TSan cannot see: a completion-queue tag handed from the thread that arms
// an async operation to the thread whose Next() returns it passes through gRPC's uninstrumented
// synchronization. No-ops unless built with -fsanitize=thread.

#if defined(__SANITIZE_THREAD__)
#define MODEL_SERVER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MODEL_SERVER_TSAN 1
#endif
#endif

#ifdef MODEL_SERVER_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace model_server::server {

// Call on the arming thread just before an async operation that may complete on another thread.
inline void TagHandedOff([[maybe_unused]] void* tag) {
#ifdef MODEL_SERVER_TSAN
  __tsan_release(tag);
#endif
}

// Call on the polling thread as soon as Next() returns `tag`.
inline void TagReceived([[maybe_unused]] void* tag) {
#ifdef MODEL_SERVER_TSAN
  __tsan_acquire(tag);
#endif
}

}  // namespace model_server::server
