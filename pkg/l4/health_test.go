package l4

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/healthcheck"
	"github.com/lbd-lb/lbd/internal/nettest"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// healthPool builds a pool whose health checks use hc and, when given,
// extra checker options.
func healthPool(t *testing.T, e *Engine, algorithm string, hc healthcheck.Config, passive int, extra []healthcheck.Option, addrs ...netip.AddrPort) *pool.Pool {
	t.Helper()
	spec := pool.Spec{Name: "p", Algorithm: algorithm, Hash: "source_ip", MaglevTableSize: 65537,
		PassiveFailures: passive, HealthCheck: hc}
	for _, a := range addrs {
		spec.Backends = append(spec.Backends, pool.BackendSpec{Address: a, Weight: 100})
	}
	p, err := pool.New(spec, pool.Options{Loops: e.Loops(), OnDisable: e.CloseBackend, Health: extra}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	<-p.Ready()
	return p
}

type verdicts struct {
	mu   sync.Mutex
	down map[netip.AddrPort]bool
}

func (v *verdicts) set(a netip.AddrPort, down bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.down[a] = down
}

func (v *verdicts) Probe(_ context.Context, a netip.AddrPort) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.down[a] {
		return errors.New("scripted failure")
	}
	return nil
}

// TestDownAndBack uses real tcp probes against a backend that stops
// listening and later listens again on the same port.
func TestDownAndBack(t *testing.T) {
	stable := nameBackend(t, "stable")
	flaky, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	flakyAddr := flaky.Addr().(*net.TCPAddr).AddrPort()
	serve := func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "flaky")
			c.Close()
		}
	}
	go serve(flaky)
	e := testEngine(t, Options{})
	hc := healthcheck.Config{Type: "tcp", Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 2, Fall: 2}
	p := healthPool(t, e, "wrr", hc, 0, nil, stable, flakyAddr)
	ln := proxyTo(t, e, p, nil)
	b := p.Backend(flakyAddr.String())
	if !b.Healthy() {
		t.Fatal("flaky backend not up after its first probe")
	}
	flaky.Close()
	start := time.Now()
	nettest.Eventually(t, "flaky backend down", func() bool { return !b.Healthy() })
	// fall × interval + timeout, with the jitter and scheduling slack.
	if el := time.Since(start); el > 2*55*time.Millisecond+40*time.Millisecond+200*time.Millisecond {
		t.Fatalf("took %v to go down", el)
	}
	for i := 0; i < 20; i++ {
		if got := from(t, "127.0.0.1", ln.Addr()); got != "stable" {
			t.Fatalf("connection %d went to %q after the backend went down", i, got)
		}
	}
	again, err := net.Listen("tcp", flakyAddr.String())
	if err != nil {
		t.Skip("port taken meanwhile:", err)
	}
	defer again.Close()
	go serve(again)
	nettest.Eventually(t, "flaky backend back", b.Healthy)
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		seen[from(t, "127.0.0.1", ln.Addr())] = true
	}
	if !seen["flaky"] || !seen["stable"] {
		t.Fatalf("after recovery reached %v", seen)
	}
}

// streamer keeps a connection busy: it sends a numbered line and reads
// its echo until told to stop, and reports the first mismatch.
func streamer(t *testing.T, to netip.AddrPort, stop <-chan struct{}) <-chan error {
	done := make(chan error, 1)
	c := dial(t, to)
	c.SetDeadline(time.Now().Add(time.Minute))
	go func() {
		buf := make([]byte, 64)
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			msg := fmt.Sprintf("line %08d ........................................\n", i)
			if _, err := c.Write([]byte(msg)); err != nil {
				done <- fmt.Errorf("write %d: %w", i, err)
				return
			}
			if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil || string(buf[:len(msg)]) != msg {
				done <- fmt.Errorf("echo %d: %q, %v", i, buf[:len(msg)], err)
				return
			}
		}
	}()
	return done
}

func TestDrainDisableEnable(t *testing.T) {
	a := listen(t, "tcp", "127.0.0.1:0", echo)
	b := listen(t, "tcp", "127.0.0.1:0", echo)
	e := testEngine(t, Options{})
	p := healthPool(t, e, "wrr", healthcheck.Config{Type: "none"}, 0, nil, a, b)
	ln := proxyTo(t, e, p, nil)
	ba := p.Backend(a.String())

	// Open connections until one lands on a.
	var onA net.Conn
	for i := 0; i < 10 && onA == nil; i++ {
		c := dial(t, ln.Addr())
		roundTrip(c, "x")
		if ba.Active.Load() > 0 {
			onA = c
		}
	}
	if onA == nil {
		t.Fatal("no connection reached backend a")
	}
	before := ba.Active.Load()
	p.Drain(ba)
	// The open connection keeps flowing.
	for i := 0; i < 5; i++ {
		if got, err := roundTrip(onA, "still"); err != nil || got != "still" {
			t.Fatalf("drained backend's connection broke: %v", err)
		}
	}
	// New connections avoid a.
	for i := 0; i < 10; i++ {
		c := dial(t, ln.Addr())
		roundTrip(c, "y")
	}
	if ba.Active.Load() != before {
		t.Fatalf("drained backend got new connections: %d, was %d", ba.Active.Load(), before)
	}
	p.Disable(ba)
	expectClosed(t, onA)
	nettest.Eventually(t, "a's connections closed", func() bool { return ba.Active.Load() == 0 })
	p.Enable(ba)
	for i := 0; i < 4; i++ {
		c := dial(t, ln.Addr())
		roundTrip(c, "z")
	}
	if ba.Active.Load() == 0 {
		t.Fatal("enabled backend gets no connections")
	}
}

