package balancer

import (
	"fmt"
	"slices"
	"strings"
)

// Maglev table sizes. The size must be a prime so that every skip in
// [1, size-1] walks the whole table; the paper advises a size well above 100
// times the number of backends.
const (
	// DefaultTableSize is used when Options.TableSize is 0.
	DefaultTableSize = 65537
	// MinTableSize is the smallest prime accepted.
	MinTableSize = 2
	// MaxTableSize bounds the table (64 MiB at the widest entries) and keeps
	// slot arithmetic within uint32.
	MaxTableSize = 1 << 24
)

// maxWalk bounds the table walk of a pick whose first backend was already
// tried before Pick falls back to a scan of the backends.
const maxWalk = 64

// Maglev is the consistent-hashing balancer of Eisenbud et al., "Maglev: A
// Fast and Reliable Software Network Load Balancer" (NSDI 2016), section
// 3.4, with weights. Backends are ordered by name and the hashes are
// fixed, so every lbd instance given the same pool builds the same table
// and sends a client to the same backend; when one backend leaves, few
// other keys move.
//
// Weights are proportional, unlike Katran's first version where a weight
// only biased the first round: the populate loop gives backend i its k-th
// turn at virtual time k/weight_i (Adams' apportionment), so every backend
// gets at least one slot and its slot count is within one of its exact
// share, or below it by at most N·weight_i/W (N backends, W the sum of
// weights). With equal weights this is the paper's round robin and each
// backend gets ⌊M/N⌋ or ⌈M/N⌉ slots.
type Maglev struct {
	m uint64 // table size, a prime
	n int    // number of backends
	// Exactly one table is set: 16-bit entries whenever the backend indices
	// fit, which halves the cache footprint of a pick.
	t16 []uint16
	t32 []uint32
}

var (
	_ Balancer = (*Maglev)(nil)
	_ Picker   = (*Maglev)(nil)
)

// NewMaglev builds a Maglev table over backends; opts.TableSize is the table
// size (0 means DefaultTableSize). New(AlgorithmMaglev, ...) calls it; it is
// exported for tools such as bench/maglev that study the table itself.
func NewMaglev(backends []Backend, opts Options) (*Maglev, error) {
	m, err := tableSize(opts.TableSize, len(backends))
	if err != nil {
		return nil, err
	}
	if err := validate(backends, false, true); err != nil {
		return nil, err
	}
	mg := &Maglev{m: m, n: len(backends)}
	if mg.n == 0 {
		return mg, nil
	}
	order := make([]int, mg.n)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(backends[a].Name, backends[b].Name) })
	if mg.n <= 1<<16 {
		mg.t16 = make([]uint16, m)
		populate(mg.t16, backends, order)
	} else {
		mg.t32 = make([]uint32, m)
		populate(mg.t32, backends, order)
	}
	return mg, nil
}

// tableSize validates a configured table size for n backends and applies the
// default.
func tableSize(size, n int) (uint64, error) {
	if size == 0 {
		size = DefaultTableSize
	}
	if size < MinTableSize || size > MaxTableSize || !IsPrime(size) {
		return 0, fmt.Errorf("%w: %d is not a prime in [%d, %d]", ErrTableSize, size, MinTableSize, MaxTableSize)
	}
	if size < n {
		return 0, fmt.Errorf("%w: %d slots cannot hold %d backends", ErrTableSize, size, n)
	}
	return uint64(size), nil
}

// IsPrime tests by trial division, which is exact and, for sizes up to
// MaxTableSize, at most 2048 divisions.
func IsPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// filler holds the populate state: each backend's next position in its
// permutation and its skip, and a bitmap of the slots already taken. The
// bitmap (8 KiB at 65537 slots) stays in L1 while the table does not, and
// the many probes of the last rounds read only the bitmap.
type filler struct {
	m      uint32
	pos    []uint32
	skip   []uint32
	filled []uint64
}

