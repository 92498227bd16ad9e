// protocol::DecodeRequest: the seed's request JSON straight into the request's float buffers.
//
// One pass over the document validates all of it (strict JSON, as simdjson's DOM did, plus NaN,
// Infinity and -Infinity as Python's json writes them) and records, for the few paths the model
// needs, the first occurrence of each: analyticSettings.modelParams.{input,output}_var_order,
// analyticSettings.tunableParams.bias_weight_array and every column of inputs. Numbers are parsed
// once, with fast_float, as they are met; a second, short step checks the recorded values
// against the model and lays the input columns out row-major. The error messages are the ones
// docs/RELIABILITY.md lists. test/fuzz/decode_fuzzer.cc checks this decoder against the DOM
// decoder it replaced.

#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fast_float/fast_float.h"
#include "protocol/seed_json.h"

namespace model_server::protocol {
namespace {

using handlers::InferenceRequest;
using handlers::InputTensor;
using handlers::ModelSignature;
using handlers::SeedSignature;

// What a recorded path held.
enum class Kind : uint8_t { kAbsent, kObject, kArray, kOther };

// An array the decoder reads numbers from (an input column, bias_weight_array). Its numbers are
// stored in Scratch::numbers, in order; elements that are not numbers are stored as 0 and the
// first of them is remembered, for the error that names it.
struct NumberArray {
  Kind kind = Kind::kAbsent;
  size_t begin = 0;  // index of its first element in Scratch::numbers
  size_t size = 0;
  std::optional<size_t> first_non_number;
};

// input_var_order or output_var_order.
struct NameList {
  Kind kind = Kind::kAbsent;
  bool all_strings = true;
  std::vector<std::string> names;

  void Reset() {  // keeps the vector's room for the next request
    kind = Kind::kAbsent;
    all_strings = true;
    names.clear();
  }
};

struct Column {
  std::string_view key;  // raw text between the quotes
  bool escaped = false;  // key holds backslash escapes
  NumberArray values;
};

// What one decode records; reused by each thread, so steady-state decoding allocates only the
// request itself.
struct Scratch {
  // Every recorded number, in document order; room for the most a payload can hold (each number
  // takes a character and a separator), so the hot loop writes without checking.
  std::unique_ptr<float[]> numbers;
  size_t numbers_room = 0;
  size_t numbers_used = 0;
  std::vector<Column> columns;
  NameList input_names;
  NameList output_names;
  NumberArray params;
  Kind settings = Kind::kAbsent;
  Kind model_params = Kind::kAbsent;
  Kind tunable = Kind::kAbsent;
  Kind inputs = Kind::kAbsent;
  std::string unescaped;  // scratch for a key with escapes

