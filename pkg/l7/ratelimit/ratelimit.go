// Package ratelimit keeps one token bucket per key (a client address or
// network, a header value, a JWT claim) for the rate_limit of an HTTP route.
//
// What this package adds to a token bucket is the key table, built to
// survive a flood of distinct keys:
//
//   - Keys are fixed-size: a Key is a 128-bit hash of the value (see Key),
//     so an 8 KB header costs the table what a 4-byte address does, and no
//     key bytes are kept.
//   - IPv6 clients are counted by network (AddrKey's prefix length, 64 by
//     default), since one host can use every address of its /64.
//   - The table is bounded by MaxKeys, and its heap by MaxBytes.
//   - Keys whose buckets have refilled are forgotten every PruneInterval, so
//     the memory of a past flood goes back to the heap.
//   - The table is sharded, so that many goroutines do not queue on one lock.
//
// The buckets behave exactly like golang.org/x/time/rate limiters, against
// which a test checks them; see Limiter for why they are not ones. The time
// is always passed in, never read, so tests drive it by hand.
package ratelimit

import (
	"fmt"
	"math"
	"sync"
	"time"
	"unsafe"
)

// DefaultMaxKeys is the size of a Limiter's key table when MaxKeys is not
// given. MaxBytes(DefaultMaxKeys) is about 6.7 MB, whatever the keys.
const DefaultMaxKeys = 100_000

// BytesPerKey is what one key of MaxKeys costs at most: its entry (40
// bytes) and four 4-byte slots of the index, whose size is the first power
// of two at least twice the keys, so less than four times them. That is 56
// bytes on 64-bit platforms; a full default table measures about 52
// (TestFloodMemoryBound logs it), against 117 with a Go map and about 200
// plus the key's bytes before keys were hashed.
const BytesPerKey = int(unsafe.Sizeof(entry{})) + 4*int(unsafe.Sizeof(uint32(0)))

// allocSlack bounds what the allocator adds to one allocation: a size
// class wastes at most an eighth of 32 KiB, a larger object less than one
// page.
const allocSlack = 8192

// shardFixed bounds what a shard costs besides its keys: the shard itself,
// the list's sentinel entry, the smallest index (8 slots), and the rounding
// of its two arrays.
const shardFixed = int(unsafe.Sizeof(shard{})) + int(unsafe.Sizeof(entry{})) + 8*4 + 2*allocSlack

// MaxBytes bounds the live heap that a Limiter of maxKeys keys takes: the
// Limiter and its shards, about 1 MB, and BytesPerKey for each key. The
// bound follows from the layout, not from the runtime's maps (see Limiter),
// so no flood, however long, can exceed it (TestFloodMemoryBound and
// TestMemoryBound check it); Prune gives back all but the shards.
func MaxBytes(maxKeys int) int {
	return int(unsafe.Sizeof(Limiter{})) + allocSlack + maxShards*shardFixed + maxKeys*BytesPerKey
}

// PruneInterval is how often a Limiter forgets the keys whose buckets have
// refilled (see Limiter). A minute lets the memory of a flood go soon after
// it, and makes the cost, one pass over the table, vanish among the
// requests of a minute.
const PruneInterval = time.Minute

// maxShards bounds the number of independently locked parts of the table:
// 64 is well above the number of cores lbd runs on, so two requests rarely
// wait for the same lock.
const maxShards = 64

// maxMaxKeys bounds MaxKeys so that a shard's entries can be numbered with
// 32 bits. It is far above any table that fits in memory.
const maxMaxKeys = 1 << 31

// evictScan is how many of the least recently used entries eviction looks at
// for a full bucket before it gives up and takes the oldest one. A short scan
// keeps the cost of inserting a key constant.
const evictScan = 8

// maxRetryAfter caps the Retry-After value so that absurdly low rates do
// not overflow a time.Duration.
const maxRetryAfter = 1 << 30 // seconds, about 34 years

// Limiter is a set of token buckets, one per Key, all with the same rate
// and burst. It is safe for concurrent use.
//
// The table holds at most MaxKeys keys in MaxBytes(MaxKeys) bytes. Allow
// also prunes it: when a request comes to a part of the table (a shard)
// that has not been pruned for PruneInterval, the keys of that part whose
// buckets are full are forgotten, which changes no answer. The timer runs
// on the times Allow is given, so it needs no goroutine and no clock; a
// Limiter that gets no requests at all keeps its keys, within the bound,
// until it does or until Prune is called.
//
// The table is built for a flood, in which every request adds a key and
// evicts one:
//
//   - A bucket is 16 bytes in its entry, not a rate.Limiter: that is 80
//     bytes with a mutex the shard's lock makes useless, and it cannot be
//     refilled, so each new key would need a new one. Reusing the evicted
//     entry instead means that a flood, once the table is full, allocates
//     nothing.
//   - A shard is not a Go map but an index, with linear probing, into an
//     array of entries. A Go map whose keys are deleted and inserted for
//     ever keeps growing well past its size (golang/go#70886): one of 1,562
//     keys went from 28 to 263 bytes a key as floods grew longer, and no
//     bound is documented. The index and the array are sized from the
//     number of keys alone, and hold no pointers for the collector to scan.
type Limiter struct {
	limit      float64 // tokens a second
	burst      float64
	pruneEvery int64  // PruneInterval, but for tests
	mask       uint64 // len(shards)-1
	shards     []shard
}

