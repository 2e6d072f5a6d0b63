package l4

import (
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbd-lb/lbd/internal/nettest"
)

// refusingAddr is a loopback address where nothing listens.
func refusingAddr(t testing.TB) netip.AddrPort {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close()
	return a
}

// blackhole returns a loopback address whose SYNs are dropped: a listener
// with a full accept queue that never accepts. Linux drops a SYN for a
// full queue without answering, which is exactly a backend that never
// answers.
func blackhole(t testing.TB) netip.AddrPort {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	// Fill the queue (backlog 0 holds one connection).
	for i := 0; i < 2; i++ {
		c, err := net.DialTimeout("tcp", addr.String(), time.Second)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	return addr
}

func TestRetryNextBackend(t *testing.T) {
	good := listen(t, "tcp", "127.0.0.1:0", echo)
	dead := refusingAddr(t)
	e := testEngine(t, Options{})
	// wrr alternates between the two, so half the first picks refuse.
	p := testPool(t, e.Loops(), "wrr", dead, good)
	ln := proxyTo(t, e, p, func(c *ListenerConfig) { c.Retries = 1 })
	for i := 0; i < 10; i++ {
		c := dial(t, ln.Addr())
		if got, err := roundTrip(c, "retry"); err != nil || got != "retry" {
			t.Fatalf("connection %d: %q, %v", i, got, err)
		}
		c.Close()
	}
	var errs uint64
	for _, b := range p.Backends() {
		_, e, _, _ := b.Totals()
		errs += e
	}
	if errs == 0 {
		t.Fatal("no connect error recorded against the refusing backend")
	}
}

func TestNoBackend(t *testing.T) {
	e := testEngine(t, Options{})
	p := testPool(t, e.Loops(), "wrr", refusingAddr(t), refusingAddr(t), refusingAddr(t))
	ln := proxyTo(t, e, p, func(c *ListenerConfig) { c.Retries = 5 })
	c := dial(t, ln.Addr())
	expectClosed(t, c)
	nettest.Eventually(t, "no_backend counted", func() bool {
		_, rej := ln.Totals()
		return rej[RejectNoBackend] == 1
	})
	var tried uint64
	for _, b := range p.Backends() {
		_, e, _, _ := b.Totals()
		if e > 1 {
			t.Fatalf("backend %s tried %d times for one connection", b.Name, e)
		}
		tried += e
	}
	if tried != 3 {
		t.Fatalf("tried %d backends, want each of 3 once", tried)
	}
}

// TestConnectTimeout: a connection whose pick is a black hole moves on to
// the good backend when connect_timeout has passed on the loop's clock,
// not before; one that picks the good backend first is served at once.
func TestConnectTimeout(t *testing.T) {
	hole := blackhole(t)
	good := listen(t, "tcp", "127.0.0.1:0", echo)
	clk := &handClock{}
	e := testEngine(t, Options{Loops: 1, Clock: clk.now})
	p := testPool(t, e.Loops(), "wrr", hole, good)
	const timeout = 3 * time.Second
	ln := proxyTo(t, e, p, func(c *ListenerConfig) { c.ConnectTimeout = timeout; c.Retries = 1 })
	holed := p.Backend(hole.String())
	slow := 0
	for range 4 {
		c := dial(t, ln.Addr())
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		// Either the good backend answers, or the connect to the black
		// hole is under way.
		got := make(chan error, 1)
		go func() {
			b := make([]byte, 1)
			_, err := io.ReadFull(c, b)
			got <- err
		}()
		var answered bool
		nettest.Eventually(t, "an answer or a connect under way", func() bool {
			select {
			case err := <-got:
				if err != nil {
					t.Errorf("good backend: %v", err)
				}
				answered = true
				return true
			default:
				return holed.Active.Load() == 1
			}
		})
		if !answered {
			slow++
			clk.advance(e, timeout-time.Millisecond)
			select {
			case err := <-got:
				t.Fatalf("answered before connect_timeout (%v)", err)
			default:
			}
			// A timer fires in the first tick (10 ms) that starts after
			// its deadline.
			clk.advance(e, 20*time.Millisecond)
			if err := <-got; err != nil {
				t.Fatalf("after the timeout: %v", err)
			}
		}
		c.Close()
	}
	_, errs, _, _ := holed.Totals()
	if slow == 0 || errs != uint64(slow) {
		t.Fatalf("%d connections waited for the timeout, black hole has %d connect errors", slow, errs)
	}
}

// TestIdleTimeout: a connection with no progress either way for
// idle_timeout on the loop's clock is closed; one with traffic meanwhile
// is not.
func TestIdleTimeout(t *testing.T) {
	backend := listen(t, "tcp", "127.0.0.1:0", echo)
	clk := &handClock{}
	e := testEngine(t, Options{Clock: clk.now})
	const idle = 10 * time.Minute
	ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", backend), func(c *ListenerConfig) { c.IdleTimeout = idle })
	quiet := dial(t, ln.Addr())
	if _, err := roundTrip(quiet, "a"); err != nil {
		t.Fatal(err)
	}
	busy := dial(t, ln.Addr())
	// busy has traffic every 6 minutes; quiet none after its first.
	for range 2 {
		acked(t, e)
		clk.advance(e, 6*time.Minute)
		if got, err := roundTrip(busy, "b"); err != nil || got != "b" {
			t.Fatalf("busy connection: %q, %v", got, err)
		}
	}
	expectClosed(t, quiet)
	if got, err := roundTrip(busy, "c"); err != nil || got != "c" {
		t.Fatalf("busy connection closed: %v", err)
	}
	// 9 minutes on, busy is still open; 2 more, and it has been idle too
	// long.
	acked(t, e)
	clk.advance(e, 9*time.Minute)
	if got, err := roundTrip(busy, "d"); err != nil || got != "d" {
		t.Fatalf("busy connection closed early: %v", err)
	}
	acked(t, e)
	clk.advance(e, idle+time.Minute)
	expectClosed(t, busy)
}

func TestMaxConnections(t *testing.T) {
	backend := listen(t, "tcp", "127.0.0.1:0", echo)
	e := testEngine(t, Options{})
	ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", backend), func(c *ListenerConfig) { c.MaxConnections = 2 })
	a, b := dial(t, ln.Addr()), dial(t, ln.Addr())
	for _, c := range []net.Conn{a, b} {
		if _, err := roundTrip(c, "x"); err != nil {
			t.Fatal(err)
		}
	}
	// Past the limit the connection is reset at once; the reset may even
	// beat the client's own connect to completion.
	if over, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second); err == nil {
		expectClosed(t, over)
		over.Close()
	}
	_, rej := ln.Totals()
	if rej[RejectMaxConnections] != 1 {
		t.Fatalf("rejected %v", rej)
	}
	a.Close()
	nettest.Eventually(t, "a slot to free", func() bool { return ln.Active() == 1 })
	c := dial(t, ln.Addr())
	if got, err := roundTrip(c, "again"); err != nil || got != "again" {
		t.Fatalf("%q, %v", got, err)
	}
}