  void Reset(size_t payload_size) {
    const size_t most = payload_size / 2 + 1;
    if (numbers_room < most) {
      numbers_room = std::max(most, 2 * numbers_room);
      numbers.reset(new float[numbers_room]);
    }
    numbers_used = 0;
    columns.clear();
    input_names.Reset();
    output_names.Reset();
    params = NumberArray();
    settings = model_params = tunable = inputs = Kind::kAbsent;
  }
};

absl::Status NotJson(std::string_view why, size_t offset) {
  return absl::InvalidArgumentError(
      absl::StrCat("request is not valid JSON: ", std::string(why), " at byte ", offset));
}

// JSON's whitespace: space, tab, line feed, carriage return.
constexpr bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
constexpr bool IsDigit(char c) { return c >= '0' && c <= '9'; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void AppendUtf8(uint32_t code_point, std::string* out) {
  if (code_point < 0x80) {
    out->push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

// The value of a string's raw text (between its quotes, already validated by the parser).
void Unescape(std::string_view raw, std::string* out) {
  out->clear();
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '\\') {
      out->push_back(raw[i]);
      continue;
    }
    const char escape = raw[++i];
    switch (escape) {
      case 'b':
        out->push_back('\b');
        break;
      case 'f':
        out->push_back('\f');
        break;
      case 'n':
        out->push_back('\n');
        break;
      case 'r':
        out->push_back('\r');
        break;
      case 't':
        out->push_back('\t');
        break;
      case 'u': {
        uint32_t code_point = 0;
        for (int k = 1; k <= 4; ++k) code_point = code_point * 16 + HexValue(raw[i + k]);
        i += 4;
        if (code_point >= 0xD800 && code_point < 0xDC00) {  // a high surrogate, then its low one
          uint32_t low = 0;
          for (int k = 3; k <= 6; ++k) low = low * 16 + HexValue(raw[i + k]);
          i += 6;
          code_point = 0x10000 + ((code_point - 0xD800) << 10) + (low - 0xDC00);
        }
        AppendUtf8(code_point, out);
        break;
      }
      default:  // '"', '\\', '/'
        out->push_back(escape);
    }
  }
}

// Whether the first bytes of `chunk` (eight, little-endian) are ASCII digits: how many of them
// lead (0..8), and the value of the chunk's leading `count` digits.
inline int LeadingDigits(uint64_t chunk) {
  const uint64_t values = chunk - 0x3030303030303030;  // borrows only past the first non-digit
  const uint64_t non_digits = (values | (values + 0x7676767676767676)) & 0x8080808080808080;
  return non_digits == 0 ? 8 : __builtin_ctzll(non_digits) >> 3;
}
inline uint64_t LeadingDigitsValue(uint64_t chunk, int count) {
  chunk = (chunk & 0x0F0F0F0F0F0F0F0F) << (64 - 8 * count);  // the digits, zeros before them
  chunk = (chunk * 2561) >> 8;
  chunk = ((chunk & 0x00FF00FF00FF00FF) * 6553601) >> 16;
  return ((chunk & 0x0000FFFF0000FFFF) * 42949672960001) >> 32;
}

inline constexpr uint64_t kUint64PowersOfTen[] = {1,      10,      100,      1000,     10000,
                                                  100000, 1000000, 10000000, 100000000};

// Adds the run of digits at `p` to `mantissa` (exactly while `count`, the digits taken, stays
// within 19) and returns the end of the run. Eight bytes at a time where the input has them.
inline const char* TakeDigits(const char* p, const char* end, uint64_t* mantissa, int* count) {
  while (end - p >= 8) {
    uint64_t chunk;
    std::memcpy(&chunk, p, 8);
    const int digits = LeadingDigits(chunk);
    if (digits == 0) return p;
    *mantissa = *mantissa * kUint64PowersOfTen[digits] + LeadingDigitsValue(chunk, digits);
    *count += digits;
    p += digits;
    if (digits < 8) return p;
  }
  for (; p != end && IsDigit(*p); ++p) {
    *mantissa = *mantissa * 10 + static_cast<uint64_t>(*p - '0');
    ++*count;
  }
  return p;
}

// Infinity after a sign, or NaN, Infinity at `p`: the end of the token, or null.
[[gnu::noinline]] const char* ScanNonFinite(const char* p, const char* end, bool negative,
                                            float* value) {
  if (end - p >= 8 && std::memcmp(p, "Infinity", 8) == 0) {
    *value =
        negative ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity();
    return p + 8;
  }
  if (!negative && end - p >= 3 && std::memcmp(p, "NaN", 3) == 0) {
    *value = std::numeric_limits<float>::quiet_NaN();
    return p + 3;
  }
  return nullptr;
}

// An integer's digits (no leading zeros), exactly: within int64 or uint64, through an int64
// when negative as simdjson stored it ("-0" is 0, not -0.0), then to double, then to float.
[[gnu::noinline]] bool IntegerValue(bool negative, const char* digits, const char* end,
                                    float* value) {
  if (end - digits > 20) return false;
  uint64_t magnitude = 0;
  for (const char* d = digits; d != end; ++d) {
    const uint64_t digit = static_cast<uint64_t>(*d - '0');
    if (magnitude > (std::numeric_limits<uint64_t>::max() - digit) / 10) return false;
    magnitude = magnitude * 10 + digit;
  }
  double exact;
  if (negative) {
    if (magnitude > uint64_t{1} << 63) return false;
    exact = magnitude == 0 ? 0.0 : static_cast<double>(-static_cast<int64_t>(magnitude - 1) - 1);
  } else {
    exact = static_cast<double>(magnitude);
  }
  *value = static_cast<float>(exact);
  return true;
}

// The float of the double the (valid) JSON number text denotes, by fast_float; false when the
// double is out of range. The slow path, kept out of ScanNumber's frame.
[[gnu::noinline]] bool ExactValue(const char* start, const char* end, float* value) {
  double exact;
  const fast_float::from_chars_result parsed = fast_float::from_chars(start, end, exact);
  if (parsed.ptr != end || std::isinf(exact)) return false;
  *value = static_cast<float>(exact);
  return true;
}

// The float of mantissa * 10^exponent (mantissa exact, |exponent| <= 22) as the correctly
// rounded double rounds it, or false when that takes the exact path. In double arithmetic the
// result is exact when both factors are (Clinger's fast path), else within 2 ulps of the correctly
// rounded double; then the float is known once every double within a safe margin of the result
// rounds to the same float.
inline bool NearFloat(uint64_t mantissa, int exponent, bool negative, float* value) {
  static constexpr double kPowersOfTen[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                            1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  double estimate = static_cast<double>(mantissa);
  estimate = exponent < 0 ? estimate / kPowersOfTen[-exponent] : estimate * kPowersOfTen[exponent];
  if (mantissa <= (uint64_t{1} << 53)) {
    *value = static_cast<float>(negative ? -estimate : estimate);
    return true;
  }
  const double margin = estimate * 0x1p-49;  // 8 ulps of the estimate
  const float low = static_cast<float>(estimate - margin);
  if (low != static_cast<float>(estimate + margin)) return false;
  *value = negative ? -low : low;
  return true;
}

// A JSON number at `p` (or NaN, Infinity, -Infinity, as Python's json writes them) as a float:
// the double the text denotes, correctly rounded as simdjson read it, then rounded to float.
// Integers must fit int64 or uint64 and other numbers a double, as simdjson required. Returns
// the end of the number, or null with `error` set.
[[gnu::noinline]] const char* ScanAnyNumber(const char* p, const char* end, float* value,
                                            const char** error) {
  const char* const start = p;
  const bool negative = *p == '-';
  if (negative) ++p;
  if (p == end) {
    *error = "bad number";
    return nullptr;
  }
  if (!IsDigit(*p)) {
    const char* const token_end = ScanNonFinite(p, end, negative, value);
    if (token_end == nullptr) *error = "bad number";
    return token_end;
  }
  // The digits, once: the value is mantissa * 10^exponent while at most 19 were taken.
  uint64_t mantissa = 0;
  int digit_count = 0;
  const char* const digits = p;
  if (*p == '0') {
    ++p;
  } else {
    p = TakeDigits(p, end, &mantissa, &digit_count);
  }
  const char* const integer_end = p;
  const int integer_digits = digit_count;
  int64_t exponent = 0;
  bool integer = true;
  if (p != end && *p == '.') {
    ++p;
    if (p == end || !IsDigit(*p)) {
      *error = "bad number";
      return nullptr;
    }
    p = TakeDigits(p, end, &mantissa, &digit_count);
    exponent = -(digit_count - integer_digits);
    integer = false;
  }
  if (p != end && (*p == 'e' || *p == 'E')) {
    ++p;
    const bool negative_exponent = p != end && *p == '-';
    if (p != end && (*p == '+' || *p == '-')) ++p;
    if (p == end || !IsDigit(*p)) {
      *error = "bad number";
      return nullptr;
    }
    int64_t written = 0;
    for (; p != end && IsDigit(*p); ++p) {
      if (written < 1000000) written = written * 10 + (*p - '0');  // saturates: out of range
    }
    exponent += negative_exponent ? -written : written;
    integer = false;
  }
  if (integer) {
    if (!IntegerValue(negative, digits, integer_end, value)) {
      *error = "integer out of range";
      return nullptr;
    }
    return p;
  }
  if (mantissa == 0 && digit_count <= 19) {
    *value = negative ? -0.0f : 0.0f;
    return p;
  }
  if (digit_count <= 19 && exponent >= -22 && exponent <= 22 &&
      NearFloat(mantissa, static_cast<int>(exponent), negative, value)) {
    return p;
  }
  if (!ExactValue(start, p, value)) {
    *error = "number out of range";
    return nullptr;
  }
  return p;
}

// ScanAnyNumber, with the numbers Python's json writes for most floats taken inline: a sign,
// 1 to 7 integer digits, a point and more digits, at most 19 significant in all, with
// the document going on for at least 40 bytes (the loads below read ahead). Anything else takes
// ScanAnyNumber.
inline const char* ScanNumber(const char* p, const char* end, float* value, const char** error) {
  if (end - p < 40) return ScanAnyNumber(p, end, value, error);
  const bool negative = *p == '-';
  const char* const integer = p + (negative ? 1 : 0);
  uint64_t mantissa = 0;
  int integer_digits = 0;  // significant ones: none in "0."
  const char* fraction = integer + 2;
  if (integer[0] != '0' || integer[1] != '.') {
    uint64_t chunk;
    std::memcpy(&chunk, integer, 8);
    integer_digits = LeadingDigits(chunk);
    if (integer_digits == 0 || integer_digits == 8 || integer[integer_digits] != '.' ||
        integer[0] == '0') {
      return ScanAnyNumber(p, end, value, error);
    }
    mantissa = LeadingDigitsValue(chunk, integer_digits);
    fraction = integer + integer_digits + 1;
  }
  // Two chunks of fraction digits, then one by one: at most 19 significant digits in all.
  uint64_t chunk;
  std::memcpy(&chunk, fraction, 8);
  int fraction_digits = LeadingDigits(chunk);
  if (fraction_digits == 0) return ScanAnyNumber(p, end, value, error);
  mantissa =
      mantissa * kUint64PowersOfTen[fraction_digits] + LeadingDigitsValue(chunk, fraction_digits);
  if (fraction_digits == 8) {
    std::memcpy(&chunk, fraction + 8, 8);
    const int more = LeadingDigits(chunk);
    if (more > 0) {
      mantissa = mantissa * kUint64PowersOfTen[more] + LeadingDigitsValue(chunk, more);
      fraction_digits += more;
    }
    for (; fraction_digits < 20 && IsDigit(fraction[fraction_digits]); ++fraction_digits) {
      mantissa = mantissa * 10 + static_cast<uint64_t>(fraction[fraction_digits] - '0');
    }
  }
  const char* const number_end = fraction + fraction_digits;
  if ((*number_end | 0x20) == 'e' || IsDigit(*number_end) ||
      integer_digits + fraction_digits > 19 ||
      !NearFloat(mantissa, -fraction_digits, negative, value)) {
    return ScanAnyNumber(p, end, value, error);
  }
  return number_end;
}

// Validates the whole document and records what DecodeRequest needs into a Scratch. Recursive
// descent with the depth bounded by kMaxJsonDepth before each descent, so at most that many
// frames deep however the input nests.
class Parser {
 public:
  Parser(std::string_view json, Scratch& scratch)
      : begin_(json.data()), p_(json.data()), end_(json.data() + json.size()), s_(scratch) {}

  // OK, or INVALID_ARGUMENT naming the first problem; a root that is not an object is reported
  // as such (valid JSON, wrong shape).
  absl::Status Parse() {
    SkipSpace();
    if (p_ == end_) return NotJson("no value", Offset());
    const bool object = *p_ == '{';
    if (!ParseValue(object ? Context::kRoot : Context::kIgnore, 0)) return error_;
    SkipSpace();
    if (p_ != end_) return NotJson("unexpected text after the value", Offset());
    if (!object) return absl::InvalidArgumentError("request JSON must be an object");
    return absl::OkStatus();
  }

 private:
  // Where a value sits, which decides what the parser records of it.
  enum class Context : uint8_t {
    kIgnore,
    kRoot,
    kSettings,     // analyticSettings
    kModelParams,  // analyticSettings.modelParams
    kTunable,      // analyticSettings.tunableParams
    kInputs,       // inputs
    kInputNames,   // analyticSettings.modelParams.input_var_order
    kOutputNames,  // analyticSettings.modelParams.output_var_order
    kParams,       // analyticSettings.tunableParams.bias_weight_array
    kColumn,       // inputs.<name>
  };

  size_t Offset() const { return static_cast<size_t>(p_ - begin_); }

  bool Fail(absl::Status status) {
    error_ = std::move(status);
    return false;
  }
  bool Syntax(std::string_view why) { return Fail(NotJson(why, Offset())); }

  void SkipSpace() {
    while (p_ != end_ && IsSpace(*p_)) ++p_;
  }

  bool ParseValue(Context context, int depth) {
    if (p_ == end_) return Syntax("unexpected end");
    switch (*p_) {
      case '{':
        return ParseObject(context, depth + 1);
      case '[':
        return ParseArray(context, depth + 1);
      case '"': {
        std::string_view raw;
        bool escaped;
        if (!ParseString(&raw, &escaped)) return false;
        Record(context, Kind::kOther);
        return true;
      }
      case 't':
        Record(context, Kind::kOther);
        return ParseLiteral("true");
      case 'f':
        Record(context, Kind::kOther);
        return ParseLiteral("false");
      case 'n':
        Record(context, Kind::kOther);
        return ParseLiteral("null");
      default: {
        float ignored;
        Record(context, Kind::kOther);
        return ParseNumber(&ignored);
      }
    }
  }

  // Notes the kind of value found at a recorded path (its first occurrence: the parser only
  // gives a recording context to a first occurrence).
  void Record(Context context, Kind kind) {
    switch (context) {
      case Context::kSettings:
        s_.settings = kind;
        break;
      case Context::kModelParams:
        s_.model_params = kind;
        break;
      case Context::kTunable:
        s_.tunable = kind;
        break;
      case Context::kInputs:
        s_.inputs = kind;
        break;
      case Context::kInputNames:
        s_.input_names.kind = kind;
        break;
      case Context::kOutputNames:
        s_.output_names.kind = kind;
        break;
      case Context::kParams:
        s_.params.kind = kind;
        break;
      case Context::kColumn:
        s_.columns.back().values.kind = kind;
        break;
      case Context::kIgnore:
      case Context::kRoot:
        break;
    }
  }

  // The context of the member `key` of an object in `context`, given which of the recorded
  // members this object has already had (`seen`, one bit per member).
  Context MemberContext(Context context, std::string_view key, bool escaped, uint32_t* seen) {
    if (escaped) {
      Unescape(key, &s_.unescaped);
      key = s_.unescaped;
    }
    auto first = [seen](uint32_t bit, Context member) {
      if (*seen & bit) return Context::kIgnore;
      *seen |= bit;
      return member;
    };
    switch (context) {
      case Context::kRoot:
        if (key == "analyticSettings") return first(1, Context::kSettings);
        if (key == "inputs") return first(2, Context::kInputs);
        return Context::kIgnore;
      case Context::kSettings:
        if (key == "modelParams") return first(1, Context::kModelParams);
        if (key == "tunableParams") return first(2, Context::kTunable);
        return Context::kIgnore;
      case Context::kModelParams:
        if (key == "input_var_order") return first(1, Context::kInputNames);
        if (key == "output_var_order") return first(2, Context::kOutputNames);
        return Context::kIgnore;
      case Context::kTunable:
        if (key == "bias_weight_array") return first(1, Context::kParams);
        return Context::kIgnore;
      default:
        return Context::kIgnore;
    }
  }

  bool ParseObject(Context context, int depth) {
    if (depth > static_cast<int>(kMaxJsonDepth)) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("request JSON is nested deeper than ", kMaxJsonDepth, " levels")));
    }
    Record(context, Kind::kObject);
    ++p_;  // '{'
    SkipSpace();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return true;
    }
    uint32_t seen = 0;
    while (true) {
      if (p_ == end_ || *p_ != '"') return Syntax("expected a member name");
      std::string_view key;
      bool escaped;
      if (!ParseString(&key, &escaped)) return false;
      SkipSpace();
      if (p_ == end_ || *p_ != ':') return Syntax("expected ':'");
      ++p_;
      SkipSpace();
      Context member = Context::kIgnore;
      if (context == Context::kInputs) {
        // Every column is recorded; DecodeRequest takes the first of each name, as at_key did.
        s_.columns.push_back(Column{key, escaped, {}});
        member = Context::kColumn;
      } else if (context != Context::kIgnore) {
        member = MemberContext(context, key, escaped, &seen);
      }
      if (!ParseValue(member, depth)) return false;
      SkipSpace();
      if (p_ == end_) return Syntax("unexpected end in an object");
      if (*p_ == ',') {
        ++p_;
        SkipSpace();
        continue;
      }
      if (*p_ == '}') {
        ++p_;
        return true;
      }
      return Syntax("expected ',' or '}'");
    }
  }

