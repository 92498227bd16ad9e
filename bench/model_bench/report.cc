#include "bench/model_bench/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace model_server::bench {
namespace {

struct Quantile {
  const char* name;
  double q;
};
constexpr Quantile kQuantiles[] = {{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"p99.9", 0.999}};

double Ms(int64_t nanos) { return nanos / 1e6; }

std::string Format(const char* format, double value) {
  char text[64];
  std::snprintf(text, sizeof(text), format, value);
  return text;
}

std::string ErrorsText(const LoadResult& result) {
  std::string text;
  for (const auto& [name, count] : result.errors) {
    if (!text.empty()) text += " ";
    text += name + ":" + std::to_string(count);
  }
  return text.empty() ? "0" : text;
}

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out + "\"";
}

std::string HtmlEscape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

absl::Status WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << contents;
  file.close();
  if (!file) return absl::UnavailableError("cannot write " + path);
  return absl::OkStatus();
}

// The latency-throughput plot: x achieved req/s (linear), y latency in ms (log10).
std::string Plot(const std::vector<Step>& steps) {
  constexpr double kWidth = 760, kHeight = 440, kLeft = 70, kRight = 20, kTop = 20, kBottom = 50;
  double max_x = 1, min_y = 1e9, max_y = 0;
  for (const Step& step : steps) {
    max_x = std::max(max_x, step.result.throughput());
    min_y = std::min(min_y, Ms(step.result.latency.Quantile(0.5)));
    max_y = std::max(max_y, Ms(step.result.latency.Quantile(0.99)));
  }
  max_x *= 1.1;
  const double low = std::floor(std::log10(std::max(min_y, 1e-3)));
  const double high = std::max(low + 1, std::ceil(std::log10(std::max(max_y, 1e-3))));
  const auto x_of = [&](double x) { return kLeft + x / max_x * (kWidth - kLeft - kRight); };
  const auto y_of = [&](double ms) {
    const double position = (std::log10(std::max(ms, 1e-3)) - low) / (high - low);
    return kHeight - kBottom - position * (kHeight - kTop - kBottom);
  };
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << kWidth << "' height='" << kHeight
      << "' font-family='sans-serif' font-size='12'>\n"
      << "<rect width='100%' height='100%' fill='white'/>\n";
  for (double decade = low; decade <= high; ++decade) {
    for (const double factor : {1.0, 2.0, 5.0}) {
      const double ms = factor * std::pow(10, decade);
      if (std::log10(ms) > high + 1e-9) break;
      const double y = y_of(ms);
      svg << "<line x1='" << kLeft << "' x2='" << kWidth - kRight << "' y1='" << y << "' y2='" << y
          << "' stroke='" << (factor == 1 ? "#bbb" : "#eee") << "'/>\n"
          << "<text x='" << kLeft - 6 << "' y='" << y + 4 << "' text-anchor='end'>" << ms
          << "</text>\n";
    }
  }
  for (int tick = 0; tick <= 5; ++tick) {
    const double value = max_x * tick / 5.5;
    const double x = x_of(value);
    svg << "<line x1='" << x << "' x2='" << x << "' y1='" << kTop << "' y2='" << kHeight - kBottom
        << "' stroke='#eee'/>\n"
        << "<text x='" << x << "' y='" << kHeight - kBottom + 16 << "' text-anchor='middle'>"
        << Format("%.0f", value) << "</text>\n";
  }
  svg << "<text x='" << (kLeft + kWidth - kRight) / 2 << "' y='" << kHeight - 10
      << "' text-anchor='middle'>achieved throughput (requests/s)</text>\n"
      << "<text x='16' y='" << (kTop + kHeight - kBottom) / 2 << "' text-anchor='middle' "
      << "transform='rotate(-90 16 " << (kTop + kHeight - kBottom) / 2
      << ")'>latency (ms, log scale)</text>\n";
  const struct {
    const char* name;
    double q;
    const char* color;
  } kSeries[] = {{"p50", 0.5, "#1f77b4"}, {"p99", 0.99, "#d62728"}};
  for (const auto& series : kSeries) {
    svg << "<polyline fill='none' stroke-width='2' stroke='" << series.color << "' points='";
    for (const Step& step : steps) {
      svg << x_of(step.result.throughput()) << ","
          << y_of(Ms(step.result.latency.Quantile(series.q))) << " ";
    }
    svg << "'/>\n";
    for (const Step& step : steps) {
      const double x = x_of(step.result.throughput());
      const double y = y_of(Ms(step.result.latency.Quantile(series.q)));
      svg << "<circle cx='" << x << "' cy='" << y << "' r='4' fill='" << series.color << "'/>\n"
          << "<text x='" << x + 6 << "' y='" << y - 6 << "' fill='" << series.color << "'>"
          << HtmlEscape(step.Label()) << "</text>\n";
    }
  }
  svg << "<text x='" << kLeft + 10 << "' y='" << kTop + 14
      << "' fill='#1f77b4'>&#9679; p50</text>\n"
      << "<text x='" << kLeft + 70 << "' y='" << kTop + 14
      << "' fill='#d62728'>&#9679; p99</text>\n"
      << "</svg>\n";
  return svg.str();
}

}  // namespace

