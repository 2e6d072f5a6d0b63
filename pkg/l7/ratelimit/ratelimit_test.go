package ratelimit

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// t0 is an arbitrary fixed instant; every test drives time from it by hand.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

type step struct {
	desc  string
	key   string        // given to ClaimKey
	at    time.Duration // since t0
	ok    bool
	retry time.Duration // wanted retryAfter when !ok
}

func run(t *testing.T, l *Limiter, steps []step) {
	t.Helper()
	for i, s := range steps {
		ok, retry := l.Allow(ClaimKey(s.key), at(s.at))
		want := s.retry
		if s.ok {
			want = 0
		}
		if ok != s.ok || retry != want {
			t.Errorf("step %d (%s): Allow(%q, t0+%v) = %v, %v; want %v, %v", i, s.desc, s.key, s.at, ok, retry, s.ok, want)
		}
	}
}

// TestBurstThenRefusal pins the promise of rate_limit: a new key gets burst
// requests at once, then 429s.
func TestBurstThenRefusal(t *testing.T) {
	run(t, New(1, 3), []step{
		{desc: "burst 1", key: "a", ok: true},
		{desc: "burst 2", key: "a", ok: true},
		{desc: "burst 3", key: "a", ok: true},
		{desc: "empty", key: "a", retry: time.Second},
		{desc: "refusals cost nothing", key: "a", retry: time.Second},
		{desc: "still one second", key: "a", retry: time.Second},
	})
}

// TestRefill pins the refill at rate tokens per second, capped at burst.
func TestRefill(t *testing.T) {
	ms := time.Millisecond
	run(t, New(2, 2), []step{
		{desc: "burst", key: "a", at: 0, ok: true},
		{desc: "burst", key: "a", at: 0, ok: true},
		{desc: "empty", key: "a", at: 0, retry: time.Second},
		{desc: "half a token", key: "a", at: 250 * ms, retry: time.Second},
		{desc: "one token", key: "a", at: 500 * ms, ok: true},
		{desc: "used", key: "a", at: 500 * ms, retry: time.Second},
		{desc: "long idle", key: "a", at: 10 * time.Second, ok: true},
		{desc: "capped at burst", key: "a", at: 10 * time.Second, ok: true},
		{desc: "no more than burst", key: "a", at: 10 * time.Second, retry: time.Second},
		{desc: "exactly one token later", key: "a", at: 10*time.Second + 500*ms, ok: true},
	})
}

// TestRetryAfter pins the rounding of retryAfter: up to whole seconds, at
// least one.
func TestRetryAfter(t *testing.T) {
	ms := time.Millisecond
	t.Run("slow rate", func(t *testing.T) {
		run(t, New(0.1, 1), []step{
			{desc: "burst", key: "a", at: 0, ok: true},
			{desc: "ten seconds per token", key: "a", at: 0, retry: 10 * time.Second},
			{desc: "partway", key: "a", at: 2500 * ms, retry: 8 * time.Second},
			{desc: "rounded up", key: "a", at: 9001 * ms, retry: time.Second},
			{desc: "due", key: "a", at: 10 * time.Second, ok: true},
		})
	})
	t.Run("fractional", func(t *testing.T) {
		run(t, New(0.3, 1), []step{
			{desc: "burst", key: "a", ok: true},
			{desc: "3.33s rounds to 4s", key: "a", retry: 4 * time.Second},
		})
	})
	t.Run("fast rate", func(t *testing.T) {
		run(t, New(1000, 1), []step{
			{desc: "burst", key: "a", ok: true},
			{desc: "1ms rounds to the 1s minimum", key: "a", retry: time.Second},
			{desc: "refilled", key: "a", at: ms, ok: true},
		})
	})
	t.Run("tiny rate", func(t *testing.T) {
		run(t, New(1e-12, 1), []step{
			{desc: "burst", key: "a", ok: true},
			{desc: "capped", key: "a", retry: maxRetryAfter * time.Second},
		})
	})
	for _, tc := range []struct {
		tokens float64
		limit  float64
		want   time.Duration
	}{
		{0, 1, time.Second},
		{0.999999, 1, time.Second},
		{-0.0, 0.5, 2 * time.Second},
		{0.5, 0.25, 2 * time.Second},
	} {
		if got := retryAfterFor(tc.tokens, tc.limit); got != tc.want {
			t.Errorf("retryAfterFor(%v, %v) = %v, want %v", tc.tokens, tc.limit, got, tc.want)
		}
	}
}

