// Counter-based random numbers (Philox 4x32-10, Salmon et al., SC'11).
//
// A draw is a pure function of (seed, counter): element i of a tensor filled with (seed, offset)
// uses counter offset + i. So the CPU and the GPU produce the same numbers, and a rank that holds
// elements [a, b) of a tensor draws exactly what the whole tensor would have there. Callers own
// the offsets: a module advances its offset by the number of elements it drew.
//
// Written so that the same code compiles for host and device (ZT_HD).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define ZT_HD __host__ __device__ __forceinline__
#else
#define ZT_HD inline
#endif

namespace zt::rng {

struct Philox4x32 {
  uint32_t v[4];
};

ZT_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Four 32-bit random words for counter `block` (each block feeds four consecutive elements).
ZT_HD Philox4x32 philox(uint64_t seed, uint64_t block) {
  uint32_t c0 = static_cast<uint32_t>(block), c1 = static_cast<uint32_t>(block >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// The 32-bit word for element `index` of stream `seed`.
ZT_HD uint32_t random_u32(uint64_t seed, uint64_t index) {
  Philox4x32 r = philox(seed, index >> 2);
  return r.v[index & 3];
}

// Uniform in [0, 1) with 24 bits, exactly representable in f32 (so CPU and GPU agree bit for bit).
ZT_HD float uniform(uint64_t seed, uint64_t index) {
  return static_cast<float>(random_u32(seed, index) >> 8) * (1.0f / 16777216.0f);
}

// Standard normal by Box-Muller on two independent draws of one element's own counter pair;
// computed in double so that host and device libm differences stay below f32 rounding.
ZT_HD float normal(uint64_t seed, uint64_t index) {
  Philox4x32 r = philox(seed ^ 0x5DEECE66DULL, index);
  double u1 = (static_cast<double>(r.v[0] >> 8) + 1.0) * (1.0 / 16777216.0);  // (0, 1]
  double u2 = static_cast<double>(r.v[1] >> 8) * (1.0 / 16777216.0);
  return static_cast<float>(::sqrt(-2.0 * ::log(u1)) * ::cos(6.283185307179586 * u2));
}

}  // namespace zt::rng
