package l4

// The fault-injection suite runs lbd between a client and a backend that
// live in network namespaces of their own, joined to the test's namespace
// by veth pairs, and breaks the path between them: packet loss, a slow
// link, a backend that stalls, a backend that resets, a client that
// resets. Whatever the fault, it proves the same
// invariant:
//
//   - a transfer through lbd is byte-exact, or both ends see a reset; it
//     never ends in a FIN after a short body, which a peer would take for
//     the whole of it;
//   - once the connection is over, lbd holds no connection, and its
//     goroutines and file descriptors are back where they started.
//
// The suite needs root (to make namespaces and qdiscs) and is skipped
// without it. It sends traffic only to the addresses of the namespaces it
// makes, in 10.250.0.0/16, and removes them when it ends, failed or not.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbd-lb/lbd/internal/nettest"
)

// faultDeadline bounds every connection of the suite, at both ends.
const faultDeadline = 30 * time.Second

// faultNet is a client namespace and a backend namespace, each joined to
// the test's namespace by a veth pair on a /30 of its own. lbd listens on
// host's end of the client link and dials the backend's end of the other.
type faultNet struct {
	client, backend string // namespace names
	clientLink      string // host end of the client's veth
	clientPeer      string // the client namespace's end of it
	hostAddr        netip.Addr
	backendAddr     netip.Addr
	third           int // the /24 the suite uses is 10.250.third.0/24
}

// faultCmd executes an ip or tc command, failing the test on error.
func faultCmd(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// newFaultNet makes the namespaces and links, or skips the test when the
// machine will not let it.
func newFaultNet(t *testing.T) *faultNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the fault suite needs root for network namespaces")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the fault suite needs %s: %v", tool, err)
		}
	}
	pid := os.Getpid()
	// A /24 of 10.250.0.0/16 that nothing on the host uses yet: the client
	// link is its .0/30, the backend link its .4/30.
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		t.Skipf("ip addr: %v", err)
	}
	third := -1
	for i := range 200 {
		n := 20 + (pid+i)%200
		if !strings.Contains(string(out), fmt.Sprintf(" 10.250.%d.", n)) {
			third = n
			break
		}
	}
	if third < 0 {
		t.Skip("no free /24 in 10.250.0.0/16")
	}
	f := &faultNet{
		client:      fmt.Sprintf("lbdfault-c-%d", pid),
		backend:     fmt.Sprintf("lbdfault-b-%d", pid),
		clientLink:  fmt.Sprintf("lbfc%d", pid),
		clientPeer:  fmt.Sprintf("lbfc%dn", pid),
		hostAddr:    netip.AddrFrom4([4]byte{10, 250, byte(third), 1}),
		backendAddr: netip.AddrFrom4([4]byte{10, 250, byte(third), 6}),
		third:       third,
	}
	backendLink, backendPeer := fmt.Sprintf("lbfb%d", pid), fmt.Sprintf("lbfb%dn", pid)
	for _, ns := range []string{f.client, f.backend} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Skipf("ip netns add %s: %v\n%s", ns, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	}
	links := []struct {
		ns, host, peer   string
		hostCIDR, nsCIDR string
	}{
		{f.client, f.clientLink, f.clientPeer, fmt.Sprintf("10.250.%d.1/30", third), fmt.Sprintf("10.250.%d.2/30", third)},
		{f.backend, backendLink, backendPeer, fmt.Sprintf("10.250.%d.5/30", third), fmt.Sprintf("10.250.%d.6/30", third)},
	}
	for _, l := range links {
		faultCmd(t, "ip", "link", "add", l.host, "type", "veth", "peer", "name", l.peer)
		// Deleting either end deletes the pair; the namespace's end goes with
		// its namespace too, so this covers a setup cut short.
		t.Cleanup(func() { exec.Command("ip", "link", "delete", l.host).Run() })
		if l.ns == f.client {
			// One segment a packet, as on a wire: otherwise a loss drops a
			// whole GSO burst of up to 64 KiB at once.
			faultCmd(t, "ip", "link", "set", "dev", l.host, "gso_max_segs", "1")
			faultCmd(t, "ip", "link", "set", "dev", l.peer, "gso_max_segs", "1")
		}
		faultCmd(t, "ip", "link", "set", l.peer, "netns", l.ns)
		faultCmd(t, "ip", "addr", "add", l.hostCIDR, "dev", l.host)
		faultCmd(t, "ip", "link", "set", l.host, "up")
		faultCmd(t, "ip", "-n", l.ns, "addr", "add", l.nsCIDR, "dev", l.peer)
		faultCmd(t, "ip", "-n", l.ns, "link", "set", l.peer, "up")
		faultCmd(t, "ip", "-n", l.ns, "link", "set", "lo", "up")
	}
	for _, l := range links {
		nettest.Eventually(t, l.host+" up", func() bool {
			b, _ := os.ReadFile("/sys/class/net/" + l.host + "/operstate")
			return strings.TrimSpace(string(b)) == "up"
		})
	}
	return f
}

