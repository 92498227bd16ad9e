#pragma once

// The response cache (Triton's --cache-config local,size=BYTES): answers of earlier requests,
// by a key the caller makes of everything that decides the answer, bounded in bytes, least
// recently used out first. Knows nothing of tensors or protocols: keys and values are bytes.

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/mutex.h"

namespace model_server::batching {

class ResponseCache {
 public:
  // Bytes an entry costs beyond its key and value (list and hash-table nodes, the value's
  // control block): counted against the capacity so that many small entries stay bounded too.
  static constexpr size_t kEntryOverhead = 128;

  // What the cache holds and has done, for metrics.
  struct Stats {
    size_t capacity_bytes = 0;
    size_t bytes = 0;  // keys, values and kEntryOverhead per entry
    size_t entries = 0;
    uint64_t insertions = 0;
    uint64_t evictions = 0;      // entries dropped to make room
    uint64_t invalidations = 0;  // entries dropped because their owner went away
  };

  // Holds at most `capacity_bytes` (see Stats::bytes); 0 holds nothing.
  explicit ResponseCache(size_t capacity_bytes) : capacity_(capacity_bytes) {}

  // The value stored under `key`, which becomes the most recently used; null when there is none.
  // Any thread.
  std::shared_ptr<const std::string> Lookup(std::string_view key);

  // Stores `value` under `key` for `owner` (an id Invalidate drops together), replacing what
  // was there, and drops least recently used entries until the cache fits its capacity again.
  // false when the entry alone is larger than the capacity: it is not stored. Any thread.
  bool Insert(std::string key, std::shared_ptr<const std::string> value, uint64_t owner);

  // Drops every entry of `owner` (a model version that stops serving). Any thread.
  void Invalidate(uint64_t owner);

  Stats stats() const;

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const std::string> value;
    uint64_t owner = 0;
    size_t bytes = 0;
  };
  using Entries = std::list<Entry>;  // most recently used first

  // Removes `entry`; mu_ held.
  void Erase(Entries::iterator entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t capacity_;
  mutable base::Mutex mu_;
  Entries entries_ ABSL_GUARDED_BY(mu_);
  // Keys view the entries' own keys.
  std::unordered_map<std::string_view, Entries::iterator> index_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t insertions_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t evictions_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t invalidations_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace model_server::batching
