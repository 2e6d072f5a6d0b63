package l4

// Two more faults for the suite of faultnet_test.go: a path that delays
// and reorders packets, and a backend process stopped with SIGSTOP and
// resumed.
//
// This kernel has no sch_netem, so the delay line is the test's own: a
// client namespace whose only link to the test's namespace is a pair of
// TUN devices, one at each end, and a goroutine per direction that reads
// each IP packet from one device and writes it to the other after
// delay ± jitter. Packets whose delays cross overtake one another, which
// is reordering as a real path makes it; loss drops a random share.

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// wire is a client namespace joined to the test's namespace by a delay
// line.
type wire struct {
	ns           string     // the client's namespace
	host, client netip.Addr // the test's end, where lbd listens, and the client's
	delay        time.Duration
	jitter       time.Duration // each packet's delay is delay ± jitter
	loss         float64

	mu                          sync.Mutex
	carried, reordered, dropped int
}

// openTun makes a TUN device carrying bare IP packets in the calling
// thread's namespace. It lives as long as the file.
func openTun(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	// Non-blocking, so the runtime's poller serves it and Close ends a
	// Read in progress.
	return os.NewFile(uintptr(fd), name), nil
}

// newWire makes the delay line's namespace and devices, on 10.250.third.8/30,
// and carries packets until the test ends.
func (f *faultNet) newWire(t *testing.T, delay, jitter time.Duration, loss float64) *wire {
	t.Helper()
	pid := os.Getpid()
	w := &wire{
		ns:     fmt.Sprintf("lbdfault-w-%d", pid),
		host:   netip.AddrFrom4([4]byte{10, 250, byte(f.third), 9}),
		client: netip.AddrFrom4([4]byte{10, 250, byte(f.third), 10}),
		delay:  delay, jitter: jitter, loss: loss,
	}
	if out, err := exec.Command("ip", "netns", "add", w.ns).CombinedOutput(); err != nil {
		t.Skipf("ip netns add %s: %v\n%s", w.ns, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", w.ns).Run() })
	hostDev, clientDev := fmt.Sprintf("lbfw%d", pid), fmt.Sprintf("lbfw%dn", pid)
	hf, err := openTun(hostDev)
	if err != nil {
		t.Skipf("no TUN device: %v", err)
	}
	var cf *os.File
	if err := inNetns(w.ns, func() (err error) { cf, err = openTun(clientDev); return err }); err != nil {
		hf.Close()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { hf.Close(); cf.Close(); wg.Wait() })
	faultCmd(t, "ip", "addr", "add", w.host.String(), "peer", w.client.String(), "dev", hostDev)
	faultCmd(t, "ip", "link", "set", hostDev, "up")
	faultCmd(t, "ip", "-n", w.ns, "addr", "add", w.client.String(), "peer", w.host.String(), "dev", clientDev)
	faultCmd(t, "ip", "-n", w.ns, "link", "set", clientDev, "up")
	faultCmd(t, "ip", "-n", w.ns, "link", "set", "lo", "up")
	wg.Go(func() { w.carry(hf, cf) })
	wg.Go(func() { w.carry(cf, hf) })
	return w
}

// carry passes packets from one device to the other until either closes,
// each after its own delay.
func (w *wire) carry(from, to *os.File) {
	var seq, high uint64 // packets read; the latest, by read order, written
	for {
		b := make([]byte, 2048)
		n, err := from.Read(b)
		if err != nil {
			return
		}
		seq++
		if rand.Float64() < w.loss {
			w.mu.Lock()
			w.dropped++
			w.mu.Unlock()
			continue
		}
		d := w.delay + time.Duration((2*rand.Float64()-1)*float64(w.jitter))
		s := seq
		time.AfterFunc(d, func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.carried++
			if s < high {
				w.reordered++
			} else {
				high = s
			}
			to.Write(b[:n]) // fails once the line is closed: a lost packet
		})
	}
}

func (w *wire) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("%d packets carried, %d of them out of order, %d dropped", w.carried, w.reordered, w.dropped)
}

// TestFaultDelayReorder: over a path with 40 ms ± 30 ms of delay each way,
// so that packets overtake one another, and 1% loss, a transfer both ways
// arrives byte-exact and ends in FINs, and lbd lets go of everything
// afterwards.
func TestFaultDelayReorder(t *testing.T) {
	f := newFaultNet(t)
	w := f.newWire(t, 40*time.Millisecond, 30*time.Millisecond, 0.01)
	x := transfer{up: 1 << 20, down: 1 << 20}
	res := make(chan [2]received, 1)
	e, addr := f.proxyOn(t, w.host, f.serve(t, x.backend(res)))
	settled := baseline(t, e)
	start := time.Now()
	c := dialFrom(t, w.ns, addr)
	got, sent := x.client(c)
	got.check(t, "client", x.down)
	if sent.err != nil {
		t.Errorf("client: sending: %v", sent.err)
	}
	select {
	case r := <-res:
		r[0].check(t, "backend", x.up)
		if r[1].err != nil {
			t.Errorf("backend: sending: %v", r[1].err)
		}
	case <-time.After(faultDeadline):
		t.Fatal("the backend never finished")
	}
	t.Logf("%d bytes each way in %v: %v", x.up, time.Since(start).Round(time.Millisecond), w)
	w.mu.Lock()
	reordered, dropped := w.reordered, w.dropped
	w.mu.Unlock()
	if reordered == 0 || dropped == 0 {
		t.Errorf("the path neither reordered nor dropped enough to test anything: %v", w)
	}
	c.Close()
	settled()
}