// TestIndependentKeys pins per-key isolation: one key's debt is nobody
// else's.
func TestIndependentKeys(t *testing.T) {
	run(t, New(1, 1), []step{
		{desc: "a", key: "a", ok: true},
		{desc: "a empty", key: "a", retry: time.Second},
		{desc: "b unaffected", key: "b", ok: true},
		{desc: "empty key is a key too", key: "", ok: true},
		{desc: "b empty", key: "b", retry: time.Second},
		{desc: "prefix of a key", key: "a\x00", ok: true},
	})
}

// checkShards checks the table's invariants: no shard over its share, the
// total at most maxKeys; in each shard, the list well linked and holding n
// entries, each of which the index finds; the index holding exactly those,
// at most half full; every other entry on the free list; and the entries
// never more than max+1.
func checkShards(t *testing.T, l *Limiter, maxKeys int) {
	t.Helper()
	total := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		if s.n > s.max {
			t.Errorf("shard %d holds %d keys, max %d", i, s.n, s.max)
		}
		if cap(s.entries) > s.max+1 {
			t.Errorf("shard %d has room for %d entries, max %d and the sentinel", i, cap(s.entries), s.max)
		}
		if 2*s.n > len(s.index) && s.n > 0 {
			t.Errorf("shard %d: index of %d slots for %d keys", i, len(s.index), s.n)
		}
		seen := make(map[uint32]bool)
		n := 0
		for x := s.entries[0].next; x != 0; x = s.entries[x].next {
			e := &s.entries[x]
			if seen[x] {
				t.Fatalf("shard %d: entry %d twice on the list", i, x)
			}
			seen[x] = true
			if _, y := s.find(e.key); y != x {
				t.Fatalf("shard %d: list entry %d (%v) is found as %d", i, x, e.key, y)
			}
			if s.entries[e.next].prev != x {
				t.Fatalf("shard %d: broken link after %d", i, x)
			}
			n++
		}
		if n != s.n {
			t.Errorf("shard %d: list has %d entries, n %d", i, n, s.n)
		}
		indexed := 0
		for _, x := range s.index {
			if x != 0 {
				indexed++
				if !seen[x] {
					t.Errorf("shard %d: index holds entry %d, which is not on the list", i, x)
				}
			}
		}
		if indexed != s.n {
			t.Errorf("shard %d: index holds %d entries, n %d", i, indexed, s.n)
		}
		for x := s.free; x != 0; x = s.entries[x].next {
			if seen[x] {
				t.Fatalf("shard %d: entry %d both free and used", i, x)
			}
			seen[x] = true
		}
		if len(seen) != len(s.entries)-1 {
			t.Errorf("shard %d: %d entries used or free, of %d", i, len(seen), len(s.entries)-1)
		}
		total += s.n
		s.mu.Unlock()
	}
	if total > maxKeys {
		t.Errorf("table holds %d keys, MaxKeys %d", total, maxKeys)
	}
}

// TestFloodKeepsActiveDebt: a key in debt that keeps coming back is never
// evicted by a flood of new keys, so it never gets a fresh bucket. Time
// stands still, so any allowed request would be an eviction's gift.
func TestFloodKeepsActiveDebt(t *testing.T) {
	const maxKeys = 64 * 100 // 100 a shard
	l := New(1, 3, MaxKeys(maxKeys))
	active := ClaimKey("active")
	for range 3 {
		l.Allow(active, t0)
	}
	for i := range 200_000 {
		l.Allow(v4(i), t0)
		if i%50 == 0 {
			// 50 keys spread over 64 shards put about one in the active
			// key's shard between its requests, far below its 100.
			if ok, _ := l.Allow(active, t0); ok {
				t.Fatalf("active key allowed after %d flood keys: its debt was evicted", i)
			}
		}
	}
}

