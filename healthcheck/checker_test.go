package healthcheck

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	stateNew   = State{}
	stateUp    = State{Up: true, Known: true}
	stateDown  = State{Up: false, Known: true}
	testConfig = Config{Type: TypeTCP, Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}
)

// Issue 4, "Down and back": a backend that stops listening is out within
// fall × interval + timeout; restarted, it returns after rise successes.
func TestTCPDownAndBack(t *testing.T) {
	b := newTCPBackend(t)
	h := newHarness(t, testConfig)
	if st := h.c.Add("b1", b.addr, stateNew); st != stateNew {
		t.Fatalf("Add returned %+v, want a new, down target", st)
	}
	if r := h.probe(); !r.ok {
		t.Fatal("first probe failed")
	}
	h.wantEvent(Event{ID: "b1", Up: true, Reason: "first probe succeeded"})

	b.stop()
	var elapsed time.Duration
	for i := 1; i <= testConfig.Fall; i++ {
		d, ok := h.step()
		elapsed += d
		if ok {
			t.Fatalf("probe %d of a stopped backend succeeded", i)
		}
		if i < testConfig.Fall {
			h.wantState("b1", stateUp)
		}
	}
	ev := h.event()
	if ev.ID != "b1" || ev.Up || !strings.HasPrefix(ev.Reason, "3 consecutive failures: ") ||
		!strings.Contains(ev.Reason, "connection refused") {
		t.Fatalf("event = %+v, want b1 down after 3 refused connects", ev)
	}
	h.wantState("b1", stateDown)
	if limit := time.Duration(testConfig.Fall) * testConfig.Interval * 11 / 10; elapsed > limit {
		t.Errorf("down after %v of probing, more than fall × interval + 10%% = %v", elapsed, limit)
	}

	b.start()
	if _, ok := h.step(); !ok {
		t.Fatal("probe of the restarted backend failed")
	}
	h.wantState("b1", stateDown) // rise is 2
	if _, ok := h.step(); !ok {
		t.Fatal("probe of the restarted backend failed")
	}
	h.wantEvent(Event{ID: "b1", Up: true, Reason: "2 consecutive successes"})
	if evs := h.closeAndDrain(); len(evs) != 0 {
		t.Errorf("extra events %+v", evs)
	}
}

// Issue 4, "HTTP status": 500 takes the backend down, 200 brings it back.
func TestHTTPStatus(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	type seen struct{ method, uri, host, ua string }
	reqs := make(chan seen, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.Close {
			t.Errorf("request without Connection: close")
		}
		reqs <- seen{r.Method, r.RequestURI, r.Host, r.UserAgent()}
		w.WriteHeader(int(status.Load()))
		w.Write([]byte("fine"))
	}))
	defer srv.Close()
	addr := netip.MustParseAddrPort(srv.Listener.Addr().String())

	h := newHarness(t, Config{Type: TypeHTTP, Interval: time.Second, Timeout: time.Second, Rise: 2, Fall: 2,
		Path: "/healthz?full=1", ExpectStatusMin: 200, ExpectStatusMax: 299})
	h.c.Add("web", addr, stateNew)
	h.probe()
	h.wantEvent(Event{ID: "web", Up: true, Reason: "first probe succeeded"})
	if r := <-reqs; r != (seen{"GET", "/healthz?full=1", addr.String(), "lbd-healthcheck"}) {
		t.Errorf("request = %+v", r)
	}

	status.Store(500)
	for range 2 {
		if _, ok := h.step(); ok {
			t.Fatal("probe answered 500 succeeded")
		}
	}
	h.wantEvent(Event{ID: "web", Up: false, Reason: "2 consecutive failures: http status 500, want 200-299"})

	status.Store(200)
	for range 2 {
		if _, ok := h.step(); !ok {
			t.Fatal("probe answered 200 failed")
		}
	}
	h.wantEvent(Event{ID: "web", Up: true, Reason: "2 consecutive successes"})
}

