// Internals shared by launch/config*.cpp: schema look-ups and the wording of error messages.
// Not for use outside the config implementation.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/descriptor.h>

namespace zt::config_detail {

namespace pb = google::protobuf;

// "lr, beta1, beta2, ..." in schema order.
std::string field_names(const pb::Descriptor* message);
// "f32, bf16, fp16" in schema order.
std::string enum_value_names(const pb::EnumDescriptor* e);
// " (did you mean 'lr'?)" when one candidate is within a small edit distance of name, else "".
std::string did_you_mean(std::string_view name, const std::vector<std::string>& candidates);
std::vector<std::string> field_name_list(const pb::Descriptor* message);

// The message type reached from TrainConfig by following section field names; nullptr if the path
// does not name nested messages.
const pb::Descriptor* descriptor_at(const std::vector<std::string>& path);
// "optimizer", "model", or "" for the top level.
std::string join_path(const std::vector<std::string>& path, std::string_view last = {});

// The enum value for text, accepting the documented short aliases (124M, 1.5B, 1f1b); nullptr if none.
const pb::EnumValueDescriptor* find_enum_value(const pb::EnumDescriptor* e, std::string_view text);

}  // namespace zt::config_detail
