#pragma once

// The text of a float in responses: the shortest decimal that reads back as the same float
// (Dragonbox), laid out exactly as std::to_chars(char*, char*, float) lays it out — fixed or
// scientific, whichever is shorter, fixed on a tie, integers exactly — at a fraction of its
// cost. Checked against std::to_chars for every finite float (docs/BENCHMARKS.md). Non-finite
// values are spelled NaN, Infinity and -Infinity, as Python's json writes them.

#include <cmath>
#include <cstdint>
#include <cstring>

#include "dragonbox/dragonbox.h"

namespace model_server::protocol {

// The most characters a float's text has: "-1.2345678e-38".
inline constexpr int kMaxFloatText = 15;
// The room WriteFloat needs at `out`: it copies in fixed-size blocks, past the text's end.
inline constexpr int kFloatWriteRoom = 32;

namespace float_text_internal {

inline constexpr char kDigitPairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

// Writes the decimal digits of `value` ending just before `end`; returns the start.
inline char* WriteDigitsBackward(uint64_t value, char* end) {
  while (value >= 100) {
    end -= 2;
    std::memcpy(end, kDigitPairs + 2 * (value % 100), 2);
    value /= 100;
  }
  if (value >= 10) {
    end -= 2;
    std::memcpy(end, kDigitPairs + 2 * value, 2);
  } else {
    *--end = static_cast<char>('0' + value);
  }
  return end;
}

// Decimal digits of `value` (1 for 0).
inline int DigitCount(uint32_t value) {
  static constexpr uint32_t kPowersOfTen[] = {1,      10,      100,      1000,      10000,
                                              100000, 1000000, 10000000, 100000000, 1000000000};
  const int estimate = ((32 - __builtin_clz(value | 1)) * 1233) >> 12;  // log10 of 2^bits
  return estimate + (value >= kPowersOfTen[estimate] ? 1 : 0);
}

// The eight decimal digits of `value` < 10^8, leading zeros included, as the bytes of a
// little-endian word: the first digit in the lowest byte. Splits into 4-, 2- and 1-digit lanes
// with multiply-shift divisions that stay inside each lane.
inline uint64_t EightDigits(uint32_t value) {
  uint64_t lanes = (value / 10000) | (static_cast<uint64_t>(value % 10000) << 32);
  uint64_t high = ((lanes * 10486) >> 20) & 0x0000007F0000007F;  // / 100 in each 32-bit lane
  lanes = high | ((lanes - high * 100) << 16);
  high = ((lanes * 103) >> 10) & 0x000F000F000F000F;  // / 10 in each 16-bit lane
  lanes = high | ((lanes - high * 10) << 8);
  return lanes | 0x3030303030303030;
}

// Writes the `digits` (1..9) decimal digits of `value` at `out`, which has 16 bytes of room.
inline void WriteDigits(uint32_t value, int digits, char* out) {
  if (digits == 9) {
    *out++ = static_cast<char>('0' + value / 100000000);
    value %= 100000000;
    digits = 8;
  }
  const uint64_t text = EightDigits(value) >> (8 * (8 - digits));  // without the leading zeros
  std::memcpy(out, &text, 8);
}

}  // namespace float_text_internal

// Writes `value` at `out`, which has kFloatWriteRoom bytes of room, and returns the end of its
// text (at most kMaxFloatText characters).
inline char* WriteFloat(float value, char* out) {
  using namespace float_text_internal;
  if (std::isnan(value)) {
    std::memcpy(out, "NaN", 3);
    return out + 3;
  }
  if (std::isinf(value)) {
    if (value < 0) *out++ = '-';
    std::memcpy(out, "Infinity", 8);
    return out + 8;
  }
  if (std::signbit(value)) *out++ = '-';
  if (value == 0) {
    *out = '0';
    return out + 1;
  }
  const auto decimal = jkj::dragonbox::to_decimal(value);
  // value = significand * 10^exponent = 0.d1..dn * 10^point.
  const int digits = DigitCount(decimal.significand);
  const int exponent = decimal.exponent;
  const int point = digits + exponent;
  const int scientific_exponent = point - 1;  // |e| <= 45 for floats: two digits
  const int scientific_length = digits + (digits > 1 ? 1 : 0) + 4;
  const int fixed_length = exponent >= 0 ? digits + exponent
                           : point > 0   ? digits + 1
                                         : 2 - point + digits;
  if (fixed_length <= scientific_length && exponent >= 0) {
    // An integer: its exact value, as std::to_chars writes it (123456790528, not the shortest
    // digits padded with zeros, 123456790000). Fixed wins only up to 14 digits.
    char* const end = out + fixed_length;
    WriteDigitsBackward(static_cast<uint64_t>(std::fabs(value)), end);
    return end;
  }
  // The significand's digits (at most 9), left-aligned in a block copied whole.
  char text[32] = {};  // 9 digits at most, then room for the 16-byte copies below
  WriteDigits(decimal.significand, digits, text);
  if (fixed_length <= scientific_length) {
    if (point > 0) {  // dd.ddd
      std::memcpy(out, text, 16);
      out[point] = '.';
      std::memcpy(out + point + 1, text + point, 16);
      return out + digits + 1;
    }
    // 0.000ddd: at most 3 zeros after the point, or scientific is shorter.
    std::memcpy(out, "0.000", 5);
    std::memcpy(out + 2 - point, text, 16);
    return out + fixed_length;
  }
  // d.ddde+XX
  out[0] = text[0];
  char* cursor = out + 1;
  if (digits > 1) {
    *cursor++ = '.';
    std::memcpy(cursor, text + 1, 16);
    cursor += digits - 1;
  }
  cursor[0] = 'e';
  cursor[1] = scientific_exponent < 0 ? '-' : '+';
  std::memcpy(cursor + 2, kDigitPairs + 2 * std::abs(scientific_exponent), 2);
  return cursor + 4;
}

}  // namespace model_server::protocol