std::string Step::Label() const {
  return rate > 0 ? Format("r=%g/s", rate) : "c=" + std::to_string(concurrency);
}

void PrintTable(const std::vector<Step>& steps, std::ostream& out) {
  char line[256];
  std::snprintf(line, sizeof(line), "%-12s %10s %12s %9s %9s %9s %9s %9s  %s\n", "step", "req/s",
                "rows/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors");
  out << line;
  for (const Step& step : steps) {
    const LoadResult& result = step.result;
    const LatencyHistogram& latency = result.latency;
    std::snprintf(line, sizeof(line), "%-12s %10.0f %12.0f %9.3f %9.3f %9.3f %9.3f %9.3f  %s\n",
                  step.Label().c_str(), result.throughput(),
                  result.throughput() * step.rows_per_request, Ms(latency.Quantile(0.5)),
                  Ms(latency.Quantile(0.9)), Ms(latency.Quantile(0.99)),
                  Ms(latency.Quantile(0.999)), Ms(latency.max()), ErrorsText(result).c_str());
    out << line;
  }
  if (steps.empty() || !steps.front().server) return;
  out << "\nserver side (from /metrics):\n";
  std::snprintf(line, sizeof(line), "%-12s %16s %16s %14s\n", "step", "queue ms/req",
                "compute ms/batch", "req/batch");
  out << line;
  for (const Step& step : steps) {
    if (!step.server) continue;
    std::snprintf(line, sizeof(line), "%-12s %16.3f %16.3f %14.1f\n", step.Label().c_str(),
                  step.server->queue_ms_per_request, step.server->compute_ms_per_batch,
                  step.server->requests_per_batch);
    out << line;
  }
}

absl::Status WriteJson(const Settings& settings, const std::vector<Step>& steps,
                       const std::string& path) {
  std::ostringstream json;
  json << "{\"settings\": {";
  for (size_t i = 0; i < settings.size(); ++i) {
    json << (i > 0 ? ", " : "") << JsonString(settings[i].first) << ": "
         << JsonString(settings[i].second);
  }
  json << "},\n \"steps\": [";
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& step = steps[i];
    const LoadResult& result = step.result;
    json << (i > 0 ? ",\n  " : "\n  ") << "{\"concurrency\": " << step.concurrency
         << ", \"rate\": " << step.rate << ", \"ok\": " << result.ok
         << ", \"elapsed_s\": " << result.elapsed_s
         << ", \"throughput_rps\": " << result.throughput()
         << ", \"rows_per_s\": " << result.throughput() * step.rows_per_request
         << ", \"latency_ms\": {";
    for (const Quantile& quantile : kQuantiles) {
      json << JsonString(quantile.name) << ": " << Ms(result.latency.Quantile(quantile.q)) << ", ";
    }
    json << "\"mean\": " << result.latency.mean() / 1e6 << ", \"max\": " << Ms(result.latency.max())
         << "}, \"errors\": {";
    bool first = true;
    for (const auto& [name, count] : result.errors) {
      json << (first ? "" : ", ") << JsonString(name) << ": " << count;
      first = false;
    }
    json << "}";
    bool any_phase = false;
    for (const LatencyHistogram& phase : result.phase_latency) any_phase |= phase.count() > 0;
    if (any_phase) {
      json << ", \"phases\": {";
      for (size_t phase = 0; phase < kBurstPhases; ++phase) {
        const LatencyHistogram& latency = result.phase_latency[phase];
        json << (phase > 0 ? ", " : "")
             << JsonString(BurstPhaseName(static_cast<BurstPhase>(phase)))
             << ": {\"calls\": " << latency.count() << ", \"ok\": " << result.phase_ok[phase]
             << ", \"p50_ms\": " << Ms(latency.Quantile(0.5))
             << ", \"p99_ms\": " << Ms(latency.Quantile(0.99))
             << ", \"max_ms\": " << Ms(latency.max()) << "}";
      }
      json << "}";
    }
    if (step.server) {
      json << ", \"server\": {\"queue_ms_per_request\": " << step.server->queue_ms_per_request
           << ", \"compute_ms_per_batch\": " << step.server->compute_ms_per_batch
           << ", \"requests_per_batch\": " << step.server->requests_per_batch << "}";
    }
    json << "}";
  }
  json << "\n]}\n";
  return WriteFile(path, json.str());
}