// one returns a Limiter with one shard of maxKeys keys, so tests can
// predict which key eviction picks.
func one(perSecond float64, burst, maxKeys int) *Limiter {
	return New(perSecond, burst, MaxKeys(maxKeys), func(o *options) { o.shards = 1 })
}

func (l *Limiter) has(key string) bool {
	s := &l.shards[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	_, x := s.find(ClaimKey(key))
	return x != 0
}

// TestEvictPrefersFullBucket: eviction takes a full bucket, which loses
// nothing, before the least recently used bucket, which may be in debt.
func TestEvictPrefersFullBucket(t *testing.T) {
	l := one(1, 2, 3)
	allow(l, t0, "debtor", "debtor", "light", "other")
	// At t0+1s "light" and "other" are full again, "debtor" holds one token
	// (it emptied at t0), and "debtor" is the least recently used.
	allow(l, at(time.Second), "new")
	if !l.has("debtor") {
		t.Fatal("the least recently used key was evicted although full buckets were there")
	}
	if l.has("light") {
		t.Error("the oldest full bucket should have gone")
	}
	if !l.has("other") || !l.has("new") {
		t.Error("wrong keys evicted")
	}
	run(t, l, []step{
		{desc: "debtor's one token", key: "debtor", at: time.Second, ok: true},
		{desc: "debtor kept its debt", key: "debtor", at: time.Second, retry: time.Second},
	})
}

// TestEvictLRU documents the trade-off: when every bucket is in debt, the
// least recently used goes and, when it comes back, starts full.
func TestEvictLRU(t *testing.T) {
	l := one(1, 2, 2)
	allow(l, t0, "a", "a", "b", "b", "a")
	// Both empty; "b" is the least recently used because "a" was refused
	// last, and a refusal counts as a use.
	allow(l, t0, "c")
	if l.has("b") || !l.has("a") || !l.has("c") {
		t.Fatalf("want b evicted; a: %v, b: %v, c: %v", l.has("a"), l.has("b"), l.has("c"))
	}
	run(t, l, []step{
		{desc: "a still in debt", key: "a", retry: time.Second},
		{desc: "b forgotten: full bucket", key: "b", ok: true},
	})
}

func TestPrune(t *testing.T) {
	// Room enough that no shard evicts while the 501 keys go in (shards
	// are picked by a random seed, so a tight MaxKeys would make some shard
	// overflow now and then).
	l := New(1, 2, MaxKeys(100000))
	for i := range 500 {
		l.Allow(v4(i), t0)
	}
	allow(l, t0, "debtor", "debtor")
	if n := l.Prune(t0); n != 0 {
		t.Errorf("Prune at t0 forgot %d keys, want 0", n)
	}
	// At t0+1s the 500 have one token back and are full; the debtor has one
	// of two.
	if n := l.Prune(at(time.Second)); n != 500 {
		t.Errorf("Prune forgot %d keys, want 500", n)
	}
	if got := l.Len(); got != 1 {
		t.Errorf("Len() = %d after Prune, want 1", got)
	}
	checkShards(t, l, 100000)
	run(t, l, []step{
		{desc: "debtor kept", key: "debtor", at: time.Second, ok: true},
		{desc: "debtor empty", key: "debtor", at: time.Second, retry: time.Second},
	})
}

// TestConcurrent: under -race, many goroutines share keys; with time
// standing still each key allows exactly burst requests in total.
func TestConcurrent(t *testing.T) {
	const (
		burst      = 50
		keys       = 20
		goroutines = 8
		perG       = 400
	)
	l := New(1, burst)
	var allowed [keys]atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				k := (g + i) % keys
				if ok, _ := l.Allow(v4(k), t0); ok {
					allowed[k].Add(1)
				}
				if i%50 == 0 {
					l.Len()
					l.Prune(t0)
				}
			}
		})
	}
	wg.Wait()
	for k := range allowed {
		if got := allowed[k].Load(); got != burst {
			t.Errorf("key %d: %d allowed, want %d", k, got, burst)
		}
	}
}

