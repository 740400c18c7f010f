// safetensors files (Hugging Face's format): an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}, then the raw data.
// Reading validates every offset against the file size; writing goes to "<path>.tmp" and is
// renamed into place only when complete.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace zt {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;  // on the CPU
  std::map<std::string, std::string> metadata;
  std::vector<std::string> order;  // names in file order

  const Tensor& at(const std::string& name) const;  // throws naming the file's tensors when missing
};

SafetensorsFile read_safetensors(const std::string& path);
// The bytes of a safetensors file holding these tensors (any device; copied to the host), in order.
std::string serialize_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});
// Writes bytes to path atomically and durably: "<path>.tmp", written, fsynced, renamed, and the
// folder synced, so that after a crash or power loss path is either absent or complete. With
// verify, the written file is read back and compared before the rename (for small files whose
// readers have no checksum); a mismatch throws and leaves path as it was.
void write_file_atomically(const std::string& path, const std::string& bytes, bool verify = false);
// The whole file; throws "[api] cannot open 'path'" or "[api] error reading 'path'".
std::string read_file_bytes(const std::string& path, const char* api);
// fsync of a file or a folder (a folder makes the renames inside it durable). Throws for a file
// that cannot be synced; best effort for folders (some file systems refuse).
void sync_to_disk(const std::string& path);
// serialize_safetensors + write_file_atomically.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace zt
