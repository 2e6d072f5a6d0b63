package main

import (
	"slices"
	"strconv"
)

// The two other consistent hashes of the Maglev paper's section 5.3, built
// over the same backend names. Their hash needs no stability across
// versions, unlike lbd's own.

// mix is a bijective 64-bit finaliser, so keys i = 0, 1, 2, ... become
// well-spread hashes.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// hashName is FNV-1a followed by mix, which FNV's weak low bits need.
func hashName(s string) uint64 {
	h := uint64(0xcbf29ce484222325)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 0x100000001b3
	}
	return mix(h)
}

// keyHash is the hash of the i-th key (table entry) that the ring and
// rendezvous place; Maglev takes key i to slot i directly.
func keyHash(i int) uint64 { return mix(uint64(i) ^ 0x5bd1e9955bd1e995) }

// ring is Karger et al.'s consistent hashing: each backend owns vnodes
// points on a circle of 2^64 positions, and a key goes to the owner of the
// first point at or after its hash.
type ring struct {
	points []uint64
	owners []int32
}

func newRing(names []string, vnodes int) *ring {
	type pt struct {
		h uint64
		o int32
	}
	pts := make([]pt, 0, len(names)*vnodes)
	for i, n := range names {
		for v := 0; v < vnodes; v++ {
			pts = append(pts, pt{hashName(n + "#" + strconv.Itoa(v)), int32(i)})
		}
	}
	slices.SortFunc(pts, func(a, b pt) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return int(a.o - b.o)
	})
	r := &ring{points: make([]uint64, len(pts)), owners: make([]int32, len(pts))}
	for i, p := range pts {
		r.points[i], r.owners[i] = p.h, p.o
	}
	return r
}

func (r *ring) lookup(h uint64) int {
	lo, hi := 0, len(r.points)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if r.points[mid] < h {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == len(r.points) {
		lo = 0
	}
	return int(r.owners[lo])
}

// rendezvous is highest-random-weight hashing (Thaler and Ravishankar): a
// key goes to the backend whose hash combined with the key's is largest.
// Nothing is built; each lookup costs O(N).
type rendezvous struct{ seeds []uint64 }

func newRendezvous(names []string) *rendezvous {
	r := &rendezvous{seeds: make([]uint64, len(names))}
	for i, n := range names {
		r.seeds[i] = hashName(n)
	}
	return r
}

func (r *rendezvous) lookup(h uint64) int {
	best, bestScore := -1, uint64(0)
	for i, s := range r.seeds {
		if sc := mix(s ^ h); best < 0 || sc > bestScore {
			best, bestScore = i, sc
		}
	}
	return best
}