// impairment is what a test does to both directions of the client link.
// This kernel may lack sch_netem and the tc actions (no modules are
// loadable here), so it is built from what a minimal kernel has: loss from
// a classic BPF classifier in direct-action mode that drops a random
// share of IP packets (ld [random]; jgt; ret TC_ACT_SHOT), and a slow
// link from tbf, whose queue also adds delay.
type impairment struct {
	loss float64 // share of packets dropped, each way
	rate string  // tbf rate ("1mbit"), or none
}

func (i impairment) String() string {
	var s []string
	if i.loss > 0 {
		s = append(s, fmt.Sprintf("loss %g%%", 100*i.loss))
	}
	if i.rate != "" {
		s = append(s, "rate "+i.rate)
	}
	if s == nil {
		return "clean"
	}
	return strings.Join(s, ", ")
}

// impair applies i to both ends of the client link until the test ends.
func (f *faultNet) impair(t *testing.T, i impairment) {
	t.Helper()
	ends := []struct{ ns, dev string }{{"", f.clientLink}, {f.client, f.clientPeer}}
	tc := func(ns string, args ...string) []string {
		if ns == "" {
			return append([]string{"tc"}, args...)
		}
		return append([]string{"ip", "netns", "exec", ns, "tc"}, args...)
	}
	for _, end := range ends {
		if i.loss > 0 {
			// SKF_AD_OFF + SKF_AD_RANDOM = -4096 + 56.
			const ldRandom = uint32(0xfffff038)
			threshold := uint32((1 - i.loss) * (1 << 32))
			prog := fmt.Sprintf("4,32 0 0 %d,37 0 1 %d,6 0 0 2,6 0 0 0", ldRandom, threshold)
			a := tc(end.ns, "qdisc", "add", "dev", end.dev, "clsact")
			faultCmd(t, a[0], a[1:]...)
			t.Cleanup(func() {
				a := tc(end.ns, "qdisc", "del", "dev", end.dev, "clsact")
				exec.Command(a[0], a[1:]...).Run()
			})
			a = tc(end.ns, "filter", "add", "dev", end.dev, "egress", "protocol", "ip", "bpf", "da", "bytecode", prog)
			faultCmd(t, a[0], a[1:]...)
		}
		if i.rate != "" {
			a := tc(end.ns, "qdisc", "add", "dev", end.dev, "root", "tbf", "rate", i.rate, "burst", "32kbit", "latency", "400ms")
			faultCmd(t, a[0], a[1:]...)
			t.Cleanup(func() {
				a := tc(end.ns, "qdisc", "del", "dev", end.dev, "root")
				exec.Command(a[0], a[1:]...).Run()
			})
		}
	}
}

// dropped is how many packets the host's end of the client link has
// dropped on its way out (the loss filter's and tbf's).
func (f *faultNet) dropped(t *testing.T) int {
	out, err := exec.Command("tc", "-s", "qdisc", "show", "dev", f.clientLink).Output()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, fld := range strings.Split(string(out), "dropped ")[1:] {
		var n int
		fmt.Sscanf(fld, "%d", &n)
		total += n
	}
	return total
}

