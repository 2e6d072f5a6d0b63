// Package balancer chooses the backend for each new TCP connection or UDP
// flow. It performs no I/O and imports nothing from pkg/: the pool package
// builds a Balancer from the backends that are currently eligible (up and
// neither draining nor disabled) and publishes it atomically. A Balancer is
// immutable and shared; whoever picks holds a Picker of its own, made by the
// Balancer, with whatever state the algorithm keeps between picks (the wrr
// position, the p2c random sequence). An event loop keeps one Picker per
// balancer and calls Pick on every new connection, so that no two cores
// share a lock or a written cache line.
package balancer

import "sync/atomic"

// Backend is what a balancer knows of one backend.
type Backend struct {
	// Name identifies the backend. Maglev orders backends by Name, so every
	// lbd instance given the same pool builds the same table.
	Name string
	// Weight is the relative share of traffic, 1..10000.
	Weight int
	// Active is the live count of open connections or flows to the backend,
	// kept exactly by the data plane. least_conn and p2c read it; it must not
	// be nil for those algorithms.
	Active *atomic.Int64
}

// MaxTried bounds the number of backends one connection may try (the first
// pick plus its retries).
const MaxTried = 16

// Tried is the small set of backend indices already tried for one
// connection. The zero value is empty. It lives on the caller's stack or in
// the connection, so a pick allocates nothing.
type Tried struct {
	n   int
	idx [MaxTried]int32
}

// Add records index i as tried. Past MaxTried entries it is ignored.
func (t *Tried) Add(i int) {
	if t.n < MaxTried {
		t.idx[t.n] = int32(i)
		t.n++
	}
}

// Has reports whether index i was tried.
func (t *Tried) Has(i int) bool {
	if t == nil {
		return false
	}
	for k := 0; k < t.n; k++ {
		if int(t.idx[k]) == i {
			return true
		}
	}
	return false
}

// Len is the number of indices recorded.
func (t *Tried) Len() int {
	if t == nil {
		return 0
	}
	return t.n
}

// Reset empties the set.
func (t *Tried) Reset() { t.n = 0 }

// Balancer is the algorithm built over one set of backends. It is immutable
// after construction and safe for concurrent use; picking goes through the
// Pickers it makes.
type Balancer interface {
	// NewPicker returns a Picker over the balancer's backends with state of
	// its own, for one caller at a time. It allocates, so a caller makes one
	// per balancer and keeps it (an event loop), or keeps a pool of them
	// (callers on arbitrary goroutines), rather than one per pick.
	NewPicker() Picker
}

// Picker picks backends. A Picker is not safe for concurrent use: each
// goroutine that picks uses its own, or holds one exclusively for the pick.
// Two Pickers of one Balancer never share written memory, and Pick
// allocates nothing.
type Picker interface {
	// Pick returns the index, in the slice the balancer was built from, of
	// the backend for a new connection, or -1 when every backend is
	// excluded by tried. key is the flow key from HashKey (only maglev
	// reads it). A stateful algorithm (wrr) advances the picker's own
	// sequence, which is smooth on its own.
	Pick(key uint64, tried *Tried) int
}

// Options tunes construction.
type Options struct {
	// TableSize is the Maglev lookup table size, a prime. 0 means 65537.
	TableSize int
}

// pickerSize is the size of every stateful picker: 128 bytes, a size class
// of the Go allocator whose objects are 128-byte aligned, so that a picker
// has two cache lines of its own (the adjacent-line prefetcher fetches them
// in pairs) and two pickers written by two cores never share one.
const pickerSize = 128
