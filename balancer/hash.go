package balancer

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// The seeds and functions in this file, and the way Maglev reduces a key to
// a table slot, must never change: every lbd instance of a fleet behind ECMP
// must send a given client to the same backend, including instances that run
// different lbd versions during a rolling upgrade. TestGolden pins them.
const (
	seedOffset = 0x6c62645f6f666673 // Maglev permutation offset
	seedSkip   = 0x6c62645f736b6970 // Maglev permutation skip
	seedKey    = 0x6c62645f6b657931 // client address
	seedPort   = 0x6c62645f706f7274 // client port
	seedRetry  = 0x6c62645f72657472 // Maglev walk after a tried backend
	golden64   = 0x9e3779b97f4a7c15 // 2^64 / golden ratio, odd
)

// mix64 is a bijective finaliser (the MurmurHash3 fmix64 constants): every
// input bit affects every output bit, so the low and the high bits of its
// result are equally usable.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// hashString hashes a backend name under a seed. It is not meant to resist
// an adversary (names come from the operator's config), only to spread
// similar names such as "web-001" and "web-002" far apart. It is written out
// here rather than taken from hash/maphash (randomly seeded per process) or
// hash/fnv (weak low bits) so that its output is fixed forever.
func hashString(s string, seed uint64) uint64 {
	h := mix64(seed ^ uint64(len(s))*golden64)
	for len(s) >= 8 {
		w := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
		h = mix64(h ^ w)
		s = s[8:]
	}
	// The length went into h first, so zero padding the tail is unambiguous.
	var w uint64
	for i := 0; i < len(s); i++ {
		w |= uint64(s[i]) << (8 * i)
	}
	return mix64(h ^ w ^ golden64)
}

// HashKey turns a client address into the key passed to Pick. withPort adds
// the client port (hash = "source_ip_port"); without it (hash = "source_ip",
// the default) every connection of one client address goes to the same
// backend. An IPv4 address and its IPv4-mapped IPv6 form give the same key,
// and the zone is ignored, so a dual-stack listener does not split a client.
// HashKey allocates nothing.
//
// Its output must never change: see the note on the seeds.
func HashKey(ip netip.Addr, port uint16, withPort bool) uint64 {
	a := ip.As16()
	h := mix64(binary.BigEndian.Uint64(a[:8]) ^ seedKey)
	h = mix64(h ^ binary.BigEndian.Uint64(a[8:]))
	if withPort {
		h = mix64(h ^ uint64(port) ^ seedPort)
	}
	return h
}

// reduce maps a well-mixed 64-bit value onto [0, n) by multiplying and
// keeping the high word: unbiased to within n/2^64 and without a division.
func reduce(x, n uint64) uint64 {
	hi, _ := bits.Mul64(x, n)
	return hi
}

// pickRand is one picker's random source for p2c and least_conn. Each
// picker owns one, within its own cache lines (pickerSize), so a pick never
// writes a line another picker reads, and tests can seed it for
// reproducible runs. It is a splitmix64 sequence: statistically adequate
// for choosing backends and a couple of instructions.
type pickRand struct {
	s uint64
}

// seedPicker seeds the random source of the k-th picker made from seed:
// every picker gets a sequence of its own.
func seedPicker(seed, k uint64) pickRand {
	return pickRand{s: mix64(seed + k*golden64)}
}

func (r *pickRand) next() uint64 {
	r.s += golden64
	return mix64(r.s)
}