  bool ParseArray(Context context, int depth) {
    if (depth > static_cast<int>(kMaxJsonDepth)) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("request JSON is nested deeper than ", kMaxJsonDepth, " levels")));
    }
    Record(context, Kind::kArray);
    ++p_;  // '['
    if (context == Context::kColumn) return ParseNumberArray(&s_.columns.back().values, depth);
    if (context == Context::kParams) return ParseNumberArray(&s_.params, depth);
    NameList* names = context == Context::kInputNames    ? &s_.input_names
                      : context == Context::kOutputNames ? &s_.output_names
                                                         : nullptr;
    SkipSpace();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
      return true;
    }
    while (true) {
      if (p_ == end_) return Syntax("unexpected end in an array");
      if (names != nullptr && *p_ == '"') {
        std::string_view raw;
        bool escaped;
        if (!ParseString(&raw, &escaped)) return false;
        if (escaped) {
          names->names.emplace_back();
          Unescape(raw, &names->names.back());
        } else {
          names->names.emplace_back(raw);
        }
      } else {
        if (names != nullptr) names->all_strings = false;
        if (!ParseValue(Context::kIgnore, depth)) return false;
      }
      SkipSpace();
      if (p_ == end_) return Syntax("unexpected end in an array");
      if (*p_ == ',') {
        ++p_;
        SkipSpace();
        continue;
      }
      if (*p_ == ']') {
        ++p_;
        return true;
      }
      return Syntax("expected ',' or ']'");
    }
  }

  // The elements of an array the decoder reads numbers from, p_ just past its '['. The hot loop
  // of a request: a local cursor, and ", " between numbers taken in stride.
  bool ParseNumberArray(NumberArray* numbers, int depth) {
    numbers->begin = s_.numbers_used;
    float* const first = s_.numbers.get() + s_.numbers_used;
    float* out = first;
    // The cursor, the output and the count live in registers; p_ and the scratch are brought up
    // to date on every way out of the loop (and around the rare non-number element).
    const char* p = p_;
    auto leave = [&](bool ok) {
      p_ = p;
      numbers->size = static_cast<size_t>(out - first);
      s_.numbers_used += numbers->size;
      return ok;
    };
    auto syntax = [&](std::string_view why) {
      p_ = p;  // for the offset in the message
      Syntax(why);
      return leave(false);
    };
    while (p != end_ && IsSpace(*p)) ++p;
    if (p != end_ && *p == ']') {
      ++p;
      return leave(true);
    }
    while (true) {
      if (p == end_) return syntax("unexpected end in an array");
      if (StartsNumber(*p)) {
        const char* error = nullptr;
        const char* const next = ScanNumber(p, end_, out, &error);
        if (next == nullptr) return syntax(error);
        p = next;
      } else {
        if (!numbers->first_non_number) numbers->first_non_number = out - first;
        *out = 0;
        p_ = p;
        if (!ParseValue(Context::kIgnore, depth)) return leave(false);
        p = p_;
      }
      ++out;
      if (end_ - p > 2 && p[0] == ',' && p[1] == ' ' && !IsSpace(p[2])) {  // the usual ", "
        p += 2;
        continue;
      }
      while (p != end_ && IsSpace(*p)) ++p;
      if (p == end_) return syntax("unexpected end in an array");
      if (*p == ',') {
        ++p;
        while (p != end_ && IsSpace(*p)) ++p;
        continue;
      }
      if (*p == ']') {
        ++p;
        return leave(true);
      }
      return syntax("expected ',' or ']'");
    }
  }

  static bool StartsNumber(char c) { return IsDigit(c) || c == '-' || c == 'N' || c == 'I'; }

  // A string at p_ ('"'); sets `raw` to the text between the quotes. Escapes are validated
  // (\uXXXX surrogates must pair up); control characters must be escaped.
  bool ParseString(std::string_view* raw, bool* escaped) {
    ++p_;  // '"'
    const char* const start = p_;
    *escaped = false;
    while (true) {
      // Plain characters, the common case.
      while (p_ != end_ && *p_ != '"' && *p_ != '\\' && static_cast<unsigned char>(*p_) >= 0x20) {
        ++p_;
      }
      if (p_ == end_) return Syntax("unterminated string");
      if (*p_ == '"') break;
      if (*p_ != '\\') return Syntax("unescaped control character in a string");
      *escaped = true;
      if (++p_ == end_) return Syntax("unterminated string");
      switch (*p_) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
          ++p_;
          break;
        case 'u': {
          ++p_;
          const int unit = ParseHex4();
          if (unit < 0) return Syntax("bad \\u escape");
          if (unit >= 0xDC00 && unit < 0xE000) return Syntax("lone low surrogate");
          if (unit >= 0xD800 && unit < 0xDC00) {
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') {
              return Syntax("high surrogate without its low surrogate");
            }
            p_ += 2;
            const int low = ParseHex4();
            if (low < 0xDC00 || low >= 0xE000) {
              return Syntax("high surrogate without its low surrogate");
            }
          }
          break;
        }
        default:
          return Syntax("bad escape");
      }
    }
    *raw = std::string_view(start, p_ - start);
    ++p_;  // '"'
    return true;
  }

  // Four hex digits at p_, consumed; -1 if they are not.
  int ParseHex4() {
    if (end_ - p_ < 4) return -1;
    int value = 0;
    for (int k = 0; k < 4; ++k) {
      const int digit = HexValue(p_[k]);
      if (digit < 0) return -1;
      value = value * 16 + digit;
    }
    p_ += 4;
    return value;
  }

  bool ParseLiteral(std::string_view literal) {
    if (static_cast<size_t>(end_ - p_) < literal.size() ||
        std::memcmp(p_, literal.data(), literal.size()) != 0) {
      return Syntax("bad literal");
    }
    p_ += literal.size();
    return true;
  }

  bool ParseNumber(float* value) {
    const char* error = nullptr;
    const char* const next = ScanNumber(p_, end_, value, &error);
    if (next == nullptr) return Syntax(error);
    p_ = next;
    return true;
  }

  const char* const begin_;
  const char* p_;
  const char* const end_;
  Scratch& s_;
  absl::Status error_;
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// The first column named `name`.
const Column* FindColumn(const std::vector<Column>& columns, const std::string& name,
                         std::string* unescaped) {
  for (const Column& column : columns) {
    if (!column.escaped) {
      if (column.key == name) return &column;
      continue;
    }
    Unescape(column.key, unescaped);
    if (*unescaped == name) return &column;
  }
  return nullptr;
}