// Issue 4, "Hung backend": a backend that accepts but never answers fails
// on timeout, and meanwhile the other targets are probed as usual.
func TestHungBackendDoesNotBlockOthers(t *testing.T) {
	const timeout = time.Second
	hung := rawServer(t, hold)
	good := rawServer(t, func(c net.Conn) {
		if _, err := readRequest(c); err == nil {
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
		}
	})
	cfg := Config{Type: TypeHTTP, Interval: 2 * time.Second, Timeout: timeout, Rise: 1, Fall: 1}
	h := newHarness(t, cfg)
	start := time.Now()
	h.c.Add("hung", hung, stateNew)
	h.c.Add("good", good, stateNew)

	if r := h.probe(); r != (probeResult{"good", true}) {
		t.Fatalf("first result %+v, want good's success", r)
	}
	h.wantEvent(Event{ID: "good", Up: true, Reason: "first probe succeeded"})
	// Both timers were armed at the same instant with a delay in
	// [0.9, 1.1] × interval, so every 1.1 × interval each fires exactly
	// once (for up to 4 moves): good is probed, hung's probe is skipped as
	// its first one is still in flight.
	for i := range 2 {
		h.clk.Advance(cfg.Interval * 11 / 10)
		if r := h.probe(); r != (probeResult{"good", true}) {
			t.Fatalf("round %d: result %+v, want good's success while hung's probe hangs", i, r)
		}
	}
	if d := time.Since(start); d >= timeout {
		t.Fatalf("good's probes took %v, as long as hung's timeout: the test proves nothing", d)
	}
	if r := h.probe(); r != (probeResult{"hung", false}) {
		t.Fatalf("result %+v, want hung's failure", r)
	}
	if d := time.Since(start); d < timeout*9/10 {
		t.Errorf("hung's probe failed after %v, before its timeout of %v", d, timeout)
	}
	ev := h.event()
	if ev.ID != "hung" || ev.Up || !strings.Contains(ev.Reason, "i/o timeout") {
		t.Fatalf("event = %+v, want hung down on a timeout", ev)
	}
}

// Issue 4, "Flapping": alternating success and failure below the rise or
// fall threshold changes nothing.
func TestFlapping(t *testing.T) {
	cfg := testConfig
	cfg.Rise, cfg.Fall = 2, 2
	for _, initial := range []State{stateUp, stateDown} {
		b := newTCPBackend(t)
		h := newHarness(t, cfg)
		h.c.Add("b", b.addr, initial)
		for i := range 8 {
			if i%2 == 0 {
				b.stop()
			} else {
				b.start()
			}
			if _, ok := h.step(); ok != (i%2 == 1) {
				t.Fatalf("probe %d: ok = %v", i, ok)
			}
			h.wantState("b", initial)
		}
		if evs := h.closeAndDrain(); len(evs) != 0 {
			t.Errorf("from %+v: flapping produced events %+v", initial, evs)
		}
		b.stop()
	}
}

// Issue 4: the first probe of a new target goes out at once; one success
// puts it up; a failure keeps it down and then the normal rise applies.
func TestFirstProbe(t *testing.T) {
	t.Run("failure then rise", func(t *testing.T) {
		b := newTCPBackend(t)
		b.stop()
		h := newHarness(t, testConfig)
		h.c.Add("b", b.addr, stateNew)
		if h.probe().ok {
			t.Fatal("probe of a stopped backend succeeded")
		}
		ev := h.event()
		if ev.Up || !strings.HasPrefix(ev.Reason, "first probe failed: ") || !strings.Contains(ev.Reason, "connection refused") {
			t.Fatalf("event = %+v", ev)
		}
		h.wantState("b", stateDown)
		b.start()
		h.step()
		h.wantState("b", stateDown)
		h.step()
		h.wantEvent(Event{ID: "b", Up: true, Reason: "2 consecutive successes"})
	})

	// The probe at Add and no other: the prober counts calls, and Close
	// waits for any probe started.
	for _, tc := range []struct {
		desc    string
		initial State
		calls   int
	}{
		{"new target is probed at once", stateNew, 1},
		{"known up target is not", stateUp, 0},
		{"known down target is not", stateDown, 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			p := &countingProber{}
			h := newHarness(t, testConfig, WithProber(p))
			if st := h.c.Add("b", netip.MustParseAddrPort("127.0.0.1:1"), tc.initial); st != tc.initial {
				t.Errorf("Add returned %+v, want %+v", st, tc.initial)
			}
			h.c.Close()
			if calls, _ := p.counts(); calls != tc.calls {
				t.Errorf("%d probes at Add, want %d", calls, tc.calls)
			}
		})
	}

	t.Run("known target probed one interval later", func(t *testing.T) {
		h := newHarness(t, testConfig, WithProber(&countingProber{err: errScripted}))
		h.c.Add("b", netip.MustParseAddrPort("127.0.0.1:1"), stateUp)
		d, ok := h.step()
		if lo, hi := testConfig.Interval*9/10, testConfig.Interval*11/10; d < lo || d > hi || ok {
			t.Errorf("first probe after %v (ok %v), want a failure within [%v, %v]", d, ok, lo, hi)
		}
		h.wantState("b", stateUp) // one failure of 3
	})
}