// shard is one independently locked part of the key table.
//
// Its entries live in one array and are numbered by their place in it.
// entries[0] is the sentinel of a doubly linked list of the keys in order
// of use, most recent first (entries[0].next), so the least recently used
// key (entries[0].prev) is found in constant time; an entry that is
// neither the sentinel nor on the list is on the free list, linked by next
// from free. The array only grows while the shard holds fewer than max
// keys, so it never has more than max+1 entries.
//
// index finds an entry by key: an open-addressed table of entry numbers
// with linear probing, 0 marking an empty slot, whose length is a power of
// two and at least twice n. A key's probe starts at its low hi bits (the
// shard was picked with lo's).
type shard struct {
	mu      sync.Mutex
	max     int
	n       int // keys held
	entries []entry
	free    uint32
	index   []uint32

	// Entries keep time as nanoseconds since epoch, the first instant the
	// shard was given, which takes 8 bytes instead of a time.Time's 24 and
	// keeps the monotonic reading of the times it is given.
	epoch     time.Time
	started   bool
	nextPrune int64 // since epoch

	// Shards sit side by side in one slice; the padding keeps two locks off
	// one cache line, so cores hitting different shards do not slow each
	// other down.
	_ [64]byte
}

// entry is one key's bucket: it held tokens at last, and refills at the
// Limiter's rate up to its burst.
type entry struct {
	key        Key
	tokens     float64
	last       int64 // since the shard's epoch
	prev, next uint32
}

// Option configures a Limiter.
type Option func(*options)

type options struct {
	maxKeys int

	// For tests only.
	shards     int           // 0 means as many as fit, up to maxShards
	pruneEvery time.Duration // PruneInterval unless set
}

// MaxKeys bounds the number of keys the Limiter remembers; the default is
// DefaultMaxKeys. When the table is full, a new key takes the place of an
// idle one (see Allow). n must be between 1 and 2^31.
func MaxKeys(n int) Option {
	return func(o *options) { o.maxKeys = n }
}

// New returns a Limiter that allows each key perSecond events per second on
// average and up to burst events at once.
//
// perSecond must be positive and finite and burst at least 1; the config is
// validated before New is called, so New panics otherwise rather than
// return a Limiter that refuses or allows everything.
func New(perSecond float64, burst int, opts ...Option) *Limiter {
	if !(perSecond > 0) || math.IsInf(perSecond, 1) {
		panic(fmt.Sprintf("ratelimit: rate %v is not a positive finite number", perSecond))
	}
	if burst < 1 {
		panic(fmt.Sprintf("ratelimit: burst %d is below 1", burst))
	}
	o := options{maxKeys: DefaultMaxKeys, pruneEvery: PruneInterval}
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxKeys < 1 || o.maxKeys > maxMaxKeys {
		panic(fmt.Sprintf("ratelimit: MaxKeys(%d) is not between 1 and 2^31", o.maxKeys))
	}

	// A power of two so that a shard is picked with a mask. Never more
	// shards than keys, and each shard gets the floor of an equal share, so
	// the table never holds more than maxKeys entries.
	n := o.shards
	if n == 0 {
		n = maxShards
		for n > o.maxKeys {
			n /= 2
		}
	}
	l := &Limiter{
		limit:      perSecond,
		burst:      float64(burst),
		pruneEvery: int64(o.pruneEvery),
		mask:       uint64(n - 1),
		shards:     make([]shard, n),
	}
	for i := range l.shards {
		s := &l.shards[i]
		s.max = o.maxKeys / n
		s.entries = make([]entry, 1) // the sentinel, linked to itself
	}
	return l
}

