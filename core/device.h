// Where a tensor lives: a runtime value, cpu or cuda:N.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace zt {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  std::string str() const;  // "cpu" or "cuda:N"
  static Device parse(std::string_view text);  // "cpu", "cuda", "cuda:N"; throws naming what is accepted

  friend bool operator==(const Device&, const Device&) = default;
};

}  // namespace zt