// Issue 4, "Passive checks": PassiveDown takes the target down at once;
// it then needs rise active successes.
func TestPassiveDown(t *testing.T) {
	b := newTCPBackend(t)
	h := newHarness(t, testConfig)
	h.c.Add("b", b.addr, stateNew)
	h.probe()
	h.wantEvent(Event{ID: "b", Up: true, Reason: "first probe succeeded"})

	h.c.PassiveDown("b", "5 consecutive connect failures")
	h.wantState("b", stateDown) // at once, before any probe
	h.wantEvent(Event{ID: "b", Up: false, Reason: "passive: 5 consecutive connect failures"})
	h.c.PassiveDown("b", "again")     // already down: nothing
	h.c.PassiveDown("nobody", "none") // unknown: nothing

	if _, ok := h.step(); !ok {
		t.Fatal("probe failed")
	}
	h.wantState("b", stateDown)
	if _, ok := h.step(); !ok {
		t.Fatal("probe failed")
	}
	h.wantEvent(Event{ID: "b", Up: true, Reason: "2 consecutive successes"})
	if evs := h.closeAndDrain(); len(evs) != 0 {
		t.Errorf("extra events %+v", evs)
	}
}

// Issue 4: with type none there is no probe; a new target is up from the
// start without an event; a passive down lasts one interval.
func TestTypeNone(t *testing.T) {
	p := &countingProber{}
	cfg := Config{Type: TypeNone, Interval: 5 * time.Second}
	h := newHarness(t, cfg, WithProber(p))
	if st := h.c.Add("b", netip.MustParseAddrPort("127.0.0.1:1"), stateNew); st != stateUp {
		t.Fatalf("Add returned %+v, want up", st)
	}
	if h.clk.Pending() != 0 {
		t.Fatalf("%d timers pending with type none", h.clk.Pending())
	}

	h.c.PassiveDown("b", "5 consecutive connect failures")
	h.wantEvent(Event{ID: "b", Up: false, Reason: "passive: 5 consecutive connect failures"})
	h.clk.Advance(cfg.Interval - time.Nanosecond)
	h.wantState("b", stateDown)
	h.clk.Advance(time.Nanosecond)
	h.wantState("b", stateUp)
	h.wantEvent(Event{ID: "b", Up: true, Reason: "passive: hold-down of 5s over (no active check)"})

	// A reload carrying the down state over holds it for a new interval.
	if st := h.c.Add("c", netip.MustParseAddrPort("127.0.0.1:2"), stateDown); st != stateDown {
		t.Fatalf("Add returned %+v, want down", st)
	}
	if d, _ := h.clk.AdvanceToNext(); d != cfg.Interval {
		t.Errorf("carried hold-down lasted %v, want %v", d, cfg.Interval)
	}
	h.wantEvent(Event{ID: "c", Up: true, Reason: "passive: hold-down of 5s over (no active check)"})

	if evs := h.closeAndDrain(); len(evs) != 0 {
		t.Errorf("extra events %+v", evs)
	}
	if calls, _ := p.counts(); calls != 0 {
		t.Errorf("%d probes with type none", calls)
	}
}

