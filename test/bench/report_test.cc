#include "bench/model_bench/report.h"

#include <simdjson.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <string>

namespace model_server::bench {
namespace {

Step MakeStep(int concurrency, int64_t latency_ns, int64_t ok) {
  Step step;
  step.concurrency = concurrency;
  step.rows_per_request = 50;
  for (int64_t i = 0; i < ok; ++i) step.result.latency.Record(latency_ns);
  step.result.ok = ok;
  step.result.elapsed_s = 2;
  return step;
}

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

TEST_CASE("The JSON report holds every step's throughput, latency and errors") {
  std::vector<Step> steps = {MakeStep(1, 1000000, 1000), MakeStep(64, 4000000, 8000)};
  steps[1].result.errors["UNAVAILABLE"] = 3;
  const std::string path = "report_test.json";
  REQUIRE(WriteJson({{"target", "x:1"}}, steps, path).ok());

  simdjson::dom::parser parser;
  simdjson::dom::element root = parser.load(path);
  CHECK(std::string_view(root["settings"]["target"]) == "x:1");
  simdjson::dom::element second = root["steps"].at(1);
  CHECK(int64_t(second["concurrency"]) == 64);
  CHECK(double(second["throughput_rps"]) == 4000);
  CHECK(double(second["rows_per_s"]) == 200000);
  CHECK(double(second["latency_ms"]["p99"]) == Approx(4).epsilon(0.01));
  CHECK(int64_t(second["errors"]["UNAVAILABLE"]) == 3);
}

TEST_CASE("The CSV report has a header and one line per step") {
  const std::string path = "report_test.csv";
  REQUIRE(WriteCsv({MakeStep(1, 1000000, 10), MakeStep(8, 2000000, 40)}, path).ok());
  std::istringstream lines(ReadFile(path));
  std::string header, first, second, extra;
  std::getline(lines, header);
  std::getline(lines, first);
  std::getline(lines, second);
  CHECK(header.rfind("concurrency,rate,ok,errors,", 0) == 0);
  CHECK(first.rfind("1,0,10,0,2,5,250,", 0) == 0);
  CHECK(second.rfind("8,0,40,0,2,20,1000,", 0) == 0);
  CHECK_FALSE(std::getline(lines, extra));
}

TEST_CASE("The HTML report is self-contained and plots both percentiles") {
  const std::string path = "report_test.html";
  REQUIRE(
      WriteHtml({{"target", "<host>"}}, {MakeStep(1, 1000000, 10), MakeStep(8, 2000000, 40)}, path)
          .ok());
  const std::string html = ReadFile(path);
  CHECK(html.find("<svg") != std::string::npos);
  CHECK(html.find("c=8") != std::string::npos);
  CHECK(html.find("&lt;host&gt;") != std::string::npos);  // settings are escaped
  // No fetches: the SVG namespace is the only URL, and it is never loaded.
  std::string stripped = html;
  const std::string svg_namespace = "http://www.w3.org/2000/svg";
  for (size_t at; (at = stripped.find(svg_namespace)) != std::string::npos;) {
    stripped.erase(at, svg_namespace.size());
  }
  for (const char* external : {"http", "<script", "src=", "<link"}) {
    INFO(external);
    CHECK(stripped.find(external) == std::string::npos);
  }
}

TEST_CASE("A report to an unwritable path fails with a status") {
  const absl::Status written = WriteCsv({}, "/nonexistent-dir/x.csv");
  CHECK(written.code() == absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace model_server::bench
