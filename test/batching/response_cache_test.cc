// The response cache: hits and misses, the byte bound under a stream of distinct entries (least
// recently used out first), and invalidation by owner.

#include "batching/response_cache.h"

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace model_server::batching {
namespace {

std::shared_ptr<const std::string> Value(size_t bytes, char fill = 'v') {
  return std::make_shared<const std::string>(bytes, fill);
}

// What an entry with a key of `key_bytes` and a value of `value_bytes` costs.
constexpr size_t Cost(size_t key_bytes, size_t value_bytes) {
  return key_bytes + value_bytes + ResponseCache::kEntryOverhead;
}

TEST_CASE("a stored value is found by its exact key only", "[response_cache]") {
  ResponseCache cache(4096);
  CHECK(cache.Lookup("a") == nullptr);
  REQUIRE(cache.Insert("key-1", Value(10, 'x'), 1));
  const auto hit = cache.Lookup("key-1");
  REQUIRE(hit != nullptr);
  CHECK(*hit == std::string(10, 'x'));
  CHECK(cache.Lookup("key-2") == nullptr);
  CHECK(cache.Lookup("key-") == nullptr);
  CHECK(cache.stats().entries == 1);
  CHECK(cache.stats().bytes == Cost(5, 10));
}

TEST_CASE("the cache never exceeds its size under a stream of distinct entries",
          "[response_cache]") {
  const size_t capacity = 10 * Cost(8, 100);
  ResponseCache cache(capacity);
  for (int i = 0; i < 1000; ++i) {
    char key[9];
    std::snprintf(key, sizeof(key), "k%07d", i);
    REQUIRE(cache.Insert(key, Value(100), 1));
    REQUIRE(cache.stats().bytes <= capacity);
  }
  const ResponseCache::Stats stats = cache.stats();
  CHECK(stats.entries == 10);
  CHECK(stats.bytes == capacity);
  CHECK(stats.insertions == 1000);
  CHECK(stats.evictions == 990);
  CHECK(cache.Lookup("k0000999") != nullptr);
  CHECK(cache.Lookup("k0000989") == nullptr);
}

TEST_CASE("the least recently used entry goes first; a lookup makes an entry recent",
          "[response_cache]") {
  ResponseCache cache(3 * Cost(1, 10));
  REQUIRE(cache.Insert("a", Value(10), 1));
  REQUIRE(cache.Insert("b", Value(10), 1));
  REQUIRE(cache.Insert("c", Value(10), 1));
  REQUIRE(cache.Lookup("a") != nullptr);  // b is now the least recently used
  REQUIRE(cache.Insert("d", Value(10), 1));
  CHECK(cache.Lookup("b") == nullptr);
  CHECK(cache.Lookup("a") != nullptr);
  CHECK(cache.Lookup("c") != nullptr);
  CHECK(cache.Lookup("d") != nullptr);
}

TEST_CASE("an entry larger than the cache is not kept; a key stored again is replaced",
          "[response_cache]") {
  ResponseCache cache(Cost(1, 100));
  CHECK_FALSE(cache.Insert("a", Value(101), 1));
  CHECK(cache.stats().entries == 0);
  REQUIRE(cache.Insert("a", Value(50, '1'), 1));
  REQUIRE(cache.Insert("a", Value(60, '2'), 1));
  CHECK(*cache.Lookup("a") == std::string(60, '2'));
  CHECK(cache.stats().bytes == Cost(1, 60));
  CHECK(cache.stats().evictions == 0);
  ResponseCache none(0);
  CHECK_FALSE(none.Insert("a", Value(0), 1));
}

TEST_CASE("invalidating an owner drops its entries only", "[response_cache]") {
  ResponseCache cache(4096);
  REQUIRE(cache.Insert("m1-a", Value(10), 1));
  REQUIRE(cache.Insert("m2-a", Value(10), 2));
  REQUIRE(cache.Insert("m1-b", Value(10), 1));
  cache.Invalidate(1);
  CHECK(cache.Lookup("m1-a") == nullptr);
  CHECK(cache.Lookup("m1-b") == nullptr);
  CHECK(cache.Lookup("m2-a") != nullptr);
  const ResponseCache::Stats stats = cache.stats();
  CHECK(stats.entries == 1);
  CHECK(stats.bytes == Cost(4, 10));
  CHECK(stats.invalidations == 2);
}

TEST_CASE("a value stays valid for its reader after its entry is evicted", "[response_cache]") {
  ResponseCache cache(Cost(1, 10));
  REQUIRE(cache.Insert("a", Value(10, 'a'), 1));
  const auto held = cache.Lookup("a");
  REQUIRE(cache.Insert("b", Value(10, 'b'), 1));  // evicts a
  CHECK(cache.Lookup("a") == nullptr);
  CHECK(*held == std::string(10, 'a'));
}

TEST_CASE("concurrent lookups and inserts keep the bound", "[response_cache]") {
  const size_t capacity = 50 * Cost(6, 32);
  ResponseCache cache(capacity);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::string key = std::to_string(t) + std::to_string(100000 + i % 300);
        if (cache.Lookup(key) == nullptr) cache.Insert(key, Value(32), t);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(cache.stats().bytes <= capacity);
  CHECK(cache.stats().entries <= 50);
}

}  // namespace
}  // namespace model_server::batching