func TestWheel(t *testing.T) {
	const tick = int64(10)
	w := newWheel(tick, 8, 0)
	fired := map[int32]int64{}
	due := map[int32]int64{}
	var now int64
	fire := func(r timerRef, _ int64) {
		if d := due[r.slot]; d > now {
			w.add(r, d) // refile: its deadline moved
			return
		}
		fired[r.slot] = now
	}
	add := func(slot int32, d int64) { due[slot] = d; w.add(timerRef{slot: slot}, d) }
	add(1, 25)  // within the span
	add(2, 500) // far beyond the 80-unit span
	add(3, 30)
	due[3] = 95 // pushed later without touching the wheel
	for now = 0; now <= 600; now += 5 {
		w.advance(now, fire)
	}
	if fired[1] < 25 || fired[1] > 25+tick {
		t.Fatalf("timer 1 fired at %d, want 25..35", fired[1])
	}
	if fired[3] < 95 || fired[3] > 95+tick {
		t.Fatalf("timer 3 fired at %d, want 95..105", fired[3])
	}
	if fired[2] < 500 || fired[2] > 500+tick {
		t.Fatalf("timer 2 fired at %d, want 500..510", fired[2])
	}
	if w.live != 0 || w.untilNext(now) != -1 {
		t.Fatalf("wheel not empty: %d", w.live)
	}
}