// The names from the request's `key` in modelParams if it has them, else the model's own.
absl::StatusOr<const std::vector<std::string>*> VarOrder(
    const NameList& list, const char* key, const std::vector<std::string>& model_default) {
  if (list.kind == Kind::kAbsent) {
    if (model_default.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("request has no analyticSettings.modelParams.",
                                                     key, " and the model declares none"));
    }
    return &model_default;
  }
  if (list.kind != Kind::kArray || !list.all_strings) {
    return absl::InvalidArgumentError(absl::StrCat(key, " must be an array of strings"));
  }
  return &list.names;
}

absl::Status DecodeInputs(const Scratch& s, const std::vector<std::string>& names, int64_t max_rows,
                          InferenceRequest& request, InputTensor& tensor) {
  const size_t columns = names.size();
  float* inputs = nullptr;
  std::string unescaped;
  for (size_t column = 0; column < columns; ++column) {
    const std::string& name = names[column];
    const Column* found = FindColumn(s.columns, name, &unescaped);
    if (found == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input variable \"", name, "\" from input_var_order is missing from inputs"));
    }
    const NumberArray& values = found->values;
    if (values.kind != Kind::kArray) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs.", name, " must be an array of numbers"));
    }
    const size_t rows = values.size;
    if (column == 0) {
      if (rows == 0) return absl::InvalidArgumentError("inputs have zero rows");
      if (rows > static_cast<uint64_t>(max_rows)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "request has ", rows, " rows; this server takes at most ", max_rows, " per request"));
      }
      request.rows = static_cast<int64_t>(rows);
      tensor.shape = {request.rows, static_cast<int64_t>(columns)};
      inputs = reinterpret_cast<float*>(tensor.Allocate(rows * columns * sizeof(float)));
    } else if (rows != static_cast<size_t>(request.rows)) {
      return absl::InvalidArgumentError(absl::StrCat("inputs.", name, " has ", rows,
                                                     " values but inputs.", names[0], " has ",
                                                     request.rows, "; columns must be equal"));
    }
    if (values.first_non_number) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs.", name, "[", *values.first_non_number, "] is not a number"));
    }
    const float* from = s.numbers.get() + values.begin;
    float* to = inputs + column;
    for (size_t row = 0; row < rows; ++row) to[row * columns] = from[row];
  }
  return absl::OkStatus();
}

