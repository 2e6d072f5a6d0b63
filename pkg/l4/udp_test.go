package l4

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/lbd-lb/lbd/healthcheck"
	"github.com/lbd-lb/lbd/internal/nettest"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// udpBackend answers every datagram with prefix followed by the datagram.
// With prefix "" it echoes. It returns its address.
func udpBackend(t testing.TB, prefix string) netip.AddrPort {
	t.Helper()
	return netip.MustParseAddrPort(nettest.EchoUDP(t, prefix))
}

// silentUDP receives and never answers, so flows stay open.
func silentUDP(t testing.TB) netip.AddrPort {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 70000)
		for {
			if _, _, err := c.ReadFromUDP(buf); err != nil {
				return
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func udpProxy(t testing.TB, e *Engine, p *pool.Pool, mod func(*ListenerConfig)) *Listener {
	t.Helper()
	return proxyTo(t, e, p, func(c *ListenerConfig) {
		c.UDP = true
		c.UDPMaxFlows = 100000
		if mod != nil {
			mod(c)
		}
	})
}

// exchange sends msg from c to the proxy and returns the reply and its
// source.
func exchange(t testing.TB, c *net.UDPConn, to netip.AddrPort, msg []byte) ([]byte, netip.AddrPort, error) {
	return exchangeWithin(c, to, msg, 5*time.Second)
}

func exchangeWithin(c *net.UDPConn, to netip.AddrPort, msg []byte, d time.Duration) ([]byte, netip.AddrPort, error) {
	c.SetDeadline(time.Now().Add(d))
	if _, err := c.WriteToUDPAddrPort(msg, to); err != nil {
		return nil, netip.AddrPort{}, err
	}
	buf := make([]byte, 70000)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	return buf[:n], from, err
}

func udpClient(t testing.TB) *net.UDPConn {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestUDPManyClients: 10,000 distinct client ports in waves of 500 at
// once, DNS-style (one reply closes the flow); every reply reaches the
// client that asked, from the address it asked.
func TestUDPManyClients(t *testing.T) {
	backend := udpBackend(t, "re:")
	e := testEngine(t, Options{})
	p := testPool(t, e.Loops(), "maglev", backend)
	ln := udpProxy(t, e, p, func(c *ListenerConfig) { c.UDPResponses = 1 })
	total, wave := 10000, 200
	if testing.Short() {
		total = 1000
	}
	for done := 0; done < total; done += wave {
		var wg sync.WaitGroup
		errs := make(chan error, wave)
		for i := 0; i < wave; i++ {
			wg.Add(1)
			go func(id int) {
				defer wg.Done()
				c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				q := []byte(fmt.Sprintf("query %d from %s", id, c.LocalAddr()))
				// A datagram may be lost on loopback when a socket's
				// receive buffer overflows (the test's own backend is
				// one goroutine); resend to tell loss from
				// misdelivery.
				var reply []byte
				var from netip.AddrPort
				for try := 0; try < 3; try++ {
					reply, from, err = exchangeWithin(c, ln.Addr(), q, 2*time.Second)
					if err == nil {
						break
					}
				}
				if err != nil {
					errs <- fmt.Errorf("client %d: %w", id, err)
					return
				}
				if string(reply) != "re:"+string(q) {
					errs <- fmt.Errorf("client %d got %q", id, reply)
					return
				}
				if from != ln.Addr() {
					errs <- fmt.Errorf("client %d: reply from %v, want %v", id, from, ln.Addr())
				}
			}(done + i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	nettest.Eventually(t, "flows closed after their reply", func() bool { return ln.Active() == 0 })
	// A flow closes when its reply is queued; the reply is counted when
	// its batch is sent, a moment later.
	nettest.Eventually(t, "every datagram counted", func() bool {
		toB, toC, _ := ln.UDPTotals()
		return toB >= uint64(total) && toC >= uint64(total)
	})
}

func TestUDPSizes(t *testing.T) {
	backend := udpBackend(t, "")
	e := testEngine(t, Options{})
	ln := udpProxy(t, e, testPool(t, e.Loops(), "wrr", backend), nil)
	c := udpClient(t)
	for _, size := range []int{0, 1, 1472, 9000, 65507} {
		msg := bytes.Repeat([]byte{byte(size)}, size)
		for i := range msg {
			msg[i] = byte(i * 7)
		}
		got, _, err := exchange(t, c, ln.Addr(), msg)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("size %d: got %d bytes, %v", size, len(got), err)
		}
	}
}

func TestUDPFlowLifetime(t *testing.T) {
	t.Run("udp_responses=1 closes at once", func(t *testing.T) {
		e := testEngine(t, Options{})
		ln := udpProxy(t, e, testPool(t, e.Loops(), "wrr", udpBackend(t, "")), func(c *ListenerConfig) { c.UDPResponses = 1 })
		c := udpClient(t)
		if _, _, err := exchange(t, c, ln.Addr(), []byte("q")); err != nil {
			t.Fatal(err)
		}
		nettest.Eventually(t, "flow closed", func() bool { return ln.Active() == 0 })
	})
	t.Run("idle_timeout expires flows", func(t *testing.T) {
		e := testEngine(t, Options{})
		idle := 200 * time.Millisecond
		ln := udpProxy(t, e, testPool(t, e.Loops(), "wrr", udpBackend(t, "")), func(c *ListenerConfig) { c.IdleTimeout = idle })
		c := udpClient(t)
		start := time.Now()
		for i := 0; i < 3; i++ {
			if _, _, err := exchange(t, c, ln.Addr(), []byte("q")); err != nil {
				t.Fatal(err)
			}
		}
		if ln.Active() != 1 {
			t.Fatalf("%d flows for one client", ln.Active())
		}
		nettest.Eventually(t, "flow expired", func() bool { return ln.Active() == 0 })
		if el := time.Since(start); el < idle {
			t.Fatalf("expired after %v", el)
		}
	})
	t.Run("udp_max_flows holds under a flood", func(t *testing.T) {
		e := testEngine(t, Options{})
		ln := udpProxy(t, e, testPool(t, e.Loops(), "wrr", silentUDP(t)), func(c *ListenerConfig) { c.UDPMaxFlows = 50 })
		// 500 distinct source ports: the sockets stay open so that no
		// port is reused within the flood.
		// Sent in bursts of 50, each counted before the next, so that
		// the listener's socket buffer never overflows and every
		// datagram is accounted for.
		for i := 0; i < 500; i++ {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ln.Addr()))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("flood"))
			if i%50 == 49 {
				want := uint64(i + 1)
				nettest.Eventually(t, "the flood counted", func() bool {
					toB, _, dropped := ln.UDPTotals()
					return toB+dropped[DropMaxFlows] >= want
				})
			}
		}
		_, _, dropped := ln.UDPTotals()
		if ln.Active() != 50 || dropped[DropMaxFlows] != 450 {
			t.Fatalf("%d flows, %d dropped for max_flows; want 50 and 450", ln.Active(), dropped[DropMaxFlows])
		}
	})
}

func TestUDPStickyAndDrain(t *testing.T) {
	a, b := udpBackend(t, "a:"), udpBackend(t, "b:")
	e := testEngine(t, Options{})
	p := healthPool(t, e, "maglev", healthcheck.Config{Type: "none"}, 0, nil, a, b)
	ln := udpProxy(t, e, p, nil)
	c := udpClient(t)
	first, _, err := exchange(t, c, ln.Addr(), []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	mine := first[:2]
	var be *pool.Backend
	for _, x := range p.Backends() {
		if x.Active.Load() == 1 {
			be = x
		}
	}
	p.Drain(be)
	for i := 0; i < 5; i++ {
		got, _, err := exchange(t, c, ln.Addr(), []byte("n"))
		if err != nil || !bytes.Equal(got[:2], mine) {
			t.Fatalf("flow left its draining backend: %q, %v", got, err)
		}
	}
	// New clients avoid the drained backend.
	for i := 0; i < 10; i++ {
		got, _, err := exchange(t, udpClient(t), ln.Addr(), []byte("x"))
		if err != nil || bytes.Equal(got[:2], mine) {
			t.Fatalf("new flow went to the drained backend: %q, %v", got, err)
		}
	}
	// Disable removes its flows.
	p.Disable(be)
	nettest.Eventually(t, "flows of the disabled backend removed", func() bool { return be.Active.Load() == 0 })
}

type alwaysUp struct{}

func (alwaysUp) Probe(context.Context, netip.AddrPort) error { return nil }

func TestUDPRefusedBackend(t *testing.T) {
	good := udpBackend(t, "ok:")
	dead := refusingUDP(t)
	e := testEngine(t, Options{})
	clock := healthcheck.NewFakeClock(time.Unix(1e9, 0))
	hc := healthcheck.Config{Type: "tcp", Interval: time.Hour, Timeout: time.Second, Rise: 2, Fall: 3}
	p := healthPool(t, e, "wrr", hc, 2, []healthcheck.Option{healthcheck.WithClock(clock), healthcheck.WithProber(alwaysUp{})}, good, dead)
	ln := udpProxy(t, e, p, nil)
	bd := p.Backend(dead.String())
	// Clients whose flow lands on the dead port get nothing back; keep
	// sending from new ports until it is ejected.
	deadline := time.Now().Add(10 * time.Second)
	for bd.Healthy() && time.Now().Before(deadline) {
		c := udpClient(t)
		c.SetDeadline(time.Now().Add(100 * time.Millisecond))
		c.WriteToUDPAddrPort([]byte("q"), ln.Addr())
		c.ReadFromUDPAddrPort(make([]byte, 100))
		c.WriteToUDPAddrPort([]byte("q"), ln.Addr()) // the ICMP error surfaces on the next send
		c.ReadFromUDPAddrPort(make([]byte, 100))
		c.Close()
	}
	if bd.Healthy() {
		t.Fatal("refusing UDP backend not ejected")
	}
	if _, errs, _, _ := bd.Totals(); errs < 2 {
		t.Fatalf("%d errors counted", errs)
	}
	for i := 0; i < 10; i++ {
		got, _, err := exchange(t, udpClient(t), ln.Addr(), []byte("q"))
		if err != nil || string(got) != "ok:q" {
			t.Fatalf("after ejection: %q, %v", got, err)
		}
	}
}

// refusingUDP is a loopback UDP port with nothing bound: datagrams to it
// draw ICMP port unreachable.
func refusingUDP(t testing.TB) netip.AddrPort {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a := c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	return a
}

func TestUDPProxyV2(t *testing.T) {
	headers := make(chan *proxyproto.Header, 4)
	bc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	go func() {
		buf := make([]byte, 70000)
		for {
			n, from, err := bc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			h, payload, err := proxyproto.ParseUDPDatagram(buf[:n])
			if err != nil {
				headers <- nil
				continue
			}
			headers <- h
			bc.WriteToUDPAddrPort(payload, from)
		}
	}()
	e := testEngine(t, Options{})
	ln := udpProxy(t, e, testPool(t, e.Loops(), "wrr", bc.LocalAddr().(*net.UDPAddr).AddrPort()), func(c *ListenerConfig) { c.ProxyProtocol = ProxyV2 })
	c := udpClient(t)
	for _, msg := range []string{"first", "second", ""} {
		got, _, err := exchange(t, c, ln.Addr(), []byte(msg))
		if err != nil || string(got) != msg {
			t.Fatalf("%q: %q, %v", msg, got, err)
		}
		h := <-headers
		if h == nil {
			t.Fatal("backend could not parse the PROXY v2 header")
		}
		src, dst, ok := h.UDPAddrs()
		if !ok || src.AddrPort() != c.LocalAddr().(*net.UDPAddr).AddrPort() || dst.AddrPort() != ln.Addr() {
			t.Fatalf("header %v -> %v, want %v -> %v", src, dst, c.LocalAddr(), ln.Addr())
		}
	}
}

// TestUDPWildcardSource: on a 0.0.0.0 bind, replies leave from the address
// each client targeted.
func TestUDPWildcardSource(t *testing.T) {
	backend := udpBackend(t, "")
	e := testEngine(t, Options{})
	ln := udpProxy(t, e, testPool(t, e.Loops(), "wrr", backend), func(c *ListenerConfig) {
		c.Bind = netip.MustParseAddrPort("0.0.0.0:0")
	})
	port := ln.Addr().Port()
	for _, target := range []string{"127.0.0.1", "127.0.0.2"} {
		to := netip.AddrPortFrom(netip.MustParseAddr(target), port)
		got, from, err := exchange(t, udpClient(t), to, []byte(target))
		if err != nil || string(got) != target {
			t.Fatalf("%s: %q, %v", target, got, err)
		}
		if from != to {
			t.Fatalf("reply to a client of %v came from %v", to, from)
		}
	}
}

// TestUDPReloadKeepsFlows: a config swap keeps the socket and the open
// flow, which stays on its backend.
func TestUDPReloadKeepsFlows(t *testing.T) {
	a, b := udpBackend(t, "a:"), udpBackend(t, "b:")
	e := testEngine(t, Options{})
	pa := testPool(t, e.Loops(), "wrr", a)
	ln := udpProxy(t, e, pa, nil)
	c := udpClient(t)
	if got, _, err := exchange(t, c, ln.Addr(), []byte("1")); err != nil || string(got) != "a:1" {
		t.Fatalf("%q %v", got, err)
	}
	cfg := *ln.Config()
	cfg.Pool = testPool(t, e.Loops(), "wrr", b)
	if err := e.Update(ln, cfg); err != nil {
		t.Fatal(err)
	}
	if got, _, err := exchange(t, c, ln.Addr(), []byte("2")); err != nil || string(got) != "a:2" {
		t.Fatalf("open flow moved on reload: %q %v", got, err)
	}
	if got, _, err := exchange(t, udpClient(t), ln.Addr(), []byte("3")); err != nil || string(got) != "b:3" {
		t.Fatalf("new flow after reload: %q %v", got, err)
	}
	bad := cfg
	bad.UDP = false
	if err := e.Update(ln, bad); err == nil {
		t.Fatal("protocol change accepted in place")
	}
}

// TestUDPResponsesInFlight: with udp_responses = 1, a client port with
// several queries in flight gets every answer; the flow ends after the
// last.
func TestUDPResponsesInFlight(t *testing.T) {
	// The backend holds the queries and answers them together.
	bc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	go func() {
		buf := make([]byte, 100)
		var held [][]byte
		var from netip.AddrPort
		for len(held) < 3 {
			n, f, err := bc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			from = f
			held = append(held, append([]byte(nil), buf[:n]...))
		}
		for _, q := range held {
			bc.WriteToUDPAddrPort(q, from)
		}
	}()
	e := testEngine(t, Options{Loops: 1})
	ln := udpProxy(t, e, testPool(t, 1, "wrr", bc.LocalAddr().(*net.UDPAddr).AddrPort()), func(c *ListenerConfig) { c.UDPResponses = 1 })
	c := udpClient(t)
	for _, q := range []string{"q1", "q2", "q3"} {
		c.WriteToUDPAddrPort([]byte(q), ln.Addr())
	}
	got := map[string]bool{}
	buf := make([]byte, 100)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < 3; i++ {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("answer %d: %v (got %v)", i+1, err, got)
		}
		got[string(buf[:n])] = true
	}
	nettest.Eventually(t, "the flow closed after the last answer", func() bool { return ln.Active() == 0 })
}

// TestUDPSpareSockets: with UDPReuseSockets, flows that end with every
// reply in (udp_responses) leave their sockets for the next flows to the
// same backend; a datagram that reached such a socket in between never goes
// to the next client, and that socket is not reused.
func TestUDPSpareSockets(t *testing.T) {
	be := udpClient(t) // a socket on loopback, closed at the end
	var mu sync.Mutex
	ports := map[uint16]bool{}
	last := make(chan netip.AddrPort, 100)
	go func() {
		buf := make([]byte, 70000)
		for {
			n, from, err := be.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			mu.Lock()
			ports[from.Port()] = true
			mu.Unlock()
			be.WriteToUDPAddrPort(append([]byte("re:"), buf[:n]...), from)
			last <- from
		}
	}()
	e := testEngine(t, Options{Loops: 1})
	ln := udpProxy(t, e, testPool(t, e.Loops(), "wrr", be.LocalAddr().(*net.UDPAddr).AddrPort()), func(c *ListenerConfig) {
		c.UDPResponses = 1
		c.UDPReuseSockets = true
	})

	var from netip.AddrPort
	for i := 0; i < 20; i++ {
		c := udpClient(t)
		msg := fmt.Sprintf("q%d", i)
		got, _, err := exchange(t, c, ln.Addr(), []byte(msg))
		if err != nil || string(got) != "re:"+msg {
			t.Fatalf("client %d: %q, %v", i, got, err)
		}
		from = <-last
		nettest.Eventually(t, "flow ended", func() bool { return ln.Active() == 0 })
	}
	mu.Lock()
	n := len(ports)
	mu.Unlock()
	if n != 1 {
		t.Errorf("20 flows one after another used %d backend-side sockets, want 1", n)
	}

	// A stray reply reaches the spare socket after its flow ended.
	if _, err := be.WriteToUDPAddrPort([]byte("stray"), from); err != nil {
		t.Fatal(err)
	}
	nettest.Eventually(t, "the stray queued on the spare socket", func() bool { return udpRxQueued(t, from) })
	c := udpClient(t)
	got, _, err := exchange(t, c, ln.Addr(), []byte("next"))
	if err != nil || string(got) != "re:next" {
		t.Fatalf("next client got %q, %v", got, err)
	}
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 100)
	if n, _, err := c.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("next client also got %q", buf[:n])
	}
	if from2 := <-last; from2 == from {
		t.Errorf("next flow reused the socket %v that had a stray reply", from)
	}
	if _, _, dropped := ln.UDPTotals(); dropped[DropBackendError] != 1 {
		t.Errorf("%d dropped as backend_error, want the one stray", dropped[DropBackendError])
	}
}

