// Typed errors of the igdbeam core. The op bindings catch them (csrc/bindings/common.h RunOp):
// InvalidArgument becomes status code 1, anything else code 2, which igdbeam.native.dispatch
// raises as a ValueError / RuntimeError subclass; IGD_CHECK messages carry the file and line.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace igdbeam {

// Raised for input a caller can fix (bad shapes, ids out of range, weights that are not finite).
class InvalidArgument : public std::invalid_argument {
 public:
  explicit InvalidArgument(const std::string& what) : std::invalid_argument(what) {}
};

namespace detail {
template <typename... Parts>
std::string Concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}
}  // namespace detail

}  // namespace igdbeam

// Throws igdbeam::InvalidArgument with a message built from the remaining arguments.
#define IGD_CHECK_ARG(cond, ...)                                                           \
  do {                                                                                     \
    if (!(cond)) throw ::igdbeam::InvalidArgument(::igdbeam::detail::Concat(__VA_ARGS__)); \
  } while (0)

// Internal invariant: throws std::runtime_error naming the file and line.
#define IGD_CHECK(cond, ...)                                                        \
  do {                                                                              \
    if (!(cond))                                                                    \
      throw std::runtime_error(::igdbeam::detail::Concat(                           \
          __FILE__, ":", __LINE__, ": ", "igdbeam internal error: ", __VA_ARGS__)); \
  } while (0)