// One row of floats for every row of the request.
void BroadcastFloats(const float* values, int64_t count, InputTensor& tensor) {
  tensor.shape = {1, count};
  tensor.broadcast = true;
  std::memcpy(tensor.Allocate(count * sizeof(float)), values, count * sizeof(float));
}

absl::Status DecodeParams(const Scratch& s, const SeedSignature& seed, InferenceRequest& request) {
  constexpr char kPath[] = "analyticSettings.tunableParams.bias_weight_array";
  if (s.settings == Kind::kObject && s.tunable != Kind::kAbsent && s.tunable != Kind::kObject) {
    return absl::InvalidArgumentError("analyticSettings.tunableParams must be a JSON object");
  }
  const NumberArray& values = s.params;
  if (values.kind == Kind::kAbsent) {
    if (seed.num_params > 0 && seed.default_params.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("request has no ", kPath, " and the model has no default parameters"));
    }
    if (seed.params_input) {
      BroadcastFloats(seed.default_params.data(), seed.num_params,
                      request.inputs[*seed.params_input]);
    }
    return absl::OkStatus();
  }
  if (values.kind != Kind::kArray) {
    return absl::InvalidArgumentError(absl::StrCat(kPath, " must be an array of numbers"));
  }
  if (seed.num_params == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model takes no tunable parameters but the request gives ", kPath));
  }
  if (values.size != static_cast<size_t>(seed.num_params)) {
    return absl::InvalidArgumentError(
        absl::StrCat(kPath, " has ", values.size, " values but the model takes ", seed.num_params));
  }
  if (values.first_non_number) {
    return absl::InvalidArgumentError(
        absl::StrCat(kPath, "[", *values.first_non_number, "] is not a number"));
  }
  BroadcastFloats(s.numbers.get() + values.begin, seed.num_params,
                  request.inputs[*seed.params_input]);
  return absl::OkStatus();
}