// TestUDPLateReply: by default an ended flow's socket closes, so a reply
// the backend sends late for it reaches no one, not even the next client
// while its own flow waits for its answer.
func TestUDPLateReply(t *testing.T) {
	be := udpClient(t) // a socket on loopback, closed at the end
	alice := make(chan netip.AddrPort, 1)
	bobAsked := make(chan netip.AddrPort, 1)
	go func() {
		buf := make([]byte, 70000)
		for {
			n, from, err := be.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			switch msg := string(buf[:n]); msg {
			case "alice":
				be.WriteToUDPAddrPort([]byte("re:alice"), from)
				alice <- from
			case "bob":
				bobAsked <- from // answered by the test, later
			}
		}
	}()
	e := testEngine(t, Options{Loops: 1})
	ln := udpProxy(t, e, testPool(t, e.Loops(), "wrr", be.LocalAddr().(*net.UDPAddr).AddrPort()), func(c *ListenerConfig) { c.UDPResponses = 1 })
	if got, _, err := exchange(t, udpClient(t), ln.Addr(), []byte("alice")); err != nil || string(got) != "re:alice" {
		t.Fatalf("alice: %q %v", got, err)
	}
	aliceSock := <-alice
	nettest.Eventually(t, "alice's flow ended", func() bool { return ln.Active() == 0 })
	bob := udpClient(t)
	bob.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := bob.WriteToUDPAddrPort([]byte("bob"), ln.Addr()); err != nil {
		t.Fatal(err)
	}
	bobSock := <-bobAsked
	// Alice's reply once more, late, to the socket her flow had; then
	// bob's answer.
	be.WriteToUDPAddrPort([]byte("re:alice-late"), aliceSock)
	be.WriteToUDPAddrPort([]byte("re:bob"), bobSock)
	buf := make([]byte, 100)
	n, _, err := bob.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "re:bob" {
		t.Fatalf("bob got %q, %v", buf[:n], err)
	}
	bob.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := bob.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("bob also got %q", buf[:n])
	}
}