// Allow takes one token from key's bucket at time now. If the bucket is
// empty it takes nothing and reports how long the client should wait:
// the time until one token is back, rounded up to whole seconds and at
// least one second, ready for a Retry-After header (RFC 9110, section
// 10.2.3, counts in whole seconds, and "0" would invite an immediate
// retry that fails again). A refused request costs the client nothing, so
// retrying after retryAfter succeeds unless others used the same key.
//
// now must not go backwards by much between calls; time.Now(), which
// carries a monotonic reading, is right.
//
// When the table is full, a new key evicts another one. Eviction first
// looks, among the least recently used keys, for one whose bucket has
// refilled completely: a full bucket is indistinguishable from a new one,
// so forgetting it loses nothing. Only if there is none does the least
// recently used key go, and with it the debt its bucket still had: when it
// comes back it starts with a full bucket, so it gains at most burst tokens.
// A key in debt is only that exposed once about MaxKeys other keys have
// been used since it was last seen (its shard's share of MaxKeys, in its
// own shard); every request, allowed or refused, counts as a use. That
// takes a flood, and surviving a flood of many clients is what MaxKeys is
// for: refusing new keys instead would let the flood shut out every new
// client. Raise MaxKeys if legitimate traffic comes close to it.
func (l *Limiter) Allow(key Key, now time.Time) (ok bool, retryAfter time.Duration) {
	s := &l.shards[key.lo&l.mask]
	s.mu.Lock()
	t := s.since(now, l)
	if t >= s.nextPrune {
		s.prune(t, l)
		s.nextPrune = addSat(t, l.pruneEvery)
	}
	_, x := s.find(key)
	if x == 0 {
		x = s.insert(key, t, l)
	} else {
		s.touch(x)
	}
	e := &s.entries[x]
	tokens := e.tokensAt(t, l)
	// A refusal leaves the bucket as it was, so the wait is computed, not
	// reserved. The test is rate.Limiter's: it allows when the missing
	// fraction of a token would take under a nanosecond to come back.
	if left := tokens - 1; left >= 0 || -left/l.limit*float64(time.Second) < 1 {
		e.tokens, e.last = left, t
		s.mu.Unlock()
		return true, 0
	}
	s.mu.Unlock()
	return false, retryAfterFor(tokens, l.limit)
}

// retryAfterFor returns the whole seconds, at least one, until a bucket that
// holds tokens (less than one) has one token again at limit tokens a second.
func retryAfterFor(tokens, limit float64) time.Duration {
	secs := math.Ceil((1 - tokens) / limit)
	switch {
	case !(secs >= 1): // also catches NaN
		secs = 1
	case secs > maxRetryAfter:
		secs = maxRetryAfter
	}
	return time.Duration(secs) * time.Second
}

// Len returns the number of keys the Limiter currently remembers.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += s.n
		s.mu.Unlock()
	}
	return n
}

// Prune forgets every key whose bucket is full at now and returns how many
// it forgot. Forgetting a full bucket changes no answer Allow gives, so
// Prune may run at any time. Allow already prunes every PruneInterval;
// Prune is for a caller that wants the memory back sooner, or from a
// Limiter that gets no more requests.
func (l *Limiter) Prune(now time.Time) int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		if s.started {
			n += s.prune(s.since(now, l), l)
		}
		s.mu.Unlock()
	}
	return n
}

// since returns now as nanoseconds since the shard's epoch, which the first
// call sets. s.mu must be held.
func (s *shard) since(now time.Time, l *Limiter) int64 {
	if !s.started {
		s.epoch, s.started = now, true
		s.nextPrune = l.pruneEvery
	}
	return int64(now.Sub(s.epoch))
}

// prune forgets the shard's full buckets at t and returns how many it
// forgot. s.mu must be held.
func (s *shard) prune(t int64, l *Limiter) int {
	before := s.n
	for x := s.entries[0].prev; x != 0; {
		prev := s.entries[x].prev
		if s.entries[x].tokensAt(t, l) >= l.burst {
			s.remove(x)
			s.entries[x].next, s.free = s.free, x
		}
		x = prev
	}
	if s.n < (len(s.entries)-1)/2 {
		// Mostly free entries: copy the live ones so the arrays shrink.
		s.compact()
	}
	return before - s.n
}

// find returns the place in the index of key's entry and the entry's
// number, or 0 for a key the shard does not hold. s.mu must be held.
func (s *shard) find(key Key) (slot int, x uint32) {
	if len(s.index) == 0 {
		return 0, 0
	}
	mask := len(s.index) - 1
	for i := int(key.hi) & mask; ; i = (i + 1) & mask {
		x := s.index[i]
		if x == 0 || s.entries[x].key == key {
			return i, x
		}
	}
}

