// Package ratelimit keeps one token bucket per key (a client address, a
// header value, a JWT claim) for the rate_limit of an HTTP route.
//
// The buckets are golang.org/x/time/rate limiters. What this package adds is
// the key table: it is bounded, so that a flood of distinct keys cannot
// exhaust memory, and sharded, so that many goroutines do not queue on one
// lock. The time is always passed in, never read, so tests drive it by hand.
package ratelimit

import (
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys is the size of a Limiter's key table when MaxKeys is not
// given. An entry costs about 200 bytes plus the key, so the default table
// stays in the tens of megabytes however many clients there are.
const DefaultMaxKeys = 100_000

// maxShards bounds the number of independently locked parts of the table:
// 64 is well above the number of cores lbd runs on, so two requests rarely
// wait for the same lock.
const maxShards = 64

// evictScan is how many of the least recently used entries eviction looks at
// for a full bucket before it gives up and takes the oldest one. A short scan
// keeps the cost of inserting a key constant.
const evictScan = 8

// maxRetryAfter caps the Retry-After value so that absurdly low rates do
// not overflow a time.Duration.
const maxRetryAfter = 1 << 30 // seconds, about 34 years

// Limiter is a set of token buckets, one per key, all with the same rate
// and burst. It is safe for concurrent use.
type Limiter struct {
	limit  rate.Limit
	burst  int
	seed   maphash.Seed // random per Limiter, so clients cannot aim keys at one shard
	shards []shard
}

// shard is one independently locked part of the key table. Its entries form
// a doubly linked list in order of use, most recent first, so the least
// recently used key is found in constant time.
type shard struct {
	mu   sync.Mutex
	max  int
	keys map[string]*entry
	lru  entry // sentinel: lru.next is the most recent entry, lru.prev the least

	// Shards sit side by side in one slice; the padding keeps two locks off
	// one cache line, so cores hitting different shards do not slow each
	// other down.
	_ [64]byte
}

// entry is one key's bucket.
type entry struct {
	key        string
	lim        *rate.Limiter
	prev, next *entry
}

// Option configures a Limiter.
type Option func(*options)

type options struct {
	maxKeys int
	shards  int // tests only: 0 means the default
}

// MaxKeys bounds the number of keys the Limiter remembers; the default is
// DefaultMaxKeys. When the table is full, a new key takes the place of an
// idle one (see Limiter). n must be at least 1.
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
	o := options{maxKeys: DefaultMaxKeys}
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxKeys < 1 {
		panic(fmt.Sprintf("ratelimit: MaxKeys(%d) is below 1", o.maxKeys))
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
		limit:  rate.Limit(perSecond),
		burst:  burst,
		seed:   maphash.MakeSeed(),
		shards: make([]shard, n),
	}
	for i := range l.shards {
		s := &l.shards[i]
		s.max = o.maxKeys / n
		s.keys = make(map[string]*entry)
		s.lru.next, s.lru.prev = &s.lru, &s.lru
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
func (l *Limiter) Allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	s := &l.shards[maphash.String(l.seed, key)&uint64(len(l.shards)-1)]
	s.mu.Lock()
	e := s.keys[key]
	if e == nil {
		e = s.insert(key, now, l)
	} else {
		s.touch(e)
	}
	// AllowN does not change the bucket when it refuses, and TokensAt
	// only reads it, so a refusal consumes nothing: the wait is computed,
	// not reserved.
	if e.lim.AllowN(now, 1) {
		s.mu.Unlock()
		return true, 0
	}
	tokens := e.lim.TokensAt(now)
	s.mu.Unlock()
	return false, retryAfterFor(tokens, l.limit)
}

// retryAfterFor returns the whole seconds, at least one, until a bucket that
// holds tokens (less than one) has one token again at the given rate.
func retryAfterFor(tokens float64, limit rate.Limit) time.Duration {
	secs := math.Ceil((1 - tokens) / float64(limit))
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
		n += len(s.keys)
		s.mu.Unlock()
	}
	return n
}

// Prune forgets every key whose bucket is full at now and returns how many
// it forgot. Forgetting a full bucket changes no answer Allow gives, so
// Prune may run at any time; running it every minute or so gives the memory
// of a past flood back instead of keeping MaxKeys entries for ever.
func (l *Limiter) Prune(now time.Time) int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		before := len(s.keys)
		for e := s.lru.prev; e != &s.lru; {
			prev := e.prev
			if s.full(e, now, l) {
				s.remove(e)
			}
			e = prev
		}
		n += before - len(s.keys)
		if len(s.keys) < before/2 {
			// Go maps never shrink; a copy lets the old buckets go.
			keys := make(map[string]*entry, len(s.keys))
			for k, e := range s.keys {
				keys[k] = e
			}
			s.keys = keys
		}
		s.mu.Unlock()
	}
	return n
}

// insert adds a new key with a full bucket, making room first if the shard
// is full. s.mu must be held.
func (s *shard) insert(key string, now time.Time, l *Limiter) *entry {
	var e *entry
	if len(s.keys) >= s.max {
		e = s.evict(now, l)
	} else {
		e = new(entry)
	}
	// A rate.Limiter cannot be refilled by hand, and copying one would copy
	// its mutex, so every new key gets a new one.
	e.key, e.lim = key, rate.NewLimiter(l.limit, l.burst)
	s.keys[key] = e
	s.pushFront(e)
	return e
}

// evict removes one entry and returns it for reuse: a full bucket among the
// evictScan least recently used entries if there is one, else the least
// recently used entry. The shard must not be empty; s.mu must be held.
func (s *shard) evict(now time.Time, l *Limiter) *entry {
	victim := s.lru.prev
	e := victim
	for range evictScan {
		if e == &s.lru {
			break
		}
		if s.full(e, now, l) {
			victim = e
			break
		}
		e = e.prev
	}
	s.remove(victim)
	return victim
}

// full reports whether e's bucket holds burst tokens at now, which makes it
// the same as a bucket that was never used.
func (s *shard) full(e *entry, now time.Time, l *Limiter) bool {
	return e.lim.TokensAt(now) >= float64(l.burst)
}

func (s *shard) pushFront(e *entry) {
	e.prev, e.next = &s.lru, s.lru.next
	e.next.prev, s.lru.next = e, e
}

func (s *shard) touch(e *entry) {
	if s.lru.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	s.pushFront(e)
}

func (s *shard) remove(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(s.keys, e.key)
}
