package balancer

import "sync/atomic"

// p2c is the power of two choices: draw two distinct backends at random,
// each with probability proportional to its weight, and keep the one with
// fewer active connections per weight. It needs no scan of the pool, yet
// keeps the most loaded backend within O(log log N) of the mean.
type p2c struct {
	backs []counted
	// start[i] is the sum of the weights before backend i, start[n] the
	// total: backend i owns [start[i], start[i+1]) of the weight line.
	start []uint64
	// Walker's alias table over the weights, for O(1) draws: column c is
	// kept when a draw in [0, total) falls below keep[c], else it gives
	// alias[c]. In integers, so the draw is exactly weight/total.
	keep  []uint64
	alias []int32
	equal bool // all weights equal: draw indices directly
	seed  uint64
	// made counts the pickers made, each seeded differently.
	made atomic.Uint64
}

// p2cPicker is one caller's p2c: its random source makes the draws.
type p2cPicker struct {
	p *p2c
	r pickRand
	_ [pickerSize - 16]byte
}

// maxRedraw bounds the alias redraws when the second draw hits the first
// backend again; a heavy first backend then falls back to the exact cut
// weight line.
const maxRedraw = 3

var (
	_ Balancer = (*p2c)(nil)
	_ Picker   = (*p2cPicker)(nil)
)

func newP2C(backends []Backend, seed uint64) *p2c {
	p := &p2c{backs: countedOf(backends), start: make([]uint64, len(backends)+1), equal: true, seed: seed}
	for i, b := range backends {
		p.start[i+1] = p.start[i] + uint64(b.Weight)
		p.equal = p.equal && b.Weight == backends[0].Weight
	}
	p.keep, p.alias = aliasTable(backends, p.start[len(backends)])
	return p
}

// aliasTable builds the alias table by Vose's method in integers: each
// column holds total units, backend i brings weight·n units, and a column
// that is short is topped up from one that is long.
func aliasTable(backends []Backend, total uint64) ([]uint64, []int32) {
	n := len(backends)
	keep, alias := make([]uint64, n), make([]int32, n)
	units := make([]uint64, n)
	var small, large []int32
	for i, b := range backends {
		units[i] = uint64(b.Weight) * uint64(n)
		alias[i] = int32(i)
		if units[i] < total {
			small = append(small, int32(i))
		} else {
			large = append(large, int32(i))
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s, l := small[len(small)-1], large[len(large)-1]
		small = small[:len(small)-1]
		keep[s], alias[s] = units[s], l
		units[l] -= total - units[s]
		if units[l] < total {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	// The units left sum to total per column left, and in integers nothing
	// is lost to rounding, so small is empty and every column left in large
	// holds exactly total: it keeps itself.
	for _, i := range append(small, large...) {
		keep[i] = total
	}
	return keep, alias
}

// NewPicker returns a picker with a random sequence of its own.
func (p *p2c) NewPicker() Picker {
	return &p2cPicker{p: p, r: seedPicker(p.seed, p.made.Add(1)-1)}
}

// draw picks a backend with probability weight/total.
func (p *p2c) draw(r *pickRand) int {
	c := reduce(r.next(), uint64(len(p.keep)))
	if reduce(r.next(), p.start[len(p.keep)]) < p.keep[c] {
		return int(c)
	}
	return int(p.alias[c])
}

// Pick draws two distinct untried backends and returns the lighter.
func (pk *p2cPicker) Pick(_ uint64, tried *Tried) int {
	p, r := pk.p, &pk.r
	n := len(p.backs)
	if tried.Len() > 0 {
		return p.pickExcluding(r, tried)
	}
	if n < 2 {
		return n - 1
	}
	var a, b int
	if p.equal {
		a = int(reduce(r.next(), uint64(n)))
		// b is drawn from the n-1 indices other than a.
		if b = int(reduce(r.next(), uint64(n-1))); b >= a {
			b++
		}
	} else {
		// Redrawing until b differs from a draws b from the others in
		// proportion to weight. A few redraws nearly always do; if not, a
		// is heavy, and b is drawn on the weight line with a's interval
		// cut out, which is exact too but costs a binary search.
		a, b = p.draw(r), -1
		for i := 0; i < maxRedraw && b < 0; i++ {
			if b = p.draw(r); b == a {
				b = -1
			}
		}
		if b < 0 {
			wa := uint64(p.backs[a].weight)
			u := reduce(r.next(), p.start[n]-wa)
			if u >= p.start[a] {
				u += wa
			}
			b = p.find(u)
		}
	}
	return p.better(a, b)
}

// better keeps a unless b is strictly lighter; a was drawn in proportion to
// weight, so idle backends are chosen in proportion to weight too.
func (p *p2c) better(a, b int) int {
	ba, bb := &p.backs[a], &p.backs[b]
	if lighter(bb.active.Load(), bb.weight, ba.active.Load(), ba.weight) {
		return b
	}
	return a
}

// find returns the backend whose interval of the weight line holds u, for
// u < total, by binary search.
func (p *p2c) find(u uint64) int {
	lo, hi := 0, len(p.backs)-1
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if p.start[mid+1] <= u {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// pickExcluding is Pick for a retry: both draws skip the tried backends.
// The tried indices go, sorted and without duplicates, into a small array
// on the stack; a draw is made on the weight line with their intervals cut
// out and mapped back by stepping over each cut interval below it.
func (p *p2c) pickExcluding(r *pickRand, tried *Tried) int {
	n := len(p.backs)
	var cut [MaxTried + 1]int32
	k := 0
	total := p.start[n]
	for i := 0; i < tried.n; i++ {
		t := tried.idx[i]
		if t < 0 || int(t) >= n {
			continue
		}
		j := k
		for j > 0 && cut[j-1] > t {
			j--
		}
		if j > 0 && cut[j-1] == t {
			continue
		}
		copy(cut[j+1:k+1], cut[j:k])
		cut[j] = t
		k++
		total -= uint64(p.backs[t].weight)
	}
	switch n - k {
	case 0:
		return -1
	case 1:
		for i := 0; i < n; i++ {
			if !tried.Has(i) {
				return i
			}
		}
	}
	a := p.findCut(reduce(r.next(), total), cut[:k])
	wa := uint64(p.backs[a].weight)
	j := k
	for j > 0 && int(cut[j-1]) > a {
		j--
	}
	copy(cut[j+1:k+1], cut[j:k])
	cut[j] = int32(a)
	b := p.findCut(reduce(r.next(), total-wa), cut[:k+1])
	return p.better(a, b)
}

// findCut maps u, a point on the weight line with the intervals of the
// backends in cut (sorted) removed, back onto the full line and finds it.
func (p *p2c) findCut(u uint64, cut []int32) int {
	for _, c := range cut {
		if u < p.start[c] {
			break
		}
		u += uint64(p.backs[c].weight)
	}
	return p.find(u)
}