func TestNewPanics(t *testing.T) {
	for _, tc := range []struct {
		desc  string
		rate  float64
		burst int
		opts  []Option
	}{
		{"zero rate", 0, 1, nil},
		{"negative rate", -1, 1, nil},
		{"NaN rate", math.NaN(), 1, nil},
		{"infinite rate", math.Inf(1), 1, nil},
		{"zero burst", 1, 0, nil},
		{"zero MaxKeys", 1, 1, []Option{MaxKeys(0)}},
		{"MaxKeys past 32-bit entry numbers", 1, 1, []Option{MaxKeys(maxMaxKeys + 1)}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: New did not panic", tc.desc)
				}
			}()
			New(tc.rate, tc.burst, tc.opts...)
		}()
	}
}

// TestShardSizes: small tables get fewer shards, and never more room than
// MaxKeys.
func TestShardSizes(t *testing.T) {
	for _, tc := range []struct{ maxKeys, shards, perShard int }{
		{1, 1, 1},
		{3, 2, 1},
		{64, 64, 1},
		{100, 64, 1},
		{DefaultMaxKeys, 64, DefaultMaxKeys / 64},
	} {
		l := New(1, 1, MaxKeys(tc.maxKeys))
		if len(l.shards) != tc.shards || l.shards[0].max != tc.perShard {
			t.Errorf("MaxKeys(%d): %d shards of %d, want %d of %d", tc.maxKeys, len(l.shards), l.shards[0].max, tc.shards, tc.perShard)
		}
	}
	l := New(1, 1, MaxKeys(1))
	allow(l, t0, "a", "b")
	if l.Len() != 1 {
		t.Errorf("MaxKeys(1) holds %d keys", l.Len())
	}
}

// allow calls Allow at now for each key, given to ClaimKey, in turn.
func allow(l *Limiter, now time.Time, keys ...string) {
	for _, k := range keys {
		l.Allow(ClaimKey(k), now)
	}
}

// v4 returns the key of the i-th address of 10.0.0.0/8.
func v4(i int) Key {
	return AddrKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), v6Prefix)
}

// v6 returns the i-th address of 2001:db8::/32, each in a /64 of its own.
func v6(i int) netip.Addr {
	var a [16]byte
	a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
	binary.BigEndian.PutUint32(a[4:], uint32(i))
	binary.BigEndian.PutUint64(a[8:], uint64(i)*0x9e3779b97f4a7c15) // any host part
	return netip.AddrFrom16(a)
}

// heap returns the live heap after a collection.
func heap() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// floodUnderRace is the flood of TestFloodMemoryBound under the race
// detector or -short: still five times DefaultMaxKeys.
const floodUnderRace = 500_000