// Remove stops probing; the result of a probe in flight is dropped.
func TestRemove(t *testing.T) {
	t.Run("stops the schedule", func(t *testing.T) {
		b := newTCPBackend(t)
		h := newHarness(t, testConfig)
		h.c.Add("b", b.addr, stateNew)
		h.probe()
		h.c.Remove("b")
		h.c.Remove("b") // twice: nothing
		if n := h.clk.Pending(); n != 0 {
			t.Fatalf("%d timers pending after Remove", n)
		}
		h.wantState("b", State{})
		h.clk.Advance(10 * testConfig.Interval)
		select {
		case r := <-h.probes:
			t.Fatalf("probe %+v after Remove", r)
		default:
		}
	})

	t.Run("drops the result in flight", func(t *testing.T) {
		p := &countingProber{entered: make(chan string, 1), release: make(chan struct{})}
		h := newHarness(t, testConfig, WithProber(p))
		h.c.Add("b", netip.MustParseAddrPort("127.0.0.1:1"), stateNew)
		<-p.entered
		h.c.Remove("b")
		close(p.release)
		if evs := h.closeAndDrain(); len(evs) != 0 {
			t.Errorf("events %+v of a removed target", evs)
		}
		select {
		case r := <-h.probes:
			t.Errorf("result %+v of a removed target reported", r)
		default:
		}
	})

	t.Run("re-Add replaces", func(t *testing.T) {
		a, b := newTCPBackend(t), newTCPBackend(t)
		h := newHarness(t, testConfig)
		h.c.Add("x", a.addr, stateNew)
		h.probe()
		h.wantEvent(Event{ID: "x", Up: true, Reason: "first probe succeeded"})
		b.stop()
		h.c.Add("x", b.addr, stateNew)
		if h.probe().ok {
			t.Fatal("probe of the replacement's address succeeded")
		}
		if n := h.clk.Pending(); n != 1 {
			t.Errorf("%d timers pending, want the replacement's only", n)
		}
	})
}

// Close aborts the probes in flight, waits for them, and nothing runs
// after it.
func TestCloseWaits(t *testing.T) {
	p := &countingProber{entered: make(chan string, 3), release: make(chan struct{})}
	cfg := testConfig
	cfg.Timeout = time.Hour // only the cancellation by Close ends the probes
	h := newHarness(t, cfg, WithProber(p))
	for i := range 3 {
		h.c.Add(string(rune('a'+i)), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1+i)), stateNew)
	}
	for range 3 {
		<-p.entered
	}
	done := make(chan struct{})
	go func() {
		h.c.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("Close did not abort the probes in flight")
	}
	if calls, returned := p.counts(); calls != 3 || returned != 3 {
		t.Fatalf("Close returned with %d of %d probes ended", returned, calls)
	}
	if n := h.clk.Pending(); n != 0 {
		t.Errorf("%d timers pending after Close", n)
	}
	h.c.Add("late", netip.MustParseAddrPort("127.0.0.1:9"), stateNew)
	h.c.PassiveDown("a", "late")
	h.clk.Advance(10 * cfg.Interval)
	if calls, _ := p.counts(); calls != 3 {
		t.Errorf("probes after Close: %d calls", calls)
	}
	if len(h.events) != 0 || len(h.probes) != 0 {
		t.Errorf("callbacks after Close: %d events, %d probe results", len(h.events), len(h.probes))
	}
	h.wantState("a", stateNew) // still readable
}