// udpRxQueued reports whether the local UDP socket bound to a has bytes
// waiting in its receive queue, from /proc/net/udp.
func udpRxQueued(t *testing.T, a netip.AddrPort) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Fatal(err)
	}
	ip := a.Addr().As4()
	local := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port())
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[1] == local {
			q := strings.SplitN(f[4], ":", 2)
			return len(q) == 2 && strings.Trim(q[1], "0") != ""
		}
	}
	return false
}

// TestUDPSamePortTwoAddresses: one client port talking to two addresses
// of a wildcard bind is two flows, each answered from its own address.
func TestUDPSamePortTwoAddresses(t *testing.T) {
	e := testEngine(t, Options{Loops: 1})
	ln := udpProxy(t, e, testPool(t, 1, "wrr", udpBackend(t, "")), func(c *ListenerConfig) {
		c.Bind = netip.MustParseAddrPort("0.0.0.0:0")
	})
	c := udpClient(t)
	for i := 0; i < 2; i++ {
		for _, target := range []string{"127.0.0.1", "127.0.0.2"} {
			to := netip.AddrPortFrom(netip.MustParseAddr(target), ln.Addr().Port())
			got, from, err := exchange(t, c, to, []byte(target))
			if err != nil || string(got) != target || from != to {
				t.Fatalf("to %v: %q from %v, %v", to, got, from, err)
			}
		}
	}
	if ln.Active() != 2 {
		t.Fatalf("%d flows, want 2", ln.Active())
	}
}