// inNetns runs fn on a thread moved into the named namespace. Sockets fn
// makes stay in that namespace for their whole life. fn runs on a
// goroutine of its own: should the thread fail to come back to the
// original namespace, it dies with that goroutine instead of serving
// others.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		ns, err := os.Open("/var/run/netns/" + name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Left locked: the thread exits with the goroutine.
			errc <- fmt.Errorf("setns back from %s: %w", name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// serve listens on addr inside the backend namespace and serves each
// connection with handle in its own goroutine, which the test waits for.
func (f *faultNet) serve(t *testing.T, handle func(*net.TCPConn)) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	err := inNetns(f.backend, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(f.backendAddr, 0).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(faultDeadline))
				handle(c.(*net.TCPConn))
			})
		}
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// dial connects to lbd from inside the client namespace.
func (f *faultNet) dial(t *testing.T, to netip.AddrPort) *net.TCPConn {
	t.Helper()
	return dialFrom(t, f.client, to)
}

// dialFrom connects to lbd from inside the named namespace.
func dialFrom(t *testing.T, ns string, to netip.AddrPort) *net.TCPConn {
	t.Helper()
	var c net.Conn
	err := inNetns(ns, func() (err error) {
		c, err = net.DialTimeout("tcp", to.String(), 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(faultDeadline))
	return c.(*net.TCPConn)
}

// proxy starts an engine listening on the host's end of the client link,
// forwarding to the backend handle serves, and returns its address.
func (f *faultNet) proxy(t *testing.T, handle func(*net.TCPConn)) (*Engine, netip.AddrPort) {
	t.Helper()
	return f.proxyOn(t, f.hostAddr, f.serve(t, handle))
}

// proxyOn starts an engine listening on bind, forwarding to be.
func (f *faultNet) proxyOn(t *testing.T, bind netip.Addr, be netip.AddrPort) (*Engine, netip.AddrPort) {
	t.Helper()
	e := testEngine(t, Options{})
	ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", be), func(c *ListenerConfig) {
		c.Bind = netip.AddrPortFrom(bind, 0)
	})
	return e, ln.Addr()
}

// openFDs counts the process's open file descriptors.
func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// pooledFDs counts the fds of the empty pipes the engine's loops keep for
// reuse: held by design, not leaked.
func pooledFDs(e *Engine) int {
	n := 0
	for _, l := range e.loops {
		done := make(chan int)
		l.exec(func() { done <- 2 * len(l.pipes.free) })
		n += <-done
	}
	return n
}

// engineFDs counts the process's open fds less those of pooled pipes.
func engineFDs(t testing.TB, e *Engine) int { return openFDs(t) - pooledFDs(e) }