// The inputs the seed does not fill take their defaults, one row for every row.
absl::Status DefaultOtherInputs(const ModelSignature& signature, InferenceRequest& request) {
  const SeedSignature& seed = *signature.seed;
  for (size_t i = 0; i < signature.inputs.size(); ++i) {
    if (i == seed.columns_input || (seed.params_input && i == *seed.params_input)) continue;
    const handlers::TensorSpec& spec = signature.inputs[i];
    if (!spec.default_value) {  // a seed mapping leaves no such input (ApplySeedDeclaration)
      return absl::InternalError(
          absl::StrCat("the model's input \"", spec.name, "\" has no value for a seed request"));
    }
    InputTensor& tensor = request.inputs[i];
    const std::string& value = *spec.default_value;
    tensor.shape = {1};
    tensor.shape.insert(tensor.shape.end(), spec.dims.begin(), spec.dims.end());
    tensor.broadcast = true;
    std::memcpy(tensor.Allocate(value.size()), value.data(), value.size());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SeedRequest> DecodeRequest(std::string_view payload, const ModelSignature& signature,
                                          int64_t max_rows) {
  const SeedSignature& seed = *signature.seed;
  if (!simdjson::validate_utf8(payload.data(), payload.size())) {
    return absl::InvalidArgumentError("request is not valid UTF-8");
  }
  Scratch& s = ThreadScratch();
  s.Reset(payload.size());
  if (absl::Status parsed = Parser(payload, s).Parse(); !parsed.ok()) return parsed;

  // The checks of the values found, in the order the DOM decoder made them.
  if (s.settings != Kind::kAbsent && s.settings != Kind::kObject) {
    return absl::InvalidArgumentError("analyticSettings must be a JSON object");
  }
  if (s.model_params != Kind::kAbsent && s.model_params != Kind::kObject) {
    return absl::InvalidArgumentError("analyticSettings.modelParams must be a JSON object");
  }
  absl::StatusOr<const std::vector<std::string>*> input_order =
      VarOrder(s.input_names, "input_var_order", seed.input_names);
  if (!input_order.ok()) return input_order.status();
  const std::vector<std::string>& input_names = **input_order;
  if (static_cast<int64_t>(input_names.size()) != seed.num_inputs) {
    return absl::InvalidArgumentError(absl::StrCat("input_var_order names ", input_names.size(),
                                                   " variables but the model takes ",
                                                   seed.num_inputs, " input columns"));
  }
  SeedRequest decoded;
  absl::StatusOr<const std::vector<std::string>*> output_order =
      VarOrder(s.output_names, "output_var_order", seed.output_names);
  if (!output_order.ok()) return output_order.status();
  const std::vector<std::string>& output_names = **output_order;
  if (output_names.empty() || static_cast<int64_t>(output_names.size()) > seed.num_outputs) {
    return absl::InvalidArgumentError(absl::StrCat("output_var_order names ", output_names.size(),
                                                   " outputs but the model produces ",
                                                   seed.num_outputs));
  }
  decoded.output_names = output_names;

  if (s.inputs == Kind::kAbsent) {
    return absl::InvalidArgumentError("request has no \"inputs\" object");
  }
  if (s.inputs != Kind::kObject) {
    return absl::InvalidArgumentError("\"inputs\" must be a JSON object of columns");
  }
  InferenceRequest& request = decoded.request;
  request.inputs.resize(signature.inputs.size());
  if (absl::Status read =
          DecodeInputs(s, input_names, max_rows, request, request.inputs[seed.columns_input]);
      !read.ok()) {
    return read;
  }
  if (absl::Status read = DecodeParams(s, seed, request); !read.ok()) return read;
  if (absl::Status defaults = DefaultOtherInputs(signature, request); !defaults.ok()) {
    return defaults;
  }
  return decoded;
}

}  // namespace model_server::protocol