// TestFloodMemoryBound pins the security review's demand: a flood of a
// million distinct keys, half of them 8 KB header values and half IPv6
// networks, leaves a default Limiter with at most DefaultMaxKeys keys and
// MaxBytes(DefaultMaxKeys) of heap; once the buckets have refilled, Prune
// gives the heap back. Under the race detector, which makes it about four
// times slower, the flood is floodUnderRace keys.
func TestFloodMemoryBound(t *testing.T) {
	n := 1_000_000
	if raceEnabled || testing.Short() {
		n = floodUnderRace
	}
	value := bytes.Repeat([]byte("v"), 8000) // the header value; a counter makes it distinct
	base := heap()

	l := New(1, 5)
	for i := range n {
		// Time advances so that the victims of eviction, about MaxKeys
		// keys back, are about one second old, which is when a bucket
		// that gave one token has refilled: both eviction paths run.
		now := at(time.Duration(i) * 10 * time.Microsecond)
		var key Key
		if i%2 == 0 {
			binary.LittleEndian.PutUint64(value, uint64(i))
			key = HeaderKey(value)
		} else {
			key = AddrKey(v6(i), v6Prefix)
		}
		if ok, _ := l.Allow(key, now); !ok {
			t.Fatalf("new key %d refused", i)
		}
		if i%250_000 == 0 {
			checkShards(t, l, DefaultMaxKeys)
		}
	}
	checkShards(t, l, DefaultMaxKeys)
	keys := l.Len()
	if keys > DefaultMaxKeys || keys < DefaultMaxKeys*9/10 {
		t.Errorf("Len() = %d after the flood, want close to and at most %d", keys, DefaultMaxKeys)
	}
	grown := heap() - base
	t.Logf("%d keys in, %d kept: heap grew %d bytes, %.1f a key (BytesPerKey %d, MaxBytes %d)",
		n, keys, grown, float64(grown)/float64(keys), BytesPerKey, MaxBytes(DefaultMaxKeys))
	if bound := int64(MaxBytes(DefaultMaxKeys)); grown > bound {
		t.Errorf("heap grew by %d bytes, more than MaxBytes(DefaultMaxKeys) = %d", grown, bound)
	}

	// Every bucket has refilled an hour later.
	if got := l.Prune(at(time.Hour)); got != keys {
		t.Errorf("Prune forgot %d keys, want all %d", got, keys)
	}
	if got := l.Len(); got != 0 {
		t.Errorf("Len() = %d after Prune, want 0", got)
	}
	checkShards(t, l, DefaultMaxKeys)
	// What stays is the Limiter and its shards, about 15 KB; the slack is
	// for the noise of the measure, tens of kilobytes either way, and
	// still catches a table that kept a twentieth of its memory.
	left := heap() - base
	t.Logf("heap after Prune: %d bytes above the start", left)
	if slack := int64(256 << 10); left > slack {
		t.Errorf("heap is %d bytes above the start after Prune, want at most %d", left, slack)
	}
	runtime.KeepAlive(l)
}

// TestMemoryBound checks MaxBytes at other table sizes than the default,
// whose arrays land on different sides of the allocator's classes, after a
// flood three times the table.
func TestMemoryBound(t *testing.T) {
	for _, maxKeys := range []int{1, 3, 64, 1_000, 64 * 1025} {
		t.Run(strconv.Itoa(maxKeys), func(t *testing.T) {
			base := heap()
			l := New(1, 1, MaxKeys(maxKeys))
			for i := range 3 * maxKeys {
				l.Allow(AddrKey(v6(i), 128), t0)
			}
			checkShards(t, l, maxKeys)
			grown := heap() - base
			t.Logf("MaxKeys(%d): %d keys, %d bytes, %.1f a key; MaxBytes %d", maxKeys, l.Len(), grown, float64(grown)/float64(l.Len()), MaxBytes(maxKeys))
			if grown > int64(MaxBytes(maxKeys)) {
				t.Errorf("heap grew by %d bytes, more than MaxBytes(%d) = %d", grown, maxKeys, MaxBytes(maxKeys))
			}
			runtime.KeepAlive(l)
		})
	}
}

// TestTableInvariants drives a small shard, whose index has many
// collisions, through random requests and prunes, and checks the table
// after each: insertion, eviction, deletion by backward shift, compaction.
func TestTableInvariants(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	l := one(1, 2, 50)
	now := t0
	for i := range 20_000 {
		now = now.Add(time.Duration(r.IntN(200)) * time.Millisecond)
		switch r.IntN(100) {
		case 0:
			l.Prune(now)
		default:
			l.Allow(v4(r.IntN(150)), now)
		}
		if i%10 == 0 {
			checkShards(t, l, 50)
		}
		if t.Failed() {
			t.Fatalf("after step %d", i)
		}
	}
}