// Each probe is scheduled Interval ±10% after the previous one, with a new
// random delay each time, on the grid that batches probes.
func TestJitter(t *testing.T) {
	for _, iv := range []time.Duration{1, 3, 10, 25, time.Millisecond, 2 * time.Second, 7 * time.Second, time.Hour} {
		lo, hi := iv-iv/10, iv+iv/10
		grid := min(iv/20, maxGrid)
		minSeen, maxSeen := hi, lo
		for i := range 10000 {
			// Instants on and off the grid, and before 1970.
			now := epoch.Add(time.Duration(i) * 7919 * time.Microsecond)
			if i%3 == 0 {
				now = time.Unix(0, -int64(i)*104729)
			}
			d := nextDelay(now, iv)
			if d < lo || d > hi {
				t.Fatalf("interval %v: next probe %v after %v, outside [%v, %v]", iv, d, now, lo, hi)
			}
			if due := now.Add(d).UnixNano(); grid > 0 && due%int64(grid) != 0 {
				t.Fatalf("interval %v: next probe at %v, off the %v grid", iv, now.Add(d), grid)
			}
			minSeen, maxSeen = min(minSeen, d), max(maxSeen, d)
		}
		if iv >= time.Millisecond && (minSeen > iv-iv/20 || maxSeen < iv+iv/20) {
			t.Errorf("interval %v: delays spread only over [%v, %v]", iv, minSeen, maxSeen)
		}
	}

	h := newHarness(t, testConfig, WithProber(&countingProber{}))
	h.c.Add("b", netip.MustParseAddrPort("127.0.0.1:1"), stateNew)
	h.probe()
	seen := map[time.Duration]bool{}
	for range 50 {
		d, _ := h.step()
		if d < testConfig.Interval*9/10 || d > testConfig.Interval*11/10 {
			t.Fatalf("probe %v after the previous one, want %v ±10%%", d, testConfig.Interval)
		}
		seen[d] = true
	}
	if len(seen) < 3 {
		t.Errorf("only %d distinct periods in 50 probes: %v", len(seen), seen)
	}
}

// Config.Port replaces the target's port.
func TestPortOverride(t *testing.T) {
	b := newTCPBackend(t)
	cfg := testConfig
	cfg.Port = int(b.addr.Port())
	h := newHarness(t, cfg)
	other := newTCPBackend(t)
	other.stop() // the target's own port refuses
	h.c.Add("b", other.addr, stateNew)
	if !h.probe().ok {
		t.Fatal("probe of the override port failed")
	}
}

// A Config that does not validate makes every probe fail with the reason.
func TestInvalidConfig(t *testing.T) {
	h := newHarness(t, Config{Type: "udp"})
	h.c.Add("b", netip.MustParseAddrPort("127.0.0.1:1"), stateNew)
	h.probe()
	h.wantEvent(Event{ID: "b", Up: false, Reason: `first probe failed: healthcheck: unknown check type "udp"`})
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		desc string
		cfg  Config
		ok   bool
	}{
		{"zero is a tcp check", Config{}, true},
		{"http defaults", Config{Type: TypeHTTP}, true},
		{"none", Config{Type: TypeNone}, true},
		{"unknown type", Config{Type: "icmp"}, false},
		{"port too big", Config{Port: 65536}, false},
		{"empty status range", Config{Type: TypeHTTP, ExpectStatusMin: 300, ExpectStatusMax: 200}, false},
		{"relative path", Config{Type: TypeHTTP, Path: "healthz"}, false},
		{"path with a line break", Config{Type: TypeHTTP, Path: "/a\r\nX: y"}, false},
		{"host with a space", Config{Type: TypeHTTP, Host: "a b"}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v", tc.desc, err)
		}
	}
	d := Config{}.withDefaults()
	if d != (Config{Type: TypeTCP, Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3,
		Path: "/healthz", ExpectStatusMin: 200, ExpectStatusMax: 399}) {
		t.Errorf("defaults = %+v", d)
	}
	if d := (Config{Interval: 500 * time.Millisecond}).withDefaults(); d.Timeout != 500*time.Millisecond {
		t.Errorf("timeout default with a short interval = %v", d.Timeout)
	}
}

// Events reach onChange in the order they happened, even when the owner
// is slow.
func TestEventOrder(t *testing.T) {
	p := &countingProber{}
	var mu sync.Mutex
	var got []Event
	slow := make(chan struct{})
	c := New(Config{Type: TypeTCP, Rise: 1, Fall: 1}, func(ev Event) {
		<-slow
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
	}, WithClock(NewFakeClock(epoch)), WithProber(p))
	for i := range 5 {
		c.Add("b", netip.MustParseAddrPort("127.0.0.1:1"), stateUp)
		c.PassiveDown("b", string(rune('0'+i)))
	}
	close(slow)
	c.Close()
	if len(got) != 5 {
		t.Fatalf("got %d events, want 5", len(got))
	}
	for i, ev := range got {
		if want := "passive: " + string(rune('0'+i)); ev.Reason != want {
			t.Errorf("event %d: %q, want %q", i, ev.Reason, want)
		}
	}
}
