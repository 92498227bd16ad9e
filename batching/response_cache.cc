#include "batching/response_cache.h"

#include <utility>

namespace model_server::batching {

std::shared_ptr<const std::string> ResponseCache::Lookup(std::string_view key) {
  base::MutexLock lock(mu_);
  const auto found = index_.find(key);
  if (found == index_.end()) return nullptr;
  entries_.splice(entries_.begin(), entries_, found->second);
  return found->second->value;
}

bool ResponseCache::Insert(std::string key, std::shared_ptr<const std::string> value,
                           uint64_t owner) {
  const size_t bytes = key.size() + value->size() + kEntryOverhead;
  base::MutexLock lock(mu_);
  if (const auto found = index_.find(key); found != index_.end()) Erase(found->second);
  if (bytes > capacity_) return false;
  while (bytes_ + bytes > capacity_) {
    Erase(std::prev(entries_.end()));
    ++evictions_;
  }
  entries_.push_front(Entry{std::move(key), std::move(value), owner, bytes});
  index_.emplace(entries_.front().key, entries_.begin());
  bytes_ += bytes;
  ++insertions_;
  return true;
}

void ResponseCache::Invalidate(uint64_t owner) {
  base::MutexLock lock(mu_);
  for (auto entry = entries_.begin(); entry != entries_.end();) {
    const auto next = std::next(entry);
    if (entry->owner == owner) {
      Erase(entry);
      ++invalidations_;
    }
    entry = next;
  }
}

ResponseCache::Stats ResponseCache::stats() const {
  base::MutexLock lock(mu_);
  return Stats{capacity_, bytes_, entries_.size(), insertions_, evictions_, invalidations_};
}

void ResponseCache::Erase(Entries::iterator entry) {
  index_.erase(entry->key);
  bytes_ -= entry->bytes;
  entries_.erase(entry);
}

}  // namespace model_server::batching
