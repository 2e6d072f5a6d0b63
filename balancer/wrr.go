package balancer

import "math"

// maxSchedule bounds the precomputed wrr cycle (sum of weights divided by
// their gcd). Up to it a pick is one load from the cycle; above it (large
// pools with diverse weights) a pick runs nginx's O(N) step.
const maxSchedule = 1 << 16

// wrr is nginx's smooth weighted round robin: each pick adds every
// backend's weight to its current value, chooses the largest current value
// (the first on ties) and subtracts the total weight from it. Weights 5, 1,
// 1 give a a b a c a a; over W/gcd picks each backend is chosen exactly
// weight/gcd times, and the choices of one backend are spread evenly.
//
// Every event loop runs its own sequence, as each nginx worker does, so
// loops share no written memory. The sequence is periodic, so when its
// period is at most maxSchedule it is computed once and a loop only keeps
// its position in it; loop l starts l/Loops of the way in, so that the
// loops do not all send their first connection to the same backend.
type wrr struct {
	weights []int64
	total   int64
	// sched is the cycle, if it was short enough to precompute.
	sched []uint32
	// state holds, for loop l at l*stride+linePad: the position in sched,
	// or the current values of nginx's step. The stride leaves a 128-byte
	// gap between loops so that no two loops write one cache line.
	state  []int64
	stride int
}

const linePad = 16 // int64s: two cache lines

var _ Balancer = (*wrr)(nil)

func newWRR(backends []Backend, loops int) *wrr {
	n := len(backends)
	w := &wrr{weights: make([]int64, n)}
	var g int64
	for i, b := range backends {
		w.weights[i] = int64(b.Weight)
		w.total += int64(b.Weight)
		g = gcd(int64(b.Weight), g)
	}
	if period := w.total / g; period <= maxSchedule {
		// The smooth sequence is invariant under scaling all weights, so
		// the cycle of weights/g is the cycle of the weights.
		cur := make([]int64, n)
		w.sched = make([]uint32, period)
		for k := range w.sched {
			w.sched[k] = uint32(w.step(cur, nil))
		}
		w.stride = 1 + linePad
		w.state = make([]int64, loops*w.stride+linePad)
		for l := 0; l < loops; l++ {
			w.state[l*w.stride+linePad] = int64(l) * period / int64(loops)
		}
		return w
	}
	w.stride = (n+7)/8*8 + linePad
	w.state = make([]int64, loops*w.stride+linePad)
	return w
}

// Pick returns the next backend of the calling loop's sequence. A tried
// backend is passed over: on the precomputed cycle the loop moves on to the
// next entry that is not tried, spending the skipped turns, so the cycle
// itself stays smooth; in nginx's step the tried backends sit the pick out,
// as nginx does for its retries. Pick panics if loop is not in
// [0, Options.Loops).
func (w *wrr) Pick(_ uint64, loop int, tried *Tried) int {
	base := loop*w.stride + linePad
	if w.sched == nil {
		return w.step(w.state[base:base+len(w.weights)], tried)
	}
	pos := &w.state[base]
	p := *pos
	period := int64(len(w.sched))
	if tried.Len() > 0 && allTried(tried, len(w.weights)) {
		return -1
	}
	for k := int64(0); k < period; k++ {
		b := int(w.sched[p])
		if p++; p == period {
			p = 0
		}
		if tried.Len() == 0 || !tried.Has(b) {
			*pos = p
			return b
		}
	}
	return -1 // not reached: some backend is not tried and has a turn
}

// step is one pick of nginx's algorithm on the current values cur. Tried
// backends neither gain weight nor are chosen, and the total subtracted is
// that of the others, which keeps the current values summing to zero.
func (w *wrr) step(cur []int64, tried *Tried) int {
	best, bestCur := -1, int64(math.MinInt64)
	if tried.Len() == 0 {
		for i, wt := range w.weights {
			c := cur[i] + wt
			cur[i] = c
			if c > bestCur {
				best, bestCur = i, c
			}
		}
		if best >= 0 {
			cur[best] -= w.total
		}
		return best
	}
	var total int64
	for i, wt := range w.weights {
		if tried.Has(i) {
			continue
		}
		c := cur[i] + wt
		cur[i] = c
		total += wt
		if c > bestCur {
			best, bestCur = i, c
		}
	}
	if best >= 0 {
		cur[best] -= total
	}
	return best
}
