package server

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/lbd-lb/lbd/internal/conftest"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/internal/nettest"
	"github.com/lbd-lb/lbd/pkg/admin"
	"github.com/lbd-lb/lbd/pkg/config"
)

// reloadFixture is a running server whose config file a test rewrites.
type reloadFixture struct {
	t    *testing.T
	file string
	s    *Server
}

func newReloadFixture(t *testing.T, text string) *reloadFixture {
	f := &reloadFixture{t: t, file: filepath.Join(t.TempDir(), "lbd.toml")}
	f.write(text)
	cfg, err := config.Load(f.file)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler), Load: func() (*config.Config, error) { return config.Load(f.file) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	f.s = s
	return f
}

func (f *reloadFixture) write(text string) {
	if err := os.WriteFile(f.file, []byte(text), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// openFDs counts the process's open descriptors: pipes apart, all the
// rest (sockets, files, epoll) together.
func openFDs(t *testing.T) (others, pipes int) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if strings.HasPrefix(target, "pipe:") {
			pipes++
		} else {
			others++
		}
	}
	return others, pipes
}

// TestReloadUnderLoad: short connections without pause and a long
// checksummed stream run while lbd is reloaded 50 times, with invalid
// configs, a changed pool and an added and removed listener among them.
// Not one connection may be refused or reset, the stream must arrive
// intact, every invalid reload must be reported, and nothing may leak.
func TestReloadUnderLoad(t *testing.T) {
	var backends []string
	for i := 0; i < 3; i++ {
		backends = append(backends, nettest.EchoTCP(t))
	}
	// Listeners bind ports the kernel chooses; the server reports them.
	sock := filepath.Join(t.TempDir(), "admin.sock")
	base := func(poolBackends []string, withExtra bool, algorithm string) string {
		cf := conftest.New(t).Global("workers", 2, "admin_socket", sock)
		cf.Listener("front", "pool", "p")
		if withExtra {
			cf.Listener("extra", "pool", "p")
		}
		p := cf.Pool("p", "algorithm", algorithm)
		for _, a := range poolBackends {
			p.Backend(a)
		}
		p.HealthCheck("type", "tcp", "interval", 100*time.Millisecond, "timeout", 50*time.Millisecond)
		return cf.String()
	}
	f := newReloadFixture(t, base(backends[:2], false, "wrr"))
	front := f.s.ListenerAddr("front")

	// Warm up, then take the baseline of descriptors and goroutines.
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	sockets0, _ := openFDs(t)
	gr0 := runtime.NumGoroutine()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var shorts, failures atomic.Int64
	var firstErr atomic.Value
	wg.Add(1)
	go func() { // short connections without pause
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", front, 2*time.Second)
			if err == nil {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				var buf [4]byte
				if _, err = c.Write([]byte("ping")); err == nil {
					_, err = io.ReadFull(c, buf[:])
				}
				c.Close()
			}
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err)
				continue
			}
			shorts.Add(1)
		}
	}()
	// The long stream: send a known sequence, compare the echo's hash.
	stream, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	stream.SetDeadline(time.Now().Add(2 * time.Minute))
	sent, got := sha256.New(), sha256.New()
	var streamed atomic.Int64
	readDone := make(chan error, 1)
	go func() {
		n, err := io.Copy(got, stream)
		streamed.Store(n)
		readDone <- err
	}()
	wg.Add(1)
	var total int64
	go func() {
		defer wg.Done()
		defer stream.(*net.TCPConn).CloseWrite()
		block := make([]byte, 32<<10)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for j := range block {
				block[j] = byte(i + j)
			}
			if _, err := stream.Write(block); err != nil {
				firstErr.CompareAndSwap(nil, fmt.Errorf("stream write: %w", err))
				return
			}
			sent.Write(block)
			total += int64(len(block))
		}
	}()

	invalid := 0
	for i := 0; i < 50; i++ {
		var text string
		wantFail := false
		switch i % 5 {
		case 0: // unchanged
			text = base(backends[:2], false, "wrr")
		case 1: // invalid
			text = base(backends[:2], false, "wrr") + "\nbogus_key = 1\n"
			wantFail = true
		case 2: // a changed pool
			text = base(backends[1:], false, "least_conn")
		case 3: // an added listener
			text = base(backends, true, "maglev")
		case 4: // that listener removed again, and a syntax error half the time
			text = base(backends[:2], false, "p2c")
			if i%10 == 4 {
				text = "[global\n"
				wantFail = true
			}
		}
		// Let traffic run between reloads: a few more short connections
		// each time.
		want := shorts.Load() + 3
		waitSettled(t, "short connections between reloads", func() bool { return shorts.Load() >= want || failures.Load() > 0 })
		f.write(text)
		rec, err := f.s.Reload()
		if wantFail {
			invalid++
			if err == nil || !errors.Is(err, admin.ErrReload) || rec.OK || rec.Error == "" {
				t.Fatalf("reload %d: invalid config accepted: %+v, %v", i, rec, err)
			}
			if !strings.Contains(rec.Error, f.file) {
				t.Fatalf("reload %d: error does not name the file: %s", i, rec.Error)
			}
		} else if err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		if i%5 == 3 {
			c, err := net.Dial("tcp", f.s.ListenerAddr("extra"))
			if err != nil {
				t.Fatalf("added listener not serving: %v", err)
			}
			c.Close()
		}
	}
	close(stop)
	wg.Wait()
	if err := <-readDone; err != nil {
		t.Fatalf("stream read: %v", err)
	}
	if failures.Load() != 0 {
		t.Fatalf("%d of %d short connections failed during reloads; first: %v", failures.Load(), shorts.Load()+failures.Load(), firstErr.Load())
	}
	if e := firstErr.Load(); e != nil {
		t.Fatal(e)
	}
	if streamed.Load() != total || string(sent.Sum(nil)) != string(got.Sum(nil)) {
		t.Fatalf("stream: sent %d bytes, got %d back, hash match %v", total, streamed.Load(), string(sent.Sum(nil)) == string(got.Sum(nil)))
	}
	st := f.s.Status()
	if st.LastReload == nil || !st.LastReload.OK {
		t.Fatalf("last reload: %+v", st.LastReload)
	}
	ok, failed := f.s.metricsReg.Counts()
	if int(failed) != invalid || int(ok) != 50-invalid {
		t.Fatalf("reload counters: %d failed, %d ok; want %d and %d", failed, ok, invalid, 50-invalid)
	}
	t.Logf("%d short connections and %d streamed bytes across 50 reloads", shorts.Load(), total)

	// No descriptor or goroutine growth once things settle. Pipes are
	// counted apart: each loop keeps up to MaxIdlePipes empty ones for
	// reuse, a bounded cache rather than a leak.
	stream.Close()
	waitSettled(t, "sockets back to baseline", func() bool { s, _ := openFDs(t); return s <= sockets0+1 })
	// A connection that is still closing holds its pipes until its loop
	// has returned them, so this too is waited for.
	waitSettled(t, "pipes within the loops' pools", func() bool { _, pipes := openFDs(t); return pipes <= 2*64*2 })
	waitSettled(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= gr0+3 })
}

