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

// seedLoops gives each loop its own random sequence, derived from seed.
func seedLoops(loops int, seed uint64) []loopRand {
	rs := make([]loopRand, loops)
	for l := range rs {
		rs[l].s = mix64(seed + uint64(l)*golden64)
	}
	return rs
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
	rand  []loopRand
}

var _ Balancer = (*leastConn)(nil)

func newLeastConn(backends []Backend, loops int, seed uint64) *leastConn {
	return &leastConn{backs: countedOf(backends), rand: seedLoops(loops, seed)}
}

// Pick returns the untried backend with the smallest Active/Weight. Ties are
// broken uniformly at random (reservoir sampling over the tied backends),
// so that connections arriving together on several loops, which all see the
// same counts, do not herd onto the first backend. Pick panics if loop is
// not in [0, Options.Loops).
func (lc *leastConn) Pick(_ uint64, loop int, tried *Tried) int {
	r := &lc.rand[loop]
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
