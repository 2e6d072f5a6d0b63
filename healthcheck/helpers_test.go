package healthcheck

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// wait bounds every wait on a channel: it only turns a hang into a failure.
const wait = 10 * time.Second

type probeResult struct {
	id string
	ok bool
}

// harness is a Checker on a FakeClock whose events and probe results go to
// channels, so that tests wait for them instead of sleeping.
type harness struct {
	t      *testing.T
	clk    *FakeClock
	c      *Checker
	events chan Event
	probes chan probeResult
}

func newHarness(t *testing.T, cfg Config, opts ...Option) *harness {
	t.Helper()
	h := &harness{
		t:      t,
		clk:    NewFakeClock(epoch),
		events: make(chan Event, 1000),
		probes: make(chan probeResult, 1000),
	}
	opts = append([]Option{
		WithClock(h.clk),
		OnProbe(func(id string, ok bool) { h.probes <- probeResult{id, ok} }),
		WithLogger(slog.New(slog.DiscardHandler)),
	}, opts...)
	var c *Checker
	var ready sync.WaitGroup
	ready.Add(1)
	c = New(cfg, func(ev Event) {
		ready.Wait()
		_ = c.State(ev.ID) // onChange may call the Checker
		h.events <- ev
	}, opts...)
	h.c = c
	ready.Done()
	t.Cleanup(c.Close)
	return h
}

// probe waits for the next probe result.
func (h *harness) probe() probeResult {
	h.t.Helper()
	select {
	case r := <-h.probes:
		return r
	case <-time.After(wait):
		h.t.Fatal("no probe result")
		return probeResult{}
	}
}

// event waits for the next event.
func (h *harness) event() Event {
	h.t.Helper()
	select {
	case ev := <-h.events:
		return ev
	case <-time.After(wait):
		h.t.Fatal("no event")
		return Event{}
	}
}

// step moves the clock to the next due timer, which must be the probe of
// the only target, and waits for the probe's result. It returns how far the
// clock moved and the result.
func (h *harness) step() (time.Duration, bool) {
	h.t.Helper()
	d, ok := h.clk.AdvanceToNext()
	if !ok {
		h.t.Fatal("no timer pending")
	}
	return d, h.probe().ok
}

// closeAndDrain closes the Checker, which delivers every pending event, and
// returns the events not yet read.
func (h *harness) closeAndDrain() []Event {
	h.c.Close()
	var evs []Event
	for {
		select {
		case ev := <-h.events:
			evs = append(evs, ev)
		default:
			return evs
		}
	}
}

func (h *harness) wantEvent(want Event) {
	h.t.Helper()
	if got := h.event(); got != want {
		h.t.Fatalf("event = %+v, want %+v", got, want)
	}
}

func (h *harness) wantState(id string, want State) {
	h.t.Helper()
	if got := h.c.State(id); got != want {
		h.t.Fatalf("State(%q) = %+v, want %+v", id, got, want)
	}
}

// tcpBackend is a loopback listener that can go away and come back on the
// same port. It closes what it accepts.
type tcpBackend struct {
	t    *testing.T
	addr netip.AddrPort
	mu   sync.Mutex
	ln   net.Listener
	wg   sync.WaitGroup
}

func newTCPBackend(t *testing.T) *tcpBackend {
	b := &tcpBackend{t: t}
	b.listen("127.0.0.1:0")
	b.addr = netip.MustParseAddrPort(b.ln.Addr().String())
	t.Cleanup(b.stop)
	return b
}

func (b *tcpBackend) listen(addr string) {
	b.t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		b.t.Fatal(err)
	}
	b.mu.Lock()
	b.ln = ln
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// stop closes the listener: connects are then refused.
func (b *tcpBackend) stop() {
	b.mu.Lock()
	ln := b.ln
	b.ln = nil
	b.mu.Unlock()
	if ln != nil {
		ln.Close()
		b.wg.Wait()
	}
}

// start listens again on the same port.
func (b *tcpBackend) start() { b.listen(b.addr.String()) }

// rawServer serves every connection with fn on a loopback listener.
func rawServer(t testing.TB, fn func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close() // unblocks servers that hold their connection
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				fn(c)
				c.Close()
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// hold keeps a connection open until the peer closes or resets it.
func hold(c net.Conn) {
	_, _ = io.Copy(io.Discard, c)
}

// readRequest reads a request head, up to its blank line.
func readRequest(c net.Conn) (string, error) {
	var buf []byte
	b := make([]byte, 512)
	for headEnd(buf) < 0 {
		n, err := c.Read(b)
		buf = append(buf, b[:n]...)
		if err != nil {
			return string(buf), err
		}
	}
	return string(buf), nil
}

// countingProber counts its calls and blocks each until release is closed
// (nil: it does not block) or its context ends.
type countingProber struct {
	mu       sync.Mutex
	calls    int
	returned int
	entered  chan string
	release  chan struct{}
	err      error
}

func (p *countingProber) Probe(ctx context.Context, addr netip.AddrPort) error {
	p.mu.Lock()
	p.calls++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.returned++
		p.mu.Unlock()
	}()
	if p.entered != nil {
		p.entered <- addr.String()
	}
	if p.release != nil {
		select {
		case <-p.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.err
}

func (p *countingProber) counts() (calls, returned int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls, p.returned
}

var errScripted = errors.New("scripted failure")