void PrintPhases(const std::vector<Step>& steps, std::ostream& out) {
  out << "\nby burst phase (calls sent in a burst, within 1 s after one, later):\n";
  char line[160];
  std::snprintf(line, sizeof(line), "%-12s %-22s %10s %10s %10s %10s %10s\n", "step", "phase",
                "calls", "ok", "p50 ms", "p99 ms", "max ms");
  out << line;
  for (const Step& step : steps) {
    for (size_t phase = 0; phase < kBurstPhases; ++phase) {
      const LatencyHistogram& latency = step.result.phase_latency[phase];
      std::snprintf(line, sizeof(line), "%-12s %-22s %10lld %10lld %10.3f %10.3f %10.3f\n",
                    step.Label().c_str(), BurstPhaseName(static_cast<BurstPhase>(phase)),
                    static_cast<long long>(latency.count()),
                    static_cast<long long>(step.result.phase_ok[phase]), Ms(latency.Quantile(0.5)),
                    Ms(latency.Quantile(0.99)), Ms(latency.max()));
      out << line;
    }
  }
}

absl::Status WriteCsv(const std::vector<Step>& steps, const std::string& path) {
  std::ostringstream csv;
  csv << "concurrency,rate,ok,errors,elapsed_s,throughput_rps,rows_per_s,p50_ms,p90_ms,p99_ms,"
         "p999_ms,max_ms\n";
  for (const Step& step : steps) {
    const LoadResult& result = step.result;
    csv << step.concurrency << "," << step.rate << "," << result.ok << "," << result.error_count()
        << "," << result.elapsed_s << "," << result.throughput() << ","
        << result.throughput() * step.rows_per_request;
    for (const Quantile& quantile : kQuantiles) {
      csv << "," << Ms(result.latency.Quantile(quantile.q));
    }
    csv << "," << Ms(result.latency.max()) << "\n";
  }
  return WriteFile(path, csv.str());
}

absl::Status WriteHtml(const Settings& settings, const std::vector<Step>& steps,
                       const std::string& path) {
  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>model_bench report</title>\n"
       << "<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse}"
       << "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       << "th{background:#f4f4f4}</style></head><body>\n"
       << "<h1>model_bench: latency vs throughput</h1>\n"
       << Plot(steps) << "<h2>Results</h2>\n<table><tr><th>step</th><th>req/s</th>"
       << "<th>rows/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th>"
       << "<th>max ms</th><th>errors</th></tr>\n";
  for (const Step& step : steps) {
    const LoadResult& result = step.result;
    html << "<tr><td>" << HtmlEscape(step.Label()) << "</td><td>"
         << Format("%.0f", result.throughput()) << "</td><td>"
         << Format("%.0f", result.throughput() * step.rows_per_request) << "</td>";
    for (const Quantile& quantile : kQuantiles) {
      html << "<td>" << Format("%.3f", Ms(result.latency.Quantile(quantile.q))) << "</td>";
    }
    html << "<td>" << Format("%.3f", Ms(result.latency.max())) << "</td><td>"
         << HtmlEscape(ErrorsText(result)) << "</td></tr>\n";
  }
  html << "</table>\n<h2>Settings</h2>\n<table>\n";
  for (const auto& [name, value] : settings) {
    html << "<tr><th>" << HtmlEscape(name) << "</th><td>" << HtmlEscape(value) << "</td></tr>\n";
  }
  html << "</table>\n</body></html>\n";
  return WriteFile(path, html.str());
}

}  // namespace model_server::bench