// TestWheelSleepsToNextEntry: the epoll timeout reaches to the next tick
// that holds an entry, not to the next tick, so a loop whose connections
// all have minutes to go wakes once per wheel span rather than every tick.
func TestWheelSleepsToNextEntry(t *testing.T) {
	const tick, slots = int64(10), 4096
	w := newWheel(tick, slots, 0)
	if d := w.untilNext(0); d != -1 {
		t.Fatalf("empty wheel: %d", d)
	}
	far := int64(600_000) // beyond the span of 40960
	w.add(timerRef{slot: 1}, far)
	if d := w.untilNext(0); d != (slots-1)*tick {
		t.Fatalf("one far entry: sleep %d, want %d (the last slot)", d, (slots-1)*tick)
	}
	w.add(timerRef{slot: 2}, 25)
	if d := w.untilNext(7); d != 30-7 {
		t.Fatalf("entry due at 25: sleep %d, want %d", d, 30-7)
	}
	fires, wakeups := 0, 0
	now := int64(7)
	for now < far+tick {
		d := w.untilNext(now)
		if d < 0 {
			t.Fatal("the far entry was lost")
		}
		now += d
		wakeups++
		w.advance(now, func(r timerRef, _ int64) {
			fires++
			if r.slot == 1 && now < far {
				w.add(r, far) // not due yet: filed again, as fireTimer does
			}
		})
		if r := w.live; r == 0 {
			break
		}
	}
	if now < far || now > far+tick {
		t.Fatalf("the far entry fired at %d, want %d..%d", now, far, far+tick)
	}
	// One wakeup for the near entry, then about one per span: 600000/40960.
	if wakeups > 20 {
		t.Fatalf("%d wakeups and %d fires to reach a deadline %d ticks away", wakeups, fires, far/tick)
	}
}

// TestWheelNextFiled: the bitmap's answer for the next populated tick is
// the slot-by-slot scan's, through random filing and advancing.
func TestWheelNextFiled(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	w := newWheel(10, 256, 0)
	brute := func() int64 {
		if w.live == 0 {
			return -1
		}
		n := int64(len(w.slots))
		for k := int64(0); k < n; k++ {
			if len(w.slots[(w.next+k)%n]) > 0 {
				return w.next + k
			}
		}
		return -1
	}
	now := int64(0)
	for i := range 20000 {
		switch r.IntN(3) {
		case 0, 1:
			w.add(timerRef{slot: int32(i)}, now+r.Int64N(4000))
		case 2:
			now += r.Int64N(300)
			w.advance(now, func(timerRef, int64) {})
		}
		if got, want := w.nextFiled(), brute(); got != want {
			t.Fatalf("step %d: nextFiled %d, scan %d", i, got, want)
		}
	}
}

// TestEngineCallsAfterClose: control calls after Close return instead of
// waiting for loops that are gone.
func TestEngineCallsAfterClose(t *testing.T) {
	e, err := New(Options{Loops: 2})
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	p := testPool(t, 2, "wrr", listen(t, "tcp", "127.0.0.1:0", echo))
	ln := proxyTo(t, e, p, nil)
	e.Close()
	done := make(chan struct{})
	go func() {
		e.CloseListener(ln)
		e.CloseBackend(p.Backends()[0])
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("engine call after Close hangs")
	}
}
