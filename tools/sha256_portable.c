/*
 * A portable C SHA-256 (FIPS 180-4 §6.2), the yardstick for the purgatory's integer routine in
 * tools/bench_sha256.py. Written for this benchmark from the standard, in the shape kexec-tools' purgatory
 * uses (util_lib/sha256.c, compiled -O2 without SSE): big-endian loads byte by byte, a 64-word message
 * schedule computed as the rounds go, 64 rounds unrolled with the eight working variables renamed, and a
 * buffered update over {u64 start, u64 len} regions as its verify_sha256_digest walks them.
 *
 *   void sha256_portable_regions(const struct region *regions, size_t n, uint8_t digest[32]);
 *
 * Built by bench_sha256.py as a shared object with kexec-tools' purgatory flags for x86-64.
 */
#include <stddef.h>
#include <stdint.h>

struct region {
	uint64_t start, len;
};

struct ctx {
	uint32_t h[8];
	uint64_t total;
	uint8_t buf[64];
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define BSIG0(x) (ROR(x, 2) ^ ROR(x, 13) ^ ROR(x, 22))
#define BSIG1(x) (ROR(x, 6) ^ ROR(x, 11) ^ ROR(x, 25))
#define SSIG0(x) (ROR(x, 7) ^ ROR(x, 18) ^ ((x) >> 3))
#define SSIG1(x) (ROR(x, 17) ^ ROR(x, 19) ^ ((x) >> 10))
/* Ch and Maj in their usual shorter forms (same truth tables as FIPS 180-4 §4.1.2's) */
#define CH(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define MAJ(x, y, z) (((x) & (y)) | ((z) & ((x) | (y))))
#define BE32(p) ((uint32_t)(p)[0] << 24 | (uint32_t)(p)[1] << 16 | (uint32_t)(p)[2] << 8 | (uint32_t)(p)[3])

/* message word t (t >= 16) from the four earlier ones */
#define SCHED(t) (w[t] = SSIG1(w[(t) - 2]) + w[(t) - 7] + SSIG0(w[(t) - 15]) + w[(t) - 16])

/* one round; the caller rotates the names instead of moving values */
#define ROUND(a, b, c, d, e, f, g, h, wt, k)                          \
	do {                                                          \
		uint32_t t1 = (h) + BSIG1(e) + CH(e, f, g) + (k) + (wt); \
		uint32_t t2 = BSIG0(a) + MAJ(a, b, c);                \
		(d) += t1;                                            \
		(h) = t1 + t2;                                        \
	} while (0)

#define EIGHT(i, W)                                                      \
	ROUND(a, b, c, d, e, f, g, h, W((i) + 0), k[(i) + 0]);           \
	ROUND(h, a, b, c, d, e, f, g, W((i) + 1), k[(i) + 1]);           \
	ROUND(g, h, a, b, c, d, e, f, W((i) + 2), k[(i) + 2]);           \
	ROUND(f, g, h, a, b, c, d, e, W((i) + 3), k[(i) + 3]);           \
	ROUND(e, f, g, h, a, b, c, d, W((i) + 4), k[(i) + 4]);           \
	ROUND(d, e, f, g, h, a, b, c, W((i) + 5), k[(i) + 5]);           \
	ROUND(c, d, e, f, g, h, a, b, W((i) + 6), k[(i) + 6]);           \
	ROUND(b, c, d, e, f, g, h, a, W((i) + 7), k[(i) + 7])

#define LOADED(t) (w[t])

/* FIPS 180-4 §4.2.2 */
static const uint32_t k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static void block(uint32_t s[8], const uint8_t *p)
{
	uint32_t w[64];
	uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
	int t;

	for (t = 0; t < 16; t++)
		w[t] = BE32(p + 4 * t);
	EIGHT(0, LOADED);
	EIGHT(8, LOADED);
	EIGHT(16, SCHED);
	EIGHT(24, SCHED);
	EIGHT(32, SCHED);
	EIGHT(40, SCHED);
	EIGHT(48, SCHED);
	EIGHT(56, SCHED);
	s[0] += a; s[1] += b; s[2] += c; s[3] += d; s[4] += e; s[5] += f; s[6] += g; s[7] += h;
}

static void update(struct ctx *c, const uint8_t *p, uint64_t n)
{
	unsigned used = c->total & 63;

	c->total += n;
	if (used) {
		while (n && used < 64) {
			c->buf[used++] = *p++;
			n--;
		}
		if (used < 64)
			return;
		block(c->h, c->buf);
	}
	for (; n >= 64; n -= 64, p += 64)
		block(c->h, p);
	for (used = 0; used < n; used++)
		c->buf[used] = p[used];
}

void sha256_portable_regions(const struct region *regions, size_t n, uint8_t digest[32])
{
	static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
				       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	struct ctx c = {.total = 0};
	uint8_t pad[72] = {0x80};
	uint64_t bits;
	unsigned padlen;
	int i;

	for (i = 0; i < 8; i++)
		c.h[i] = h0[i];
	for (size_t r = 0; r < n; r++)
		update(&c, (const uint8_t *)(uintptr_t)regions[r].start, regions[r].len);
	bits = c.total << 3;
	padlen = (c.total & 63) < 56 ? 56 - (c.total & 63) : 120 - (c.total & 63);
	for (i = 0; i < 8; i++)
		pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
	update(&c, pad, padlen + 8);
	for (i = 0; i < 8; i++) {
		digest[4 * i] = (uint8_t)(c.h[i] >> 24);
		digest[4 * i + 1] = (uint8_t)(c.h[i] >> 16);
		digest[4 * i + 2] = (uint8_t)(c.h[i] >> 8);
		digest[4 * i + 3] = (uint8_t)c.h[i];
	}
}