// TestPruneTimer: Allow prunes a shard's full buckets once PruneInterval
// has passed since the last time, and only then.
func TestPruneTimer(t *testing.T) {
	l := one(1, 2, 1000)
	for i := range 100 {
		l.Allow(v4(i), t0)
	}
	allow(l, t0, "debtor", "debtor")
	allow(l, at(PruneInterval-time.Nanosecond), "late")
	if got := l.Len(); got != 102 {
		t.Fatalf("Len() = %d before PruneInterval, want 102", got)
	}
	// "late" is not full yet; the 100 are, and so is "debtor", idle for a
	// minute.
	allow(l, at(PruneInterval), "late")
	if got := l.Len(); got != 1 || !l.has("late") {
		t.Fatalf("Len() = %d after PruneInterval, want 1: only \"late\"", got)
	}
	checkShards(t, l, 1000)
	if s := &l.shards[0]; len(s.entries) != 2 || len(s.index) != 8 {
		t.Errorf("the arrays did not shrink: %d entries, %d index slots", len(s.entries), len(s.index))
	}
	// The next pass is PruneInterval after this one.
	allow(l, at(PruneInterval+time.Second), "a", "b")
	allow(l, at(2*PruneInterval-time.Nanosecond), "c")
	if got := l.Len(); got != 4 {
		t.Errorf("Len() = %d, want 4: pruned too early", got)
	}
	allow(l, at(2*PruneInterval), "c")
	if got := l.Len(); got != 1 {
		t.Errorf("Len() = %d, want 1: not pruned on time", got)
	}
}

// TestMatchesRate checks the buckets against golang.org/x/time/rate, whose
// behaviour they copy: the same requests at the same instants get the same
// answers and leave exactly the same tokens.
func TestMatchesRate(t *testing.T) {
	for _, tc := range []struct {
		desc  string
		rate  float64
		burst int
	}{
		{"one a second", 1, 1},
		{"burst", 2, 10},
		{"slow", 0.01, 3},
		{"fractional", 0.3, 2},
		{"fast", 1e6, 5},
		{"tiny", 1e-9, 1},
		{"huge", 1e12, 100},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(tc.burst), math.Float64bits(tc.rate)))
			ops := make([]byte, 20_000)
			for i := range ops {
				ops[i] = byte(r.Uint32())
			}
			checkMatchesRate(t, tc.rate, tc.burst, false, ops)
			checkMatchesRate(t, tc.rate, tc.burst, true, ops)
		})
	}
}

func FuzzMatchesRate(f *testing.F) {
	f.Add(1.0, 3, false, []byte{0, 0, 0, 0, 0, 0, 0, 0, 20, 3, 1, 3})
	f.Add(0.5, 1, true, []byte{10, 3, 0x80, 3, 0xff, 0, 5, 4, 200, 2})
	f.Fuzz(func(t *testing.T, perSecond float64, burst int, backwards bool, ops []byte) {
		if !(perSecond > 0) || math.IsInf(perSecond, 1) || burst < 1 {
			return
		}
		checkMatchesRate(t, perSecond, burst, backwards, ops)
	})
}

// checkMatchesRate runs the requests that ops encode through a Limiter and a
// rate.Limiter side by side. Each pair of bytes is one request: the first
// is a step of time, the second its unit. Time only goes forward unless
// backwards is set; then the Limiter does not prune by itself, because a
// bucket forgotten once it was full starts full even at an earlier instant,
// where the rate.Limiter remembers older tokens (Allow asks for a clock
// that does not go back).
func checkMatchesRate(t *testing.T, perSecond float64, burst int, backwards bool, ops []byte) {
	t.Helper()
	opts := []Option{func(o *options) { o.shards = 1 }}
	if backwards {
		opts = append(opts, func(o *options) { o.pruneEvery = math.MaxInt64 })
	}
	l := New(perSecond, burst, opts...)
	want := rate.NewLimiter(rate.Limit(perSecond), burst)
	units := []time.Duration{time.Nanosecond, time.Microsecond, time.Millisecond, 100 * time.Millisecond, time.Second, time.Minute}
	key := RouteKey()
	now := t0
	for i := 0; i+1 < len(ops); i += 2 {
		step := time.Duration(ops[i])
		if backwards {
			step = time.Duration(int8(ops[i]))
		}
		now = now.Add(step * units[int(ops[i+1])%len(units)])

		tokens := want.TokensAt(now)
		wantOK := want.AllowN(now, 1)
		wantRetry := time.Duration(0)
		if !wantOK {
			wantRetry = retryAfterFor(tokens, perSecond)
		}
		ok, retry := l.Allow(key, now)
		if ok != wantOK || retry != wantRetry {
			t.Fatalf("request %d at t0+%v: Allow = %v, %v; rate.Limiter %v, %v", i/2, now.Sub(t0), ok, retry, wantOK, wantRetry)
		}
		s := &l.shards[0]
		got := l.burst
		if _, x := s.find(key); x != 0 {
			got = s.entries[x].tokensAt(s.since(now, l), l)
		}
		if w := want.TokensAt(now); got != w {
			t.Fatalf("request %d at t0+%v: %v tokens left, rate.Limiter %v", i/2, now.Sub(t0), got, w)
		}
	}
}

