package ratelimit

import (
	"errors"
	"fmt"
	"math"
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
	key   string
	at    time.Duration // since t0
	ok    bool
	retry time.Duration // wanted retryAfter when !ok
}

func run(t *testing.T, l *Limiter, steps []step) {
	t.Helper()
	for i, s := range steps {
		ok, retry := l.Allow(s.key, at(s.at))
		want := s.retry
		if s.ok {
			want = 0
		}
		if ok != s.ok || retry != want {
			t.Errorf("step %d (%s): Allow(%q, t0+%v) = %v, %v; want %v, %v", i, s.desc, s.key, s.at, ok, retry, s.ok, want)
		}
	}
}

// TestBurstThenRefusal pins issue 7, section 5: a new key gets burst
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
		if got := retryAfterFor(tc.tokens, rate.Limit(tc.limit)); got != tc.want {
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

// TestFloodBounded pins issue 7, section 5: a flood of distinct keys
// cannot grow the table past MaxKeys, nor the heap with it.
func TestFloodBounded(t *testing.T) {
	const maxKeys = 10_000
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	l := New(1, 5, MaxKeys(maxKeys))
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc

	for i := range n {
		// Time advances slowly, so some buckets refill and most do not:
		// both eviction paths run.
		now := at(time.Duration(i) * time.Microsecond)
		if ok, _ := l.Allow("client-"+strconv.Itoa(i), now); !ok {
			t.Fatalf("new key %d refused", i)
		}
		if i%100_000 == 0 {
			checkShards(t, l, maxKeys)
		}
	}
	checkShards(t, l, maxKeys)
	if got := l.Len(); got > maxKeys || got < maxKeys*9/10 {
		t.Errorf("Len() = %d after the flood, want close to and at most %d", got, maxKeys)
	}

	runtime.GC()
	runtime.ReadMemStats(&ms)
	// 10,000 entries take a few megabytes; 1,000,000 would take hundreds.
	if grown := int64(ms.HeapAlloc) - int64(before); grown > 16<<20 {
		t.Errorf("heap grew by %d MiB for %d keys", grown>>20, maxKeys)
	}
	runtime.KeepAlive(l)
}

// checkShards checks the table's invariants: no shard over its share, the
// total at most maxKeys, and each shard's list holding exactly its map.
func checkShards(t *testing.T, l *Limiter, maxKeys int) {
	t.Helper()
	total := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		if len(s.keys) > s.max {
			t.Errorf("shard %d holds %d keys, max %d", i, len(s.keys), s.max)
		}
		n := 0
		for e := s.lru.next; e != &s.lru; e = e.next {
			if s.keys[e.key] != e {
				t.Fatalf("shard %d: list entry %q is not in the map", i, e.key)
			}
			if e.next.prev != e {
				t.Fatalf("shard %d: broken link after %q", i, e.key)
			}
			n++
		}
		if n != len(s.keys) {
			t.Errorf("shard %d: list has %d entries, map %d", i, n, len(s.keys))
		}
		total += len(s.keys)
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
	for range 3 {
		l.Allow("active", t0)
	}
	for i := range 200_000 {
		l.Allow(strconv.Itoa(i), t0)
		if i%50 == 0 {
			// 50 keys spread over 64 shards put about one in the active
			// key's shard between its requests, far below its 100.
			if ok, _ := l.Allow("active", t0); ok {
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
	return s.keys[key] != nil
}

// TestEvictPrefersFullBucket: eviction takes a full bucket, which loses
// nothing, before the least recently used bucket, which may be in debt.
func TestEvictPrefersFullBucket(t *testing.T) {
	l := one(1, 2, 3)
	l.Allow("debtor", t0)
	l.Allow("debtor", t0) // empty
	l.Allow("light", t0)  // one token left
	l.Allow("other", t0)  // one token left
	// At t0+1s "light" and "other" are full again, "debtor" holds one token,
	// and "debtor" is the least recently used.
	l.Allow("new", at(time.Second))
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
	for _, k := range []string{"a", "a", "b", "b", "a"} {
		l.Allow(k, t0)
	}
	// Both empty; "b" is the least recently used because "a" was refused
	// last, and a refusal counts as a use.
	l.Allow("c", t0)
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
		l.Allow(strconv.Itoa(i), t0)
	}
	l.Allow("debtor", t0)
	l.Allow("debtor", t0)
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
				if ok, _ := l.Allow(fmt.Sprint("k", k), t0); ok {
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

func TestAllowAllocs(t *testing.T) {
	l := New(1e9, 1<<30)
	l.Allow("client", t0)
	if n := testing.AllocsPerRun(1000, func() { l.Allow("client", t0) }); n != 0 {
		t.Errorf("Allow of a known key allocates %v times", n)
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
	l.Allow("a", t0)
	l.Allow("b", t0)
	if l.Len() != 1 {
		t.Errorf("MaxKeys(1) holds %d keys", l.Len())
	}
}

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want KeySource
		err  bool
	}{
		{in: "client_ip", want: KeySource{Kind: KeyClientIP}},
		{in: "route", want: KeySource{Kind: KeyRoute}},
		{in: "header:X-Api-Key", want: KeySource{Kind: KeyHeader, Name: "X-Api-Key"}},
		{in: "claim:sub", want: KeySource{Kind: KeyClaim, Name: "sub"}},
		{in: "claim:https://example.com/tenant", want: KeySource{Kind: KeyClaim, Name: "https://example.com/tenant"}},
		{in: "", err: true},
		{in: "Client_IP", err: true},
		{in: "ip", err: true},
		{in: "header:", err: true},
		{in: "header:X Key", err: true},
		{in: "header:X-Key:", err: true},
		{in: "claim:", err: true},
	} {
		got, err := ParseKey(tc.in)
		if tc.err {
			if !errors.Is(err, ErrKey) {
				t.Errorf("ParseKey(%q) = %v, %v; want ErrKey", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseKey(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if got.String() != tc.in {
			t.Errorf("ParseKey(%q).String() = %q", tc.in, got.String())
		}
	}
}

func BenchmarkAllow(b *testing.B) {
	b.Run("one key", func(b *testing.B) {
		l := New(1e9, 1<<30)
		b.ReportAllocs()
		for b.Loop() {
			l.Allow("192.0.2.1", t0)
		}
	})
	b.Run("refused", func(b *testing.B) {
		l := New(1, 1)
		l.Allow("192.0.2.1", t0)
		b.ReportAllocs()
		for b.Loop() {
			l.Allow("192.0.2.1", t0)
		}
	})
	b.Run("10k keys", func(b *testing.B) {
		l := New(1e9, 1<<30)
		keys := make([]string, 10_000)
		for i := range keys {
			keys[i] = "client-" + strconv.Itoa(i)
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
		keys := make([]string, 1<<20)
		for i := range keys {
			keys[i] = "client-" + strconv.Itoa(i)
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
		keys := make([]string, 10_000)
		for i := range keys {
			keys[i] = "client-" + strconv.Itoa(i)
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