// baseline records goroutines and fds now; the function it returns waits
// until the engine holds no connection, the fds are back where they were
// (less pooled pipes), and the goroutines within a small tolerance (the
// runtime's own come and go).
func baseline(t *testing.T, e *Engine) func() {
	const slack = 2
	g0, fd0 := runtime.NumGoroutine(), engineFDs(t, e)
	return func() {
		t.Helper()
		nettest.Eventually(t, "no active connection", func() bool { return e.Active() == 0 })
		deadline := time.Now().Add(10 * time.Second)
		for {
			g, fd := runtime.NumGoroutine(), engineFDs(t, e)
			if g <= g0+slack && fd <= fd0 {
				t.Logf("goroutines %d → %d, fds %d → %d", g0, g, fd0, fd)
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				links, _ := exec.Command("ls", "-l", fmt.Sprintf("/proc/%d/fd/", os.Getpid())).Output()
				t.Fatalf("leak: goroutines %d → %d, fds %d → %d\n%s\n%s", g0, g, fd0, fd, links, buf)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// verify reads r to its end, checking it against the stream seed makes,
// and returns how many bytes matched and how r ended (nil for EOF). A
// byte that differs ends it with an error.
func verify(r io.Reader, seed byte) (int64, error) {
	ref := newStream(seed, 1<<62)
	buf, exp := make([]byte, 32<<10), make([]byte, 32<<10)
	var got int64
	for {
		n, err := r.Read(buf)
		io.ReadFull(ref, exp[:n])
		for i := range n {
			if buf[i] != exp[i] {
				return got + int64(i), fmt.Errorf("corrupt byte at offset %d", got+int64(i))
			}
		}
		got += int64(n)
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
	}
}

// pausing passes reads and writes through to a connection, stopping once
// for pause when at bytes have gone by: a peer that goes quiet mid-stream
// (a process stopped and resumed, a garbage collection) and then goes on.
type pausing struct {
	at    int64
	pause time.Duration
	done  int64
}

func (p *pausing) step(n int) {
	before := p.done
	p.done += int64(n)
	if p.pause > 0 && before < p.at && p.done >= p.at {
		time.Sleep(p.pause) // the fault itself, not synchronisation
	}
}

// pausedCopy copies src to dst in chunks, pausing as p says.
func pausedCopy(dst io.Writer, src io.Reader, p *pausing) (int64, error) {
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return p.done, werr
			}
			p.step(n)
		}
		if err == io.EOF {
			return p.done, nil
		}
		if err != nil {
			return p.done, err
		}
	}
}

type pausedReader struct {
	r io.Reader
	p *pausing
}

func (r pausedReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.p.step(n)
	return n, err
}

// transfer is a transfer both ways at once: the client sends up bytes of
// stream 1 and its FIN, the backend down bytes of stream 2 and its FIN,
// and each reads the other's to the end. With pause set, the backend
// stalls once halfway through each direction.
type transfer struct {
	up, down int64
	pause    time.Duration
}

type received struct {
	n   int64
	err error // how the stream ended; nil for a FIN
}

// check fails the test unless r is the whole of a size byte stream ended
// by a FIN, and names a truncation ended by a FIN for what it is.
func (r received) check(t *testing.T, who string, size int64) {
	t.Helper()
	switch {
	case r.err == nil && r.n < size:
		t.Errorf("%s: TRUNCATED: %d of %d bytes, then a FIN", who, r.n, size)
	case r.err != nil || r.n != size:
		t.Errorf("%s: %d of %d bytes, ended by %v", who, r.n, size, r.err)
	}
}

func (x transfer) backend(res chan<- [2]received) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		wrote := make(chan received, 1)
		go func() {
			n, err := pausedCopy(c, newStream(2, x.down), &pausing{at: x.down / 2, pause: x.pause})
			if err == nil {
				err = c.CloseWrite()
			}
			wrote <- received{n, err}
		}()
		n, err := verify(pausedReader{c, &pausing{at: x.up / 2, pause: x.pause}}, 1)
		res <- [2]received{{n, err}, <-wrote}
	}
}

func (x transfer) client(c *net.TCPConn) (got, sent received) {
	wrote := make(chan received, 1)
	go func() {
		n, err := io.Copy(c, newStream(1, x.up))
		if err == nil {
			err = c.CloseWrite()
		}
		wrote <- received{n, err}
	}()
	n, err := verify(c, 2)
	return received{n, err}, <-wrote
}

// TestFaultExchange: over a lossy, reordering link, a slow link, and to a
// backend that stalls mid-stream, both directions of a transfer arrive
// byte-exact and end in a FIN, and lbd lets go of everything afterwards.
func TestFaultExchange(t *testing.T) {
	f := newFaultNet(t)
	for _, tc := range []struct {
		name string
		imp  impairment
		x    transfer
	}{
		{"lossy", impairment{loss: 0.02, rate: "100mbit"}, transfer{up: 2 << 20, down: 2 << 20}},
		{"slow-link", impairment{rate: "1mbit"}, transfer{down: 256 << 10}},
		{"backend-stalls", impairment{}, transfer{up: 1 << 20, down: 1 << 20, pause: 1500 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.impair(t, tc.imp)
			res := make(chan [2]received, 1)
			e, addr := f.proxy(t, tc.x.backend(res))
			settled := baseline(t, e)
			start := time.Now()
			c := f.dial(t, addr)
			got, sent := tc.x.client(c)
			got.check(t, "client", tc.x.down)
			if sent.err != nil {
				t.Errorf("client: sending: %v", sent.err)
			}
			select {
			case r := <-res:
				r[0].check(t, "backend", tc.x.up)
				if r[1].err != nil {
					t.Errorf("backend: sending: %v", r[1].err)
				}
			case <-time.After(faultDeadline):
				t.Fatal("the backend never finished")
			}
			t.Logf("%d bytes up, %d down in %v over a %v link (%d packets dropped towards the client)",
				tc.x.up, tc.x.down, time.Since(start).Round(time.Millisecond), tc.imp, f.dropped(t))
			if tc.imp.loss > 0 && f.dropped(t) == 0 {
				t.Error("the lossy link dropped nothing")
			}
			c.Close()
			settled()
		})
	}
}