// insert adds a new key with a full bucket, making room first if the shard
// is full, and returns its entry's number. s.mu must be held.
func (s *shard) insert(key Key, t int64, l *Limiter) uint32 {
	var x uint32
	switch {
	case s.n >= s.max:
		x = s.evict(t, l)
	case s.free != 0:
		x, s.free = s.free, s.entries[s.free].next
	default:
		if len(s.entries) == cap(s.entries) {
			// Grow by doubling, but never past max+1 entries: the array
			// is at most what the bound counts.
			entries := make([]entry, len(s.entries), min(2*cap(s.entries), s.max+1))
			copy(entries, s.entries)
			s.entries = entries
		}
		x = uint32(len(s.entries))
		s.entries = s.entries[:x+1]
	}
	if 2*(s.n+1) > len(s.index) {
		s.reindex(max(8, 2*len(s.index)))
	}
	s.entries[x] = entry{key: key, tokens: l.burst, last: t}
	slot, _ := s.find(key)
	s.index[slot] = x
	s.n++
	s.pushFront(x)
	return x
}

// evict removes one entry and returns its number for reuse: a full bucket
// among the evictScan least recently used entries if there is one, else
// the least recently used entry. The shard must not be empty; s.mu must be
// held.
func (s *shard) evict(t int64, l *Limiter) uint32 {
	victim := s.entries[0].prev
	x := victim
	for range evictScan {
		if x == 0 {
			break
		}
		if s.entries[x].tokensAt(t, l) >= l.burst {
			victim = x
			break
		}
		x = s.entries[x].prev
	}
	s.remove(victim)
	return victim
}

// remove takes entry x out of the index and the list; the caller reuses it
// or frees it. s.mu must be held.
func (s *shard) remove(x uint32) {
	e := &s.entries[x]
	s.entries[e.prev].next, s.entries[e.next].prev = e.next, e.prev
	e.prev, e.next = 0, 0
	s.n--

	// Backward-shift deletion (Knuth, TAOCP vol. 3, 6.4, Algorithm R):
	// later entries of the probe run move up into the hole, so that no
	// lookup stops early at it and no tombstone is needed.
	i, _ := s.find(e.key)
	mask := len(s.index) - 1
	for j := i; ; {
		s.index[i] = 0
		for {
			j = (j + 1) & mask
			y := s.index[j]
			if y == 0 {
				return
			}
			// y may move to i unless its home h lies cyclically in (i, j].
			h := int(s.entries[y].key.hi) & mask
			if i <= j && (i < h && h <= j) || i > j && (i < h || h <= j) {
				continue
			}
			s.index[i] = y
			i = j
			break
		}
	}
}

// reindex makes a new index of size slots, a power of two, for the entries
// on the list. s.mu must be held.
func (s *shard) reindex(size int) {
	s.index = make([]uint32, size)
	mask := size - 1
	for x := s.entries[0].next; x != 0; x = s.entries[x].next {
		i := int(s.entries[x].key.hi) & mask
		for s.index[i] != 0 {
			i = (i + 1) & mask
		}
		s.index[i] = x
	}
}

// compact copies the live entries, in order of use, into an array just big
// enough, and indexes them again, so that the memory of the free entries
// goes. s.mu must be held.
func (s *shard) compact() {
	entries := make([]entry, s.n+1)
	x := s.entries[0].next
	for y := 1; y <= s.n; y++ {
		entries[y] = s.entries[x]
		entries[y].prev, entries[y].next = uint32(y-1), uint32(y+1)
		x = s.entries[x].next
	}
	entries[0].next, entries[0].prev = 1, uint32(s.n)
	entries[s.n].next = 0 // also right when n is 0
	s.entries, s.free = entries, 0
	size := 0
	if s.n > 0 {
		size = 8
		for size < 2*s.n {
			size *= 2
		}
	}
	s.reindex(size)
}

// tokensAt returns the tokens e's bucket holds at t, as rate.Limiter's
// TokensAt does: a t before e.last counts as e.last.
func (e *entry) tokensAt(t int64, l *Limiter) float64 {
	elapsed := time.Duration(0)
	if t > e.last {
		elapsed = time.Duration(addSat(t, -e.last))
	}
	return min(e.tokens+elapsed.Seconds()*l.limit, l.burst)
}

// addSat returns a+b, or the nearest int64 if that overflows: offsets are
// clamped Durations (time.Time.Sub saturates), so their sums can overflow.
func addSat(a, b int64) int64 {
	c := a + b
	switch {
	case a > 0 && b > 0 && c < 0:
		return math.MaxInt64
	case a < 0 && b < 0 && c >= 0:
		return math.MinInt64
	}
	return c
}

// pushFront puts entry x, not on the list, at its head. s.mu must be held.
func (s *shard) pushFront(x uint32) {
	head := s.entries[0].next
	s.entries[x].prev, s.entries[x].next = 0, head
	s.entries[head].prev, s.entries[0].next = x, x
}

// touch moves entry x to the head of the list. s.mu must be held.
func (s *shard) touch(x uint32) {
	if s.entries[0].next == x {
		return
	}
	e := &s.entries[x]
	s.entries[e.prev].next, s.entries[e.next].prev = e.next, e.prev
	s.pushFront(x)
}
