// The message of the zt::Error a call throws, for tests that check what an error says.
#pragma once

#include <string>

#include "core/error.h"

namespace zt::test {

// fn's zt::Error message, or "(no error)" when it returns normally (some tests expect that).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace zt::test