// waitSettled polls a condition of the process that has no event to wait
// on (descriptors of closed connections, exiting goroutines).
func waitSettled(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			others, pipes := openFDs(t)
			t.Fatalf("%s: fds %d (+%d pipes), goroutines %d", what, others, pipes, runtime.NumGoroutine())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStateFileAcrossRestart: drain, disable and runtime weight set by an
// operator come back after a restart when state_file is set.
func TestStateFileAcrossRestart(t *testing.T) {
	cf := conftest.New(t)
	stateFile := filepath.Join(cf.Dir(), "state", "lbd.json")
	cf.Global("state_file", stateFile)
	cf.Listener("front", "pool", "p")
	pc := cf.Pool("p", "algorithm", "wrr")
	for _, name := range []string{"a", "b", "c"} {
		pc.Backend(nettest.EchoTCP(t), "name", name)
	}
	pc.HealthCheck("type", "none")
	text := cf.String()
	first := newReloadFixture(t, text)
	if err := first.s.Drain("p", "a"); err != nil {
		t.Fatal(err)
	}
	if err := first.s.Disable("p", "b"); err != nil {
		t.Fatal(err)
	}
	if err := first.s.SetWeight("p", "c", 77); err != nil {
		t.Fatal(err)
	}
	if err := first.s.SetWeight("p", "c", 0); !errors.Is(err, admin.ErrInvalid) {
		t.Fatalf("weight 0: %v", err)
	}
	first.s.Close()
	second := newReloadFixture(t, text)
	p, err := second.s.Pool("p")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]admin.Backend{}
	for _, b := range p.Backends {
		got[b.Name] = b
	}
	if got["a"].State != "draining" || got["b"].State != "disabled" || got["c"].State != "active" || got["c"].Weight != 77 {
		t.Fatalf("after restart: %+v", got)
	}
	if _, err := second.s.Pool("nope"); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("unknown pool: %v", err)
	}
	if _, err := second.s.Backend("p", "nope"); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("unknown backend: %v", err)
	}
}

// TestUDPListenerReloadAndMetrics: a udp listener from the config serves,
// keeps its socket and open flow across a reload that changes its pool,
// and shows in the lbd_udp_* metrics.
func TestUDPListenerReloadAndMetrics(t *testing.T) {
	a, b := nettest.EchoUDP(t, "a:"), nettest.EchoUDP(t, "b:")
	// The listener and the metrics endpoint bind ports the kernel chooses,
	// read back below.
	sock := filepath.Join(t.TempDir(), "admin.sock")
	conf := func(backend string) string {
		cf := conftest.New(t).Global("admin_socket", sock, "metrics_listen", conftest.AnyPort)
		cf.Listener("dns", "protocol", "udp", "pool", "p", "idle_timeout", time.Minute)
		p := cf.Pool("p", "algorithm", "maglev")
		p.Backend(backend)
		p.HealthCheck("type", "none")
		return cf.String()
	}
	f := newReloadFixture(t, conf(a))
	f.s.metricsReg.Loaded(time.Now(), false)
	dns, metricsAddr := f.s.ListenerAddr("dns"), f.s.MetricsAddr()
	c, err := net.Dial("udp", dns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func(conn net.Conn, q string) string {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write([]byte(q))
		buf := make([]byte, 100)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	if got := ask(c, "1"); got != "a:1" {
		t.Fatalf("got %q", got)
	}
	f.write(conf(b))
	if _, err := f.s.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := ask(c, "2"); got != "a:2" {
		t.Fatalf("open flow after reload: %q", got)
	}
	c2, _ := net.Dial("udp", dns)
	defer c2.Close()
	if got := ask(c2, "3"); got != "b:3" {
		t.Fatalf("new flow after reload: %q", got)
	}
	// A reply is counted just after it is sent: give the counter a moment.
	var text string
	nettest.Eventually(t, "the replies counted", func() bool {
		text = scrape(t, metricsAddr)
		return strings.Contains(text, `direction="to_client",listener="dns"} 3`)
	})
	for _, want := range []string{
		`lbd_udp_flows_active{listener="dns"} 2`,
		`lbd_udp_datagrams_total{direction="to_backend",listener="dns"} 3`,
		`lbd_udp_datagrams_total{direction="to_client",listener="dns"} 3`,
		`lbd_udp_dropped_total{listener="dns",reason="max_flows"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