func TestEverythingDown(t *testing.T) {
	a := listen(t, "tcp", "127.0.0.1:0", echo)
	v := &verdicts{down: map[netip.AddrPort]bool{}}
	clock := healthcheck.NewFakeClock(time.Unix(1e9, 0))
	e := testEngine(t, Options{})
	hc := healthcheck.Config{Type: "tcp", Interval: time.Second, Timeout: 100 * time.Millisecond, Rise: 1, Fall: 1}
	p := healthPool(t, e, "maglev", hc, 0, []healthcheck.Option{healthcheck.WithClock(clock), healthcheck.WithProber(v)}, a)
	ln := proxyTo(t, e, p, nil)
	b := p.Backends()[0]
	v.set(a, true)
	clock.Advance(2 * time.Second)
	nettest.Eventually(t, "backend down", func() bool { return !b.Healthy() })
	expectClosed(t, dial(t, ln.Addr()))
	_, rej := ln.Totals()
	if rej[RejectNoBackend] != 1 {
		t.Fatalf("rejections %v", rej)
	}
	v.set(a, false)
	clock.Advance(2 * time.Second)
	nettest.Eventually(t, "backend up", b.Healthy)
	if got, err := roundTrip(dial(t, ln.Addr()), "back"); err != nil || got != "back" {
		t.Fatalf("%q, %v", got, err)
	}
}

// TestPassiveEjection: a backend whose port refuses while its active check
// says up is ejected by passive_failures, and clients get through meanwhile
// thanks to retries.
func TestPassiveEjection(t *testing.T) {
	good := listen(t, "tcp", "127.0.0.1:0", echo)
	dead := refusingAddr(t)
	v := &verdicts{down: map[netip.AddrPort]bool{}} // both pass active checks
	clock := healthcheck.NewFakeClock(time.Unix(1e9, 0))
	e := testEngine(t, Options{})
	hc := healthcheck.Config{Type: "tcp", Interval: time.Hour, Timeout: time.Second, Rise: 2, Fall: 3}
	p := healthPool(t, e, "wrr", hc, 3, []healthcheck.Option{healthcheck.WithClock(clock), healthcheck.WithProber(v)}, good, dead)
	ln := proxyTo(t, e, p, func(c *ListenerConfig) { c.Retries = 1 })
	bd := p.Backend(dead.String())
	if !bd.Healthy() {
		t.Fatal("dead backend should pass its (scripted) active check")
	}
	for i := 0; i < 20; i++ {
		if got, err := roundTrip(dial(t, ln.Addr()), "ok"); err != nil || got != "ok" {
			t.Fatalf("client %d: %q, %v", i, got, err)
		}
	}
	nettest.Eventually(t, "passive ejection", func() bool { return !bd.Healthy() })
	_, errs, _, _ := bd.Totals()
	if errs < 3 {
		t.Fatalf("ejected after %d connect errors", errs)
	}
	// Ejected: no more attempts against it.
	for i := 0; i < 10; i++ {
		roundTrip(dial(t, ln.Addr()), "ok")
	}
	if _, after, _, _ := bd.Totals(); after != errs {
		t.Fatalf("ejected backend still tried: %d errors, was %d", after, errs)
	}
}

// TestChurnLosesNothing streams through the proxy while backends go down
// and up, are drained and enabled and reweighted: no byte of any open
// connection is lost.
func TestChurnLosesNothing(t *testing.T) {
	var addrs []netip.AddrPort
	for i := 0; i < 4; i++ {
		addrs = append(addrs, listen(t, "tcp", "127.0.0.1:0", echo))
	}
	v := &verdicts{down: map[netip.AddrPort]bool{}}
	clock := healthcheck.NewFakeClock(time.Unix(1e9, 0))
	e := testEngine(t, Options{})
	hc := healthcheck.Config{Type: "tcp", Interval: time.Second, Timeout: 100 * time.Millisecond, Rise: 1, Fall: 1}
	p := healthPool(t, e, "maglev", hc, 0, []healthcheck.Option{healthcheck.WithClock(clock), healthcheck.WithProber(v)}, addrs...)
	ln := proxyTo(t, e, p, nil)
	stop := make(chan struct{})
	var streams []<-chan error
	for i := 0; i < 16; i++ {
		streams = append(streams, streamer(t, ln.Addr(), stop))
	}
	backends := p.Backends()
	for round := 0; round < 20; round++ {
		b := backends[round%len(backends)]
		switch round % 4 {
		case 0:
			v.set(b.Addr, true)
			clock.Advance(1100 * time.Millisecond)
		case 1:
			p.Drain(b)
		case 2:
			p.SetWeight(b, 1+round*37%10000)
		case 3:
			for _, x := range backends {
				v.set(x.Addr, false)
				p.Enable(x)
			}
			clock.Advance(1100 * time.Millisecond)
		}
		// New connections come and go during the churn too.
		if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			roundTrip(c, "new")
			c.Close()
		}
		time.Sleep(5 * time.Millisecond) // let the streams run between changes
	}
	close(stop)
	for _, s := range streams {
		if err := <-s; err != nil {
			t.Fatal(err)
		}
	}
}
