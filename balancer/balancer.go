// Package balancer chooses the backend for each new TCP connection or UDP
// flow. It performs no I/O and imports nothing from pkg/: the pool package
// builds a Balancer from the backends that are currently eligible (up and
// neither draining nor disabled) and publishes it atomically; the event loops
// call Pick on every new connection.
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

// Balancer picks a backend. Implementations are immutable after
// construction apart from per-loop state, and safe for concurrent use by
// the event loops without locks.
type Balancer interface {
	// Pick returns the index, in the slice the balancer was built from, of
	// the backend for a new connection, or -1 when every backend is
	// excluded by tried. key is the flow key from HashKey (only maglev
	// reads it).
	// loop is the calling event loop's index, 0 <= loop < Options.Loops; a
	// stateful algorithm (wrr) keeps separate state per loop so that loops
	// never share a lock or a written cache line.
	Pick(key uint64, loop int, tried *Tried) int
}

// Options tunes construction.
type Options struct {
	// Loops is the number of event loops that will call Pick. 0 means 1.
	Loops int
	// TableSize is the Maglev lookup table size, a prime. 0 means 65537.
	TableSize int
}
