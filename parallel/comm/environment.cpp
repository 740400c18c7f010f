#include "parallel/comm/environment.h"

#include <charconv>
#include <cstdlib>

#include "core/error.h"

namespace zt::comm {

namespace {

constexpr const char* kRank = "OMPI_COMM_WORLD_RANK";
constexpr const char* kSize = "OMPI_COMM_WORLD_SIZE";
constexpr const char* kLocalRank = "OMPI_COMM_WORLD_LOCAL_RANK";
constexpr const char* kLocalSize = "OMPI_COMM_WORLD_LOCAL_SIZE";

int parse_int(const char* name, const std::string& text, int min_value) {
  int value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  ZT_CHECK(ec == std::errc() && ptr == end && !text.empty(), "environment", name, "='", text,
           "' is not an integer");
  ZT_CHECK(value >= min_value, "environment", name, "=", value, " must be at least ", min_value);
  return value;
}

}  // namespace

LaunchEnvironment parse_launch_environment(const EnvLookup& lookup) {
  LaunchEnvironment env;
  std::optional<std::string> rank = lookup(kRank), size = lookup(kSize);
  std::optional<std::string> local_rank = lookup(kLocalRank), local_size = lookup(kLocalSize);
  if (!rank && !size && !local_rank && !local_size) return env;
  ZT_CHECK(rank && size, "environment", "found only some of Open MPI's variables (", kRank, rank ? " set" : " unset",
           ", ", kSize, size ? " set" : " unset", "); start zerotrain with mpirun or scripts/zt-mpirun");
  env.from_launcher = true;
  env.rank = parse_int(kRank, *rank, 0);
  env.world_size = parse_int(kSize, *size, 1);
  ZT_CHECK(env.rank < env.world_size, "environment", kRank, "=", env.rank, " is not below ", kSize, "=",
           env.world_size);
  // Older launchers may leave out the local variables: then the rank is alone on its node.
  env.local_rank = local_rank ? parse_int(kLocalRank, *local_rank, 0) : 0;
  env.local_size = local_size ? parse_int(kLocalSize, *local_size, 1) : 1;
  ZT_CHECK(env.local_rank < env.local_size, "environment", kLocalRank, "=", env.local_rank, " is not below ",
           kLocalSize, "=", env.local_size);
  ZT_CHECK(env.local_size <= env.world_size, "environment", kLocalSize, "=", env.local_size, " exceeds ", kSize,
           "=", env.world_size);
  return env;
}

LaunchEnvironment read_launch_environment() {
  return parse_launch_environment([](const char* name) -> std::optional<std::string> {
    const char* value = std::getenv(name);
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  });
}

}  // namespace zt::comm
