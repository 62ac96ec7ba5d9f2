// Errors as values, one convention project-wide: a negative errno.
//
// Functions on the data path return `int` (>= 0 success, -errno failure), the liburing way.
// Where a value comes back too, they return Result<T>: a T or an errno, never an exception.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace vcp {

// Tag for constructing an error Result: `return Err(EINVAL);` (positive errno, as in errno.h).
struct Err {
  int code;
  explicit constexpr Err(int c) : code(c < 0 ? -c : c) {}
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Err e) : v_(e) {}                   // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  // Positive errno of a failed Result; 0 when ok.
  int error() const { return ok() ? 0 : std::get<1>(v_).code; }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Err> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Err e) : code_(e.code) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return code_ == 0; }
  explicit operator bool() const { return ok(); }
  int error() const { return code_; }

 private:
  int code_ = 0;
};
using Status = Result<void>;

// Turns a libc-style return (-1 + errno) into -errno.
inline int neg_errno(long rc) { return rc < 0 ? -errno : static_cast<int>(rc); }

inline std::string errno_str(int err) { return std::strerror(err < 0 ? -err : err); }

}  // namespace vcp
