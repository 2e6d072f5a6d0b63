package balancer

import (
	"math"
	"sync/atomic"
)

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
// Every picker runs its own sequence, as each nginx worker does, so pickers
// share no written memory and each picker's sequence is smooth on its own.
// The sequence is periodic, so when its period is at most maxSchedule it is
// computed once and a picker only keeps its position in it. The k-th picker
// made starts the fractional part of k/φ of the way in (a golden-ratio Weyl
// sequence, which spreads any number of starting points nearly evenly over
// the cycle), so that the event loops do not all send their first
// connection to the same backend.
type wrr struct {
	weights []int64
	total   int64
	// sched is the cycle, if it was short enough to precompute.
	sched []uint32
	// made counts the pickers made, for their starting points.
	made atomic.Uint64
}

// wrrPicker is one caller's place in a wrr sequence: the position in
// sched, or the current values of nginx's step.
type wrrPicker struct {
	w     *wrr
	sched []uint32 // w.sched, read without going through w
	pos   int64
	cur   []int64
	_     [pickerSize - 64]byte
}

// linePad is the gap, in int64s, left on either side of a picker's current
// values: two cache lines, so that no other object shares theirs.
const linePad = 16

var (
	_ Balancer = (*wrr)(nil)
	_ Picker   = (*wrrPicker)(nil)
)

func newWRR(backends []Backend) *wrr {
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
	}
	return w
}

// NewPicker returns a picker at the next starting point of the cycle, or
// with nginx's current values all zero.
func (w *wrr) NewPicker() Picker {
	p := &wrrPicker{w: w, sched: w.sched}
	if w.sched == nil {
		n := len(w.weights)
		p.cur = make([]int64, n+2*linePad)[linePad : linePad+n : linePad+n]
		return p
	}
	k := w.made.Add(1) - 1
	p.pos = int64(reduce(k*golden64, uint64(len(w.sched))))
	return p
}

// Pick returns the next backend of the picker's sequence. A tried backend
// is passed over: on the precomputed cycle the picker moves on to the next
// entry that is not tried, spending the skipped turns, so the cycle itself
// stays smooth; in nginx's step the tried backends sit the pick out, as
// nginx does for its retries.
func (p *wrrPicker) Pick(_ uint64, tried *Tried) int {
	if p.sched == nil {
		return p.w.step(p.cur, tried)
	}
	pos := p.pos
	period := int64(len(p.sched))
	if tried.Len() > 0 && allTried(tried, len(p.w.weights)) {
		return -1
	}
	for k := int64(0); k < period; k++ {
		b := int(p.sched[pos])
		if pos++; pos == period {
			pos = 0
		}
		if tried.Len() == 0 || !tried.Has(b) {
			p.pos = pos
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
