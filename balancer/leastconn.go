package balancer

import "sync/atomic"

// counted is a backend as least_conn and p2c see it.
type counted struct {
	active *atomic.Int64
	weight int64
}

func countedOf(backends []Backend) []counted {
	cs := make([]counted, len(backends))
	for i, b := range backends {
		cs[i] = counted{active: b.Active, weight: int64(b.Weight)}
	}
	return cs
}

// lighter reports whether a carries less load per weight than b:
// a.active/a.weight < b.active/b.weight, cross-multiplied so that no
// division or float is needed (active·weight stays far below 2^63).
func lighter(aActive, aWeight, bActive, bWeight int64) bool {
	return aActive*bWeight < bActive*aWeight
}

// leastConn picks the backend with the fewest active connections per
// weight, scanning all of them: O(N) per pick.
type leastConn struct {
	backs []counted
	seed  uint64
	// made counts the pickers made, each seeded differently.
	made atomic.Uint64
}

// leastConnPicker is one caller's least_conn: its random source breaks
// ties.
type leastConnPicker struct {
	backs []counted
	r     pickRand
	_     [pickerSize - 32]byte
}

var (
	_ Balancer = (*leastConn)(nil)
	_ Picker   = (*leastConnPicker)(nil)
)

func newLeastConn(backends []Backend, seed uint64) *leastConn {
	return &leastConn{backs: countedOf(backends), seed: seed}
}

// NewPicker returns a picker with a random sequence of its own.
func (lc *leastConn) NewPicker() Picker {
	return &leastConnPicker{backs: lc.backs, r: seedPicker(lc.seed, lc.made.Add(1)-1)}
}

// Pick returns the untried backend with the smallest Active/Weight. Ties are
// broken uniformly at random (reservoir sampling over the tied backends),
// so that connections arriving together through several pickers (event
// loops), which all see the same counts, do not herd onto the first backend.
func (lc *leastConnPicker) Pick(_ uint64, tried *Tried) int {
	r := &lc.r
	check := tried.Len() > 0
	best, ties := -1, uint64(0)
	var bestActive, bestWeight int64
	for i := range lc.backs {
		if check && tried.Has(i) {
			continue
		}
		b := &lc.backs[i]
		a := b.active.Load()
		switch {
		case best < 0 || lighter(a, b.weight, bestActive, bestWeight):
			best, bestActive, bestWeight, ties = i, a, b.weight, 1
		case !lighter(bestActive, bestWeight, a, b.weight):
			// A tie: keep each of the tied backends with probability
			// 1/ties.
			ties++
			if reduce(r.next(), ties) == 0 {
				best, bestActive, bestWeight = i, a, b.weight
			}
		}
	}
	return best
}
