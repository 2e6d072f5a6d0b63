package pool

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/balancer"
	"github.com/lbd-lb/lbd/healthcheck"
	"github.com/lbd-lb/lbd/internal/nettest"
)

func spec(algorithm string, weights ...int) Spec {
	s := Spec{Name: "p", Algorithm: algorithm, Hash: "source_ip", MaglevTableSize: 65537,
		HealthCheck: healthcheck.Config{Type: healthcheck.TypeNone}}
	for i, w := range weights {
		s.Backends = append(s.Backends, BackendSpec{
			Address: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 80),
			Weight:  w,
		})
	}
	return s
}

// share counts the picks of 1000 connections spread over loops event
// loops, each with its own picker.
func share(snap *Snapshot, loops int) []int {
	pickers := make([]balancer.Picker, loops)
	for i := range pickers {
		pickers[i] = snap.Balancer.NewPicker()
	}
	counts := make([]int, len(snap.Backends))
	for k := 0; k < 1000; k++ {
		counts[pickers[k%loops].Pick(uint64(k), nil)]++
	}
	return counts
}

// TestSetWeight: a weight change publishes a new snapshot for new picks;
// a snapshot already taken (by a connection being set up) is unchanged.
func TestSetWeight(t *testing.T) {
	p, err := New(spec("wrr", 1, 1), Options{Loops: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := p.Snapshot()
	if c := share(old, 2); c[0] != 500 || c[1] != 500 {
		t.Fatalf("equal weights gave %v", c)
	}
	if err := p.SetWeight(p.Backends()[0], 3); err != nil {
		t.Fatal(err)
	}
	if c := share(p.Snapshot(), 2); c[0] != 750 || c[1] != 250 {
		t.Fatalf("weights 3:1 gave %v", c)
	}
	if c := share(old, 2); c[0] != 500 || c[1] != 500 {
		t.Fatalf("old snapshot changed: %v", c)
	}
	for _, w := range []int{0, 10001} {
		if err := p.SetWeight(p.Backends()[0], w); err == nil {
			t.Fatalf("weight %d accepted", w)
		}
	}
}

func TestBackendLookup(t *testing.T) {
	s := spec("maglev", 1, 1)
	s.Backends[1].Name = "named"
	p, err := New(s, Options{Loops: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b := p.Backend("192.0.2.1:80"); b == nil || b.Name != "192.0.2.1:80" {
		t.Fatalf("by address: %+v", b)
	}
	if b := p.Backend("named"); b == nil || b.Addr.String() != "192.0.2.2:80" {
		t.Fatalf("by name: %+v", b)
	}
	if b := p.Backend("192.0.2.2:80"); b == nil || b.Name != "named" {
		t.Fatalf("named backend by address: %+v", b)
	}
	if p.Backend("nope") != nil {
		t.Fatal("found a backend that does not exist")
	}
}

func TestBadSpec(t *testing.T) {
	if _, err := New(spec("bogus", 1), Options{Loops: 1}, nil); err == nil {
		t.Fatal("unknown algorithm accepted")
	}
	if _, err := New(spec("maglev", 1, 20000), Options{Loops: 1}, nil); err == nil {
		t.Fatal("weight out of range accepted")
	}
}

// script is a health prober whose verdict per address the test sets.
type script struct {
	mu   sync.Mutex
	fail map[netip.AddrPort]error
}

func (s *script) set(a netip.AddrPort, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail == nil {
		s.fail = map[netip.AddrPort]error{}
	}
	s.fail[a] = err
}

func (s *script) Probe(_ context.Context, a netip.AddrPort) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fail[a]
}

// healthPool builds a pool with a scripted prober on a fake clock.
func healthPool(t *testing.T, sp Spec, opts Options) (*Pool, *script, *healthcheck.FakeClock) {
	t.Helper()
	sc := &script{}
	clock := healthcheck.NewFakeClock(time.Unix(1e9, 0))
	opts.Health = append(opts.Health, healthcheck.WithClock(clock), healthcheck.WithProber(sc))
	sp.HealthCheck = healthcheck.Config{Type: healthcheck.TypeTCP, Interval: time.Second, Timeout: 100 * time.Millisecond, Rise: 2, Fall: 3}
	p, err := New(sp, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, sc, clock
}

func names(s *Snapshot) string {
	var out []string
	for _, b := range s.Backends {
		out = append(out, b.Name)
	}
	return strings.Join(out, ",")
}

// step advances one probe interval and waits until every backend has been
// probed once more.
func step(t *testing.T, p *Pool, clock *healthcheck.FakeClock) {
	t.Helper()
	before := map[*Backend]uint64{}
	for _, b := range p.Backends() {
		ok, failed := b.HealthChecks()
		before[b] = ok + failed
	}
	clock.Advance(1100 * time.Millisecond) // past the interval and its jitter
	nettest.Eventually(t, "a probe of every backend", func() bool {
		for _, b := range p.Backends() {
			ok, failed := b.HealthChecks()
			if ok+failed <= before[b] {
				return false
			}
		}
		return true
	})
}

func TestHealthRiseFall(t *testing.T) {
	sp := spec("wrr", 1, 1)
	p, sc, clock := healthPool(t, sp, Options{})
	a, b := p.Backends()[0], p.Backends()[1]
	<-p.Ready()
	nettest.Eventually(t, "both up after one probe", func() bool { return names(p.Snapshot()) == a.Name+","+b.Name })

	sc.set(a.Addr, errors.New("connection refused"))
	for i := 1; i < 3; i++ {
		step(t, p, clock)
		if !a.Healthy() {
			t.Fatalf("down after %d failures, fall is 3", i)
		}
	}
	step(t, p, clock)
	nettest.Eventually(t, "a out of rotation", func() bool { return names(p.Snapshot()) == b.Name })
	if a.Healthy() {
		t.Fatal("a still healthy")
	}
	// Flapping below rise changes nothing.
	for i := 0; i < 3; i++ {
		sc.set(a.Addr, nil)
		step(t, p, clock)
		sc.set(a.Addr, errors.New("flap"))
		step(t, p, clock)
		if a.Healthy() {
			t.Fatal("came up on alternating results")
		}
	}
	sc.set(a.Addr, nil)
	step(t, p, clock)
	step(t, p, clock)
	nettest.Eventually(t, "a back after rise successes", func() bool { return a.Healthy() && names(p.Snapshot()) == a.Name+","+b.Name })
}

func TestDrainDisableEnable(t *testing.T) {
	var disabled []*Backend
	p, _, _ := healthPool(t, spec("least_conn", 1, 1), Options{OnDisable: func(b *Backend) { disabled = append(disabled, b) }})
	<-p.Ready()
	a, b := p.Backends()[0], p.Backends()[1]
	nettest.Eventually(t, "both up", func() bool { return len(p.Snapshot().Backends) == 2 })
	if err := p.Drain(a); err != nil {
		t.Fatal(err)
	}
	if names(p.Snapshot()) != b.Name || a.Admin() != Draining || !a.Healthy() {
		t.Fatalf("after drain: %s, %v", names(p.Snapshot()), a.Admin())
	}
	if len(disabled) != 0 {
		t.Fatal("drain closed connections")
	}
	if err := p.Disable(a); err != nil {
		t.Fatal(err)
	}
	if len(disabled) != 1 || disabled[0] != a || a.Admin() != Disabled {
		t.Fatalf("disable did not close a's connections: %v", disabled)
	}
	if err := p.Enable(a); err != nil {
		t.Fatal(err)
	}
	if len(p.Snapshot().Backends) != 2 || a.Admin() != Active {
		t.Fatal("enable did not restore a")
	}
}

// TestDrainingAndDown: operator and health state are independent.
func TestDrainingAndDown(t *testing.T) {
	p, sc, clock := healthPool(t, spec("wrr", 1, 1), Options{})
	<-p.Ready()
	a := p.Backends()[0]
	p.Drain(a)
	sc.set(a.Addr, errors.New("down"))
	for i := 0; i < 3; i++ {
		step(t, p, clock)
	}
	nettest.Eventually(t, "a down", func() bool { return !a.Healthy() })
	if a.Admin() != Draining {
		t.Fatal("health change cleared the drain")
	}
	sc.set(a.Addr, nil)
	step(t, p, clock)
	step(t, p, clock)
	nettest.Eventually(t, "a healthy", a.Healthy)
	if len(p.Snapshot().Backends) != 1 {
		t.Fatal("a draining backend came back into rotation on health")
	}
}

func TestPassiveFailures(t *testing.T) {
	sp := spec("wrr", 1, 1)
	sp.PassiveFailures = 3
	p, _, clock := healthPool(t, sp, Options{})
	<-p.Ready()
	a := p.Backends()[0]
	nettest.Eventually(t, "up", a.Healthy)
	p.ConnectFailed(a)
	p.ConnectFailed(a)
	p.ConnectSucceeded(a) // the streak is broken
	p.ConnectFailed(a)
	p.ConnectFailed(a)
	if !a.Healthy() {
		t.Fatal("down without passive_failures in a row")
	}
	p.ConnectFailed(a)
	nettest.Eventually(t, "passive ejection", func() bool { return !a.Healthy() && len(p.Snapshot().Backends) == 1 })
	// Back after rise (2) successful active probes.
	step(t, p, clock)
	if a.Healthy() {
		t.Fatal("back after one probe, rise is 2")
	}
	step(t, p, clock)
	nettest.Eventually(t, "back", a.Healthy)
}

func TestAllDown(t *testing.T) {
	p, sc, clock := healthPool(t, spec("maglev", 1, 1), Options{})
	<-p.Ready()
	for _, b := range p.Backends() {
		sc.set(b.Addr, errors.New("down"))
	}
	for i := 0; i < 3; i++ {
		step(t, p, clock)
	}
	nettest.Eventually(t, "empty snapshot", func() bool { return len(p.Snapshot().Backends) == 0 })
	if p.Snapshot().Balancer.NewPicker().Pick(1, nil) != -1 || p.Snapshot().Pick(1, nil) != -1 {
		t.Fatal("pick from an empty pool")
	}
}

// TestReloadCarriesState: a backend kept by a reload keeps its counters,
// health, operator state and runtime weight; a new one starts unknown.
func TestReloadCarriesState(t *testing.T) {
	sp := spec("wrr", 1, 1)
	sp.HealthCheck = healthcheck.Config{Type: healthcheck.TypeNone}
	old, err := New(sp, Options{Loops: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := old.Backends()[0]
	a.Active.Add(7)
	old.Drain(a)
	old.SetWeight(a, 42)
	sp2 := spec("wrr", 5, 5, 5)
	sp2.HealthCheck = sp.HealthCheck
	nw, err := New(sp2, Options{Loops: 1}, old)
	if err != nil {
		t.Fatal(err)
	}
	// Until the reload commits, the shared backends keep their values:
	// a reload that fails must change nothing.
	if b := old.Backends()[1]; b.Weight() != 1 {
		t.Fatalf("new pool changed a shared backend's weight before Activate: %d", b.Weight())
	}
	nw.Activate()
	old.Close()
	defer nw.Close()
	got := nw.Backends()[0]
	if got != a || got.Active.Load() != 7 || got.Admin() != Draining || got.Weight() != 42 {
		t.Fatalf("carried backend: same=%v active=%d admin=%v weight=%d", got == a, got.Active.Load(), got.Admin(), got.Weight())
	}
	if nw.Backends()[1] != old.Backends()[1] || nw.Backends()[1].Weight() != 5 {
		t.Fatal("config weight not applied to a carried backend without an operator weight")
	}
	if c := nw.Backends()[2]; !c.Healthy() || c.Weight() != 5 {
		t.Fatal("new backend not set up from its config")
	}
}

func TestConnectHistogram(t *testing.T) {
	p, err := New(spec("wrr", 1), Options{Loops: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.ObserveConnect(0, 50*time.Microsecond) // first bucket
	p.ObserveConnect(1, 3*time.Millisecond)  // the 5ms bucket
	p.ObserveConnect(1, 10*time.Second)      // +Inf only
	count, sum, cum := p.ConnectHistogram()
	if count != 3 || sum < 10.003 || sum > 10.0031 {
		t.Fatalf("count %d sum %v", count, sum)
	}
	want := map[float64]uint64{0.0001: 1, 0.0025: 1, 0.005: 2, 5: 2}
	for i, le := range ConnectBuckets {
		if w, ok := want[le]; ok && cum[i] != w {
			t.Fatalf("bucket %v: %d, want %d", le, cum[i], w)
		}
	}
	// A reload keeps the histogram.
	q, err := New(spec("wrr", 1), Options{Loops: 2}, p)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if c, _, _ := q.ConnectHistogram(); c != 3 {
		t.Fatalf("after reload: %d", c)
	}
}

// TestHealthPerPool: during a reload the old and new pools decide from
// their own checkers; a change the old one sees does not blind the new one.
func TestHealthPerPool(t *testing.T) {
	sp := spec("wrr", 1)
	oldPool, sc, clock := healthPool(t, sp, Options{})
	<-oldPool.Ready()
	a := oldPool.Backends()[0]
	sc.set(a.Addr, errors.New("down"))
	for i := 0; i < 3; i++ {
		step(t, oldPool, clock)
	}
	nettest.Eventually(t, "down", func() bool { return !a.Healthy() })

	// The new pool starts from the old checker's verdict: down.
	sp.HealthCheck = healthcheck.Config{Type: healthcheck.TypeTCP, Interval: time.Second, Timeout: 100 * time.Millisecond, Rise: 1, Fall: 3}
	nw, err := New(sp, Options{Health: []healthcheck.Option{healthcheck.WithClock(clock), healthcheck.WithProber(sc)}}, oldPool)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Close()
	if len(nw.Snapshot().Backends) != 0 {
		t.Fatal("new pool took a down backend")
	}
	// Both checkers see it recover; each pool's snapshot follows its own.
	sc.set(a.Addr, nil)
	clock.Advance(1100 * time.Millisecond)
	clock.Advance(1100 * time.Millisecond)
	nettest.Eventually(t, "new pool sees it up", func() bool { return len(nw.Snapshot().Backends) == 1 })
	nw.Activate()
	oldPool.Close()
	if !a.Healthy() {
		t.Fatal("live pool's view not published")
	}
}

// TestSharedStats: counts made through the shared shards from many
// goroutines at once, beside a loop's own, all reach Totals; run with
// -race.
func TestSharedStats(t *testing.T) {
	p, err := New(spec("wrr", 1), Options{Loops: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	b := p.Backends()[0]
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				s := b.SharedStats()
				s.Connections.Add(1)
				s.BytesToClient.Add(3)
			}
		}()
	}
	b.Stats(1).Connections.Add(5)
	wg.Wait()
	if conns, _, _, toClient := b.Totals(); conns != 8005 || toClient != 24000 {
		t.Fatalf("Totals: %d connections, %d bytes to client; want 8005, 24000", conns, toClient)
	}
}

func TestSharedStatsNoAllocs(t *testing.T) {
	p, err := New(spec("wrr", 1), Options{Loops: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	b := p.Backends()[0]
	if n := testing.AllocsPerRun(1000, func() { b.SharedStats().Connections.Add(1) }); n != 0 {
		t.Fatalf("%v allocations per SharedStats", n)
	}
}

// TestSnapshotPick: Pick from many goroutines at once, as the http
// listeners do, honours tried and reaches every backend; run with -race.
func TestSnapshotPick(t *testing.T) {
	for _, alg := range []string{"maglev", "least_conn", "wrr", "p2c"} {
		p, err := New(spec(alg, 1, 2, 3), Options{Loops: 1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		snap := p.Snapshot()
		var mu sync.Mutex
		seen := map[int]bool{}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range 500 {
					var tried balancer.Tried
					tried.Add(k % 3)
					i := snap.Pick(uint64(g*1000+k)*0x9e3779b97f4a7c15, &tried)
					if i < 0 || i > 2 || tried.Has(i) {
						t.Errorf("%s: tried %d, Pick = %d", alg, k%3, i)
						return
					}
					mu.Lock()
					seen[i] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(seen) != 3 {
			t.Errorf("%s: backends reached: %v", alg, seen)
		}
		p.Close()
	}
}

func TestSnapshotPickNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race")
	}
	for _, alg := range []string{"maglev", "least_conn", "wrr", "p2c"} {
		p, err := New(spec(alg, 1, 2, 3), Options{Loops: 1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		snap := p.Snapshot()
		snap.Pick(1, nil)
		var tried balancer.Tried
		tried.Add(1)
		key := uint64(0)
		if n := testing.AllocsPerRun(1000, func() {
			key += 0x9e3779b97f4a7c15
			snap.Pick(key, nil)
			snap.Pick(key, &tried)
		}); n != 0 {
			t.Errorf("%s: %v allocations per pick", alg, n)
		}
		p.Close()
	}
}