func TestAllowAllocs(t *testing.T) {
	l := New(1e9, 1<<30)
	key := AddrKey(netip.MustParseAddr("192.0.2.1"), v6Prefix)
	l.Allow(key, t0)
	if n := testing.AllocsPerRun(1000, func() { l.Allow(key, t0) }); n != 0 {
		t.Errorf("Allow of a known key allocates %v times", n)
	}

	// Once the table is full, a new key reuses the entry it evicts.
	l = New(1, 1, MaxKeys(1000))
	i := 0
	for ; i < 10_000; i++ {
		l.Allow(v4(i), t0)
	}
	if n := testing.AllocsPerRun(10_000, func() { l.Allow(v4(i), t0); i++ }); n > 0.01 {
		t.Errorf("Allow of a new key into a full table allocates %v times", n)
	}
}

func BenchmarkAllow(b *testing.B) {
	b.Run("one key", func(b *testing.B) {
		l := New(1e9, 1<<30)
		key := v4(1)
		b.ReportAllocs()
		for b.Loop() {
			l.Allow(key, t0)
		}
	})
	b.Run("refused", func(b *testing.B) {
		l := New(1, 1)
		key := v4(1)
		l.Allow(key, t0)
		b.ReportAllocs()
		for b.Loop() {
			l.Allow(key, t0)
		}
	})
	b.Run("10k keys", func(b *testing.B) {
		l := New(1e9, 1<<30)
		keys := make([]Key, 10_000)
		for i := range keys {
			keys[i] = v4(i)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			l.Allow(keys[i%len(keys)], t0)
			i++
		}
	})
	b.Run("flood evicting", func(b *testing.B) {
		l := New(1, 1, MaxKeys(10_000))
		keys := make([]Key, 1<<20)
		for i := range keys {
			keys[i] = v4(i)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			l.Allow(keys[i%len(keys)], t0)
			i++
		}
	})
	b.Run("parallel 10k keys", func(b *testing.B) {
		l := New(1e9, 1<<30)
		keys := make([]Key, 10_000)
		for i := range keys {
			keys[i] = v4(i)
		}
		var seq atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int(seq.Add(7919))
			for pb.Next() {
				l.Allow(keys[i%len(keys)], t0)
				i++
			}
		})
	})
}

// BenchmarkPrune measures the pass that Allow makes over a shard every
// PruneInterval, which the request that triggers it waits for: a full
// default shard of DefaultMaxKeys/64 keys, none of them full.
func BenchmarkPrune(b *testing.B) {
	l := one(1, 2, DefaultMaxKeys/maxShards)
	for i := range DefaultMaxKeys / maxShards {
		l.Allow(v4(i), t0)
	}
	b.ReportAllocs()
	for b.Loop() {
		l.Prune(t0)
	}
}

func TestAddSat(t *testing.T) {
	for _, tc := range []struct{ a, b, want int64 }{
		{1, 2, 3},
		{-1, -2, -3},
		{math.MaxInt64, 1, math.MaxInt64},
		{math.MaxInt64, math.MaxInt64, math.MaxInt64},
		{math.MinInt64, -1, math.MinInt64},
		{math.MinInt64, math.MinInt64, math.MinInt64},
		{math.MaxInt64, math.MinInt64, -1},
		{-5, 5, 0},
	} {
		if got := addSat(tc.a, tc.b); got != tc.want {
			t.Errorf("addSat(%d, %d) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// v6Prefix is the prefix length the tests give AddrKey: lbd's default.
const v6Prefix = 64