const stopChildEnv = "LBD_L4_FAULT_STOP_CHILD"

// TestFaultStoppedBackendChild is the backend process of
// TestFaultStoppedBackend, run in the backend's namespace: it serves one
// transfer (stream 2 down, stream 1 up, as transfer.backend does) and
// reports what it received.
func TestFaultStoppedBackendChild(t *testing.T) {
	spec := os.Getenv(stopChildEnv)
	if spec == "" {
		t.Skip("helper process for TestFaultStoppedBackend")
	}
	var bind string
	var x transfer
	if _, err := fmt.Sscanf(spec, "%s %d %d", &bind, &x.up, &x.down); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ADDR %s\n", ln.Addr())
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(faultDeadline))
	res := make(chan [2]received, 1)
	x.backend(res)(c.(*net.TCPConn))
	r := <-res
	fmt.Printf("RESULT %d %v %d %v\n", r[0].n, r[0].err, r[1].n, r[1].err)
}

// notifyAt passes reads through, calling at once when n bytes have gone by.
type notifyAt struct {
	r    io.Reader
	n    int64
	done int64
	at   func()
}

func (r *notifyAt) Read(b []byte) (int, error) {
	k, err := r.r.Read(b)
	before := r.done
	r.done += int64(k)
	if before < r.n && r.done >= r.n {
		r.at()
	}
	return k, err
}

// TestFaultStoppedBackend: a backend process stopped with SIGSTOP in the
// middle of a transfer both ways and resumed 2 s later finishes it
// byte-exact through lbd, ended by FINs both ways.
func TestFaultStoppedBackend(t *testing.T) {
	f := newFaultNet(t)
	// A slow client link, so most of the download is still to come when
	// the backend stops.
	f.impair(t, impairment{rate: "20mbit"})
	x := transfer{up: 4 << 20, down: 4 << 20}
	cmd := exec.Command("ip", "netns", "exec", f.backend, os.Args[0], "-test.run=^TestFaultStoppedBackendChild$", "-test.v")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d", stopChildEnv, netip.AddrPortFrom(f.backendAddr, 0), x.up, x.down))
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	var be netip.AddrPort
	for lines.Scan() {
		if a, ok := strings.CutPrefix(lines.Text(), "ADDR "); ok {
			be = netip.MustParseAddrPort(a)
			break
		}
	}
	if !be.IsValid() {
		t.Fatal("the backend process did not start")
	}
	e, addr := f.proxyOn(t, f.hostAddr, be)
	settled := baseline(t, e)
	c := f.dial(t, addr)
	stopped := make(chan struct{})
	resumed := make(chan error, 1)
	r := &notifyAt{r: c, n: 512 << 10, at: func() {
		if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			resumed <- err
			return
		}
		close(stopped)
		go func() {
			time.Sleep(2 * time.Second) // the fault itself, not synchronisation
			resumed <- cmd.Process.Signal(syscall.SIGCONT)
		}()
	}}
	wrote := make(chan received, 1)
	go func() {
		n, err := io.Copy(c, newStream(1, x.up))
		if err == nil {
			err = c.CloseWrite()
		}
		wrote <- received{n, err}
	}()
	n, err := verify(r, 2)
	received{n, err}.check(t, "client", x.down)
	if s := <-wrote; s.err != nil {
		t.Errorf("client: sending: %v", s.err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("the backend was never stopped")
	}
	if err := <-resumed; err != nil {
		t.Fatal(err)
	}
	var result string
	for lines.Scan() {
		if s, ok := strings.CutPrefix(lines.Text(), "RESULT "); ok {
			result = s
			break
		}
	}
	fs := strings.Fields(result)
	if len(fs) != 4 {
		t.Fatalf("the backend process reported %q", result)
	}
	up, _ := strconv.ParseInt(fs[0], 10, 64)
	down, _ := strconv.ParseInt(fs[2], 10, 64)
	if up != x.up || fs[1] != "<nil>" || down != x.down || fs[3] != "<nil>" {
		t.Errorf("backend: received %d of %d bytes (%s), sent %d of %d (%s)", up, x.up, fs[1], down, x.down, fs[3])
	}
	c.Close()
	settled()
}