// claim advances backend k along its permutation to the first free slot,
// takes it and returns it. The permutation of backend k is
// (offset_k + j·skip_k) mod m, j = 0, 1, ...; m is prime, so it visits
// every slot and claim always finds one while any is free.
func (f *filler) claim(k int) uint32 {
	p, s := f.pos[k], f.skip[k]
	for f.filled[p>>6]&(1<<(p&63)) != 0 {
		p += s
		if p >= f.m {
			p -= f.m
		}
	}
	f.filled[p>>6] |= 1 << (p & 63)
	next := p + s
	if next >= f.m {
		next -= f.m
	}
	f.pos[k] = next
	return p
}

// populate fills table with indices into backends; order lists those
// indices sorted by name, and turn ties are broken in that order.
func populate[E uint16 | uint32](table []E, backends []Backend, order []int) {
	f := newFiller(uint32(len(table)), backends, order)
	for _, i := range order {
		if backends[i].Weight != backends[order[0]].Weight {
			populateWeighted(table, f, backends, order)
			return
		}
	}
	populateEqual(table, f, order)
}

func newFiller(m uint32, backends []Backend, order []int) *filler {
	n := len(order)
	f := &filler{
		m:      m,
		pos:    make([]uint32, n),
		skip:   make([]uint32, n),
		filled: make([]uint64, (m+63)/64),
	}
	for k, i := range order {
		name := backends[i].Name
		f.pos[k] = uint32(hashString(name, seedOffset) % uint64(m))
		f.skip[k] = 1
		if m > 1 {
			f.skip[k] = uint32(hashString(name, seedSkip)%uint64(m-1)) + 1
		}
	}
	return f
}

// populateEqual is the paper's populate: one turn per backend per round, in
// name order.
func populateEqual[E uint16 | uint32](table []E, f *filler, order []int) {
	left := len(table)
	for {
		for k := range order {
			table[f.claim(k)] = E(order[k])
			if left--; left == 0 {
				return
			}
		}
	}
}

// populateWeighted gives backend k its turn j at virtual time j/w_k, and
// takes the first M turns in the order of (time, name order): Adams'
// method. Rather than order every turn with a heap, the build runs in
// rounds of length 1/wmax: backend k's turn j falls in round ⌊j·wmax/w_k⌋,
// at most once per round, and a round's turns are taken in the order the
// backends were queued, so a turn costs O(1). All turns of earlier rounds
// come before those of a round in time, and those of later rounds after, so
// only the last round, which the table may not have room for, is sorted by
// exact time; the counts are Adams' exactly. With equal weights every
// backend has a turn in every round, in name order: populateEqual.
func populateWeighted[E uint16 | uint32](table []E, f *filler, backends []Backend, order []int) {
	st := newCalendar(backends, order)
	for r, left := 0, len(table); left > 0; r++ {
		due := st.take(r)
		if len(due) > left {
			st.sortByTime(due)
			due = due[:left]
		}
		for _, k := range due {
			table[f.claim(int(k))] = E(order[k])
			st.queue(k)
		}
		left -= len(due)
	}
}

// calendar is the round schedule of the weighted populate: a ring of FIFO
// buckets, one per round, holding the backends whose next turn falls in
// that round. Every round holds at least the heaviest backend, and a
// backend's next turn is at most ⌈wmax/wmin⌉ rounds ahead, so a ring of
// that many buckets plus one never wraps onto a pending round.
type calendar struct {
	w     []uint64 // weight, by name order
	turns []uint64 // turns taken
	// Backend k's next turn is in round q[k]; rem[k] carries the remainder
	// of turns·wmax/w so that the next round needs no division.
	q, rem     []uint64
	step, frac []uint64 // ⌊wmax/w⌋ and wmax mod w
	head, tail []int32  // per bucket, -1 when empty
	next       []int32  // FIFO links
	due        []int32
}

func newCalendar(backends []Backend, order []int) *calendar {
	n := len(order)
	c := &calendar{
		w: make([]uint64, n), turns: make([]uint64, n), q: make([]uint64, n), rem: make([]uint64, n),
		step: make([]uint64, n), frac: make([]uint64, n), next: make([]int32, n),
	}
	wmax, wmin := uint64(0), uint64(MaxWeight)
	for k, i := range order {
		c.w[k] = uint64(backends[i].Weight)
		wmax, wmin = max(wmax, c.w[k]), min(wmin, c.w[k])
	}
	for k := range c.w {
		c.step[k], c.frac[k] = wmax/c.w[k], wmax%c.w[k]
	}
	ring := (wmax+wmin-1)/wmin + 1
	c.head, c.tail = make([]int32, ring), make([]int32, ring)
	for b := range c.head {
		c.head[b], c.tail[b] = -1, -1
	}
	// Every backend's turn 0 is at time 0: round 0, in name order.
	for k := range order {
		c.push(0, int32(k))
	}
	return c
}