// isReset reports whether err is a connection reset.
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// TestFaultBackendReset: a backend that resets mid-response reaches the
// client as a reset. A client that read a short body and then a FIN would
// take it for the whole response; whatever the client did read is a true
// prefix of what the backend sent.
func TestFaultBackendReset(t *testing.T) {
	f := newFaultNet(t)
	for _, tc := range []struct {
		name string
		imp  impairment
		sent int64 // written by the backend before its reset
	}{
		{"clean-link", impairment{}, 512 << 10},
		// A slow client link keeps much of the response queued in lbd when
		// the reset arrives: lbd must not flush it and send a FIN.
		{"slow-link", impairment{rate: "20mbit"}, 512 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.impair(t, tc.imp)
			e, addr := f.proxy(t, func(c *net.TCPConn) {
				// The response follows a request, so the client is past
				// connect(2) when the reset comes.
				if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
					return
				}
				if _, err := io.Copy(c, newStream(2, tc.sent)); err != nil {
					return
				}
				c.SetLinger(0)
				c.Close() // a reset, with part of the response on its way
			})
			settled := baseline(t, e)
			c := f.dial(t, addr)
			if _, err := c.Write([]byte{'?'}); err != nil {
				t.Fatal(err)
			}
			n, err := verify(c, 2)
			switch {
			case err == nil:
				t.Errorf("client: read %d of the %d bytes sent, then a FIN; want a reset", n, tc.sent)
			case !isReset(err):
				t.Errorf("client: read %d bytes, ended by %v; want a reset", n, err)
			default:
				t.Logf("client: read %d of %d bytes, then a reset", n, tc.sent)
			}
			c.Close()
			settled()
		})
	}
}

// TestFaultClientReset: a client that resets mid-upload reaches the
// backend as a reset, never as a FIN that would end a short upload as if
// it were complete.
func TestFaultClientReset(t *testing.T) {
	f := newFaultNet(t)
	for _, tc := range []struct {
		name string
		imp  impairment
		sent int64 // written by the client before its reset
	}{
		{"clean-link", impairment{}, 512 << 10},
		{"slow-link", impairment{rate: "20mbit"}, 512 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.impair(t, tc.imp)
			type result struct {
				n   int64
				err error
			}
			res := make(chan result, 1)
			e, addr := f.proxy(t, func(c *net.TCPConn) {
				// A greeting, so the client knows the whole path is up
				// before it resets.
				if _, err := c.Write([]byte{'!'}); err != nil {
					res <- result{0, err}
					return
				}
				n, err := verify(c, 1)
				res <- result{n, err}
			})
			settled := baseline(t, e)
			c := f.dial(t, addr)
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				t.Fatalf("no greeting: %v", err)
			}
			if _, err := io.Copy(c, newStream(1, tc.sent)); err != nil {
				t.Fatalf("upload: %v", err)
			}
			c.SetLinger(0)
			c.Close() // a reset, with part of the upload on its way
			select {
			case r := <-res:
				switch {
				case r.err == nil:
					t.Errorf("backend: read %d of the %d bytes sent, then a FIN; want a reset", r.n, tc.sent)
				case !isReset(r.err):
					t.Errorf("backend: read %d bytes, ended by %v; want a reset", r.n, r.err)
				default:
					t.Logf("backend: read %d of %d bytes, then a reset", r.n, tc.sent)
				}
			case <-time.After(faultDeadline):
				t.Fatal("the backend never heard of the reset")
			}
			settled()
		})
	}
}
