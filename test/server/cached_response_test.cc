// The response cache's values (server/cached_response): what is written reads back, each
// output's data aligned for its elements.

#include "server/cached_response.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace model_server::server {
namespace {

TEST_CASE("a cached response reads back, each output aligned for its elements", "[cache]") {
  // An odd number of bytes first, so that unpadded data after it would be misaligned.
  const std::vector<uint8_t> flags = {1, 0, 1};
  const std::vector<float> scores = {0.5f, -1.0f, 2.0f, 4.0f, 8.0f, 16.0f};
  const std::vector<int64_t> ids = {7, 8, 9};
  std::vector<handlers::OutputTensor> outputs(3);
  outputs[0] = {handlers::DataType::kUint8, {3}, reinterpret_cast<const char*>(flags.data())};
  outputs[1] = {handlers::DataType::kFp32, {3, 2}, reinterpret_cast<const char*>(scores.data())};
  outputs[2] = {handlers::DataType::kInt64, {3}, reinterpret_cast<const char*>(ids.data())};
  CachedResponseWriter writer;
  // Rows 1..2 of the batch are the request's rows 0..1, then row 0 is its row 2.
  writer.Add(outputs, /*batches=*/true, /*request_rows=*/3, /*batch_row=*/1, /*task_row=*/0, 2);
  writer.Add(outputs, true, 3, /*batch_row=*/0, /*task_row=*/2, 1);
  const std::string value = writer.Finish();

  const auto read = ReadCachedResponse(value);
  REQUIRE(read.ok());
  REQUIRE(read->size() == 3);
  CHECK((*read)[0].type == handlers::DataType::kUint8);
  CHECK((*read)[1].shape == handlers::Dims{3, 2});
  for (const handlers::OutputTensor& output : *read) {
    CHECK(reinterpret_cast<uintptr_t>(output.data) % 8 == 0);
  }
  CHECK(std::vector<uint8_t>((*read)[0].data, (*read)[0].data + 3) ==
        std::vector<uint8_t>{0, 1, 1});
  std::vector<float> read_scores(6);
  std::memcpy(read_scores.data(), (*read)[1].data, sizeof(float) * 6);
  CHECK(read_scores == std::vector<float>{2.0f, 4.0f, 8.0f, 16.0f, 0.5f, -1.0f});
  std::vector<int64_t> read_ids(3);
  std::memcpy(read_ids.data(), (*read)[2].data, sizeof(int64_t) * 3);
  CHECK(read_ids == std::vector<int64_t>{8, 9, 7});
}

TEST_CASE("a value the writer did not write is refused", "[cache]") {
  CHECK_FALSE(ReadCachedResponse("").ok());
  CHECK_FALSE(ReadCachedResponse(std::string("\x01\x00\x00\x00", 4)).ok());
}

}  // namespace
}  // namespace model_server::server