func (c *calendar) push(bucket uint64, k int32) {
	c.next[k] = -1
	if c.tail[bucket] < 0 {
		c.head[bucket] = k
	} else {
		c.next[c.tail[bucket]] = k
	}
	c.tail[bucket] = k
}

// take empties round r's bucket into c.due, in queue order.
func (c *calendar) take(r int) []int32 {
	b := uint64(r) % uint64(len(c.head))
	c.due = c.due[:0]
	for k := c.head[b]; k >= 0; k = c.next[k] {
		c.due = append(c.due, k)
	}
	c.head[b], c.tail[b] = -1, -1
	return c.due
}

// queue records that backend k took a turn and queues its next one.
func (c *calendar) queue(k int32) {
	c.turns[k]++
	c.q[k] += c.step[k]
	if c.rem[k] += c.frac[k]; c.rem[k] >= c.w[k] {
		c.rem[k] -= c.w[k]
		c.q[k]++
	}
	c.push(c.q[k]%uint64(len(c.head)), k)
}

// sortByTime orders turns by virtual time turns/w, exactly by
// cross-multiplication (turns ≤ 2^24, w ≤ 10^4), ties in name order.
func (c *calendar) sortByTime(due []int32) {
	slices.SortFunc(due, func(a, b int32) int {
		ta, tb := c.turns[a]*c.w[b], c.turns[b]*c.w[a]
		switch {
		case ta < tb:
			return -1
		case ta > tb:
			return 1
		}
		return int(a - b)
	})
}

// NewPicker returns the table itself: a Maglev pick keeps no state, so the
// table is a Picker that is safe for concurrent use.
func (mg *Maglev) NewPicker() Picker { return mg }

// Pick returns the backend that owns the key's slot. When that backend was
// already tried, it walks the table from the slot with a stride derived
// from the key, so the retry is as deterministic as the first pick and
// lands on other backends in proportion to their shares.
//
// The slot of a key, key mod M, and the retry walk must never change, for
// the same reason as the hashes (see hash.go).
func (mg *Maglev) Pick(key uint64, tried *Tried) int {
	if mg.n == 0 {
		return -1
	}
	s := key % mg.m
	b := mg.owner(s)
	if tried.Len() == 0 || !tried.Has(b) {
		return b
	}
	return mg.retry(key, s, tried)
}

func (mg *Maglev) owner(s uint64) int {
	if mg.t16 != nil {
		return int(mg.t16[s])
	}
	return int(mg.t32[s])
}

func (mg *Maglev) retry(key, s uint64, tried *Tried) int {
	if allTried(tried, mg.n) {
		return -1
	}
	if mg.m > 1 {
		stride := 1 + mix64(key^seedRetry)%(mg.m-1)
		for i := 0; i < maxWalk; i++ {
			if s += stride; s >= mg.m {
				s -= mg.m
			}
			if b := mg.owner(s); !tried.Has(b) {
				return b
			}
		}
	}
	// The backends left own few slots (say weight 1 among weights of
	// 10000): scan them rather than walk the whole table.
	start := int(key % uint64(mg.n))
	for i := 0; i < mg.n; i++ {
		if b := (start + i) % mg.n; !tried.Has(b) {
			return b
		}
	}
	return -1
}

// TableSize is the number of slots, M.
func (mg *Maglev) TableSize() int { return int(mg.m) }

// Slot is the slot that key maps to: key mod M.
func (mg *Maglev) Slot(key uint64) int { return int(key % mg.m) }

// Owner is the index of the backend that owns slot, or -1 for a table
// without backends. Tools and tests read the table through it.
func (mg *Maglev) Owner(slot int) int {
	if mg.n == 0 {
		return -1
	}
	return mg.owner(uint64(slot))
}
