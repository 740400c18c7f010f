#include "models/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "core/ops.h"

namespace zt {

namespace {

DType parse_dtype(const std::string& s, const std::string& path, const std::string& name) {
  if (s == "F32") return DType::f32;
  if (s == "F64") return DType::f64;
  if (s == "BF16") return DType::bf16;
  if (s == "F16") return DType::f16;
  if (s == "I32") return DType::i32;
  if (s == "I64") return DType::i64;
  if (s == "U8") return DType::u8;
  if (s == "BOOL") return DType::boolean;
  ZT_FAIL("safetensors", path, ": tensor '", name, "' has dtype ", s,
          "; accepted: F32, F64, BF16, F16, I32, I64, U8, BOOL");
}

const char* dtype_tag(DType d) {
  switch (d) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
    case DType::boolean: return "BOOL";
  }
  return "?";
}

}  // namespace

const Tensor& SafetensorsFile::at(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) {
    std::string names;
    for (size_t i = 0; i < order.size() && i < 8; ++i) names += (i ? ", " : "") + order[i];
    if (order.size() > 8) names += ", ...";
    ZT_FAIL("safetensors", "no tensor named '", name, "' (the file has ", order.size(), ": ", names, ")");
  }
  return it->second;
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ZT_CHECK(in.good(), "safetensors", "cannot open '", path, "'");
  const auto file_size = static_cast<uint64_t>(std::filesystem::file_size(path));
  ZT_CHECK(file_size >= 8, "safetensors", path, ": file is ", file_size, " bytes, too short for a header");
  uint64_t header_len = 0;
  in.read(reinterpret_cast<char*>(&header_len), 8);
  ZT_CHECK(header_len <= file_size - 8 && header_len < (100u << 20), "safetensors", path, ": header length ",
           header_len, " does not fit in a file of ", file_size, " bytes (not a safetensors file?)");
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const std::exception& e) {
    ZT_FAIL("safetensors", path, ": header is not valid JSON: ", e.what());
  }
  ZT_CHECK(j.is_object(), "safetensors", path, ": header is not a JSON object");
  const uint64_t data_start = 8 + header_len, data_size = file_size - data_start;
  SafetensorsFile out;
  std::vector<std::pair<uint64_t, std::string>> by_offset;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      ZT_CHECK(it.value().is_object(), "safetensors", path, ": __metadata__ is not a JSON object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m)
        out.metadata[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    const auto& e = it.value();
    ZT_CHECK(e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"), "safetensors", path,
             ": entry '", it.key(), "' lacks dtype, shape or data_offsets");
    DType dt = DType::f32;
    Shape shape;
    std::vector<uint64_t> offsets;
    try {
      dt = parse_dtype(e["dtype"].get<std::string>(), path, it.key());
      shape = e["shape"].get<Shape>();
      offsets = e["data_offsets"].get<std::vector<uint64_t>>();
    } catch (const nlohmann::json::exception&) {
      ZT_FAIL("safetensors", path, ": entry '", it.key(), "' is malformed (", e.dump(),
              "); expected {\"dtype\": \"F32\", \"shape\": [..], \"data_offsets\": [begin, end]}");
    }
    for (int64_t d : shape)
      ZT_CHECK(d >= 0 && d <= (int64_t{1} << 40), "safetensors", path, ": tensor '", it.key(), "' has dimension ", d,
               " in its shape");
    ZT_CHECK(shape.size() <= 8, "safetensors", path, ": tensor '", it.key(), "' has ", shape.size(), " dimensions");
    ZT_CHECK(offsets.size() == 2 && offsets[0] <= offsets[1] && offsets[1] <= data_size, "safetensors", path,
             ": tensor '", it.key(), "' has data offsets outside the file's ", data_size, " data bytes");
    // The element count, saturated past the file's size so a hostile shape cannot overflow it.
    uint64_t numel = 1;
    bool empty_tensor = false;
    for (int64_t d : shape) {
      empty_tensor = empty_tensor || d == 0;
      if (d > 0) numel = numel > data_size / static_cast<uint64_t>(d) ? data_size + 1 : numel * static_cast<uint64_t>(d);
    }
    if (empty_tensor) numel = 0;
    const uint64_t nbytes = numel > data_size ? data_size + 1 : numel * dtype_size(dt);
    ZT_CHECK(offsets[1] - offsets[0] == nbytes, "safetensors", path, ": tensor '", it.key(), "' ", shape_str(shape),
             " ", dtype_name(dt), " needs ", nbytes, " bytes, the file gives ", offsets[1] - offsets[0]);
    Tensor t = empty(shape, dt, Device::cpu());
    in.seekg(static_cast<std::streamoff>(data_start + offsets[0]));
    in.read(static_cast<char*>(t.raw_data()), static_cast<std::streamsize>(nbytes));
    ZT_CHECK(in.good(), "safetensors", path, ": short read for tensor '", it.key(), "'");
    out.tensors.emplace(it.key(), t);
    by_offset.emplace_back(offsets[0], it.key());
  }
  std::sort(by_offset.begin(), by_offset.end());
  for (auto& [offset, name] : by_offset) out.order.push_back(name);
  return out;
}

std::string serialize_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<Tensor> host;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    Tensor h = contiguous(t.device().is_cpu() ? t : to(t, Device::cpu()));
    header[name] = {{"dtype", dtype_tag(h.dtype())}, {"shape", h.shape()}, {"data_offsets", {offset, offset + h.nbytes()}}};
    offset += h.nbytes();
    host.push_back(h);
  }
  std::string raw = header.dump();
  raw.append((8 - raw.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + raw.size() + offset);
  const uint64_t len = raw.size();
  out.append(reinterpret_cast<const char*>(&len), 8);
  out += raw;
  for (const Tensor& h : host) out.append(static_cast<const char*>(h.raw_data()), h.nbytes());
  return out;
}

void sync_to_disk(const std::string& path) {
  const bool folder = std::filesystem::is_directory(path);
  const int fd = ::open(path.c_str(), (folder ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) {
    ZT_CHECK(folder, "io", "cannot open '", path, "' to sync it: ", std::strerror(errno));
    return;
  }
  const bool synced = ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  ZT_CHECK(synced || folder, "io", "fsync of '", path, "' failed: ", std::strerror(err));
}

std::string read_file_bytes(const std::string& path, const char* api) {
  std::ifstream in(path, std::ios::binary);
  ZT_CHECK(in, api, "cannot open '", path, "'");
  std::ostringstream text;
  text << in.rdbuf();
  ZT_CHECK(!in.bad(), api, "error reading '", path, "'");
  return text.str();
}

void write_file_atomically(const std::string& path, const std::string& bytes, bool verify) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    ZT_CHECK(out.good(), "io", "cannot write '", tmp, "'");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    ZT_CHECK(out.good(), "io", "writing '", tmp, "' failed (disk full?)");
  }
  sync_to_disk(tmp);  // the data reaches the disk before the name does
  ZT_CHECK(!verify || read_file_bytes(tmp, "io") == bytes, "io", "'", tmp, "' does not read back as written; '", path,
           "' is left as it was");
  std::filesystem::rename(tmp, path);
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  sync_to_disk(dir.empty() ? "." : dir.string());
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  write_file_atomically(path, serialize_safetensors(tensors, metadata));
}

}  // namespace zt
