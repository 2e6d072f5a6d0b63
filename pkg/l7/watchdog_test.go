package l7

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// cutConn records the deadlines the watchdog sets.
type cutConn struct {
	net.Conn
	rd, wd time.Time
	closed bool
}

func (c *cutConn) Close() error { c.closed = true; return nil }
func (c *cutConn) SetDeadline(t time.Time) error {
	c.rd, c.wd = t, t
	return nil
}

func (c *cutConn) SetReadDeadline(t time.Time) error  { c.rd = t; return nil }
func (c *cutConn) SetWriteDeadline(t time.Time) error { c.wd = t; return nil }

// TestWatchdogCheck drives the watchdog's clock by hand: a phase entered
// gets its start from the watchdog's first look at it, and in every phase a
// connection is cut only once past its timeout from its true start (never
// early), at most two ticks late; the cut hits the read or the write as the
// phase says, and a connection still open a write timeout after its cut is
// closed.
func TestWatchdogCheck(t *testing.T) {
	const ms = int64(time.Millisecond)
	w := newWatchdog(100*time.Millisecond, 400*time.Millisecond, 200*time.Millisecond, 300*time.Millisecond, 500*time.Millisecond)
	// check is one look by the watchdog, closing what it reports, as run does.
	check := func(c *timed, now int64) {
		if w.check(c, now) {
			c.conn.Close()
		}
	}
	if w.tick != 100*ms/16 {
		t.Fatalf("tick %v", time.Duration(w.tick))
	}
	for _, tc := range []struct {
		name    string
		ph      uint64
		timeout int64
		write   bool
		closes  bool // cut by closing
	}{
		{"new", phNew, 100 * ms, false, false},
		{"header", phHeader, 100 * ms, false, false},
		{"idle", phIdle, 400 * ms, false, false},
		{"write", phWrite, 200 * ms, true, false},
		{"backend read", phRead, 300 * ms, false, false},
		{"tunnel", phTunnel, 500 * ms, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The phase is entered at true time 1000 ms plus an offset
			// within the tick before the watchdog's first look.
			for _, off := range []int64{0, w.tick / 3, w.tick - 1} {
				fc := &cutConn{}
				c := &timed{conn: fc}
				c.enter(tc.ph)
				entered := 1000*ms - off
				firstCut := int64(-1)
				for now := 1000 * ms; now < 1000*ms+tc.timeout+4*w.tick; now += w.tick {
					check(c, now)
					if c.state.Load()&phMask == phCut {
						firstCut = now
						break
					}
				}
				if firstCut < 0 {
					t.Fatal("never cut")
				}
				if el := firstCut - entered; el <= tc.timeout || el > tc.timeout+2*w.tick {
					t.Fatalf("cut %v after the phase began, timeout %v, tick %v", time.Duration(el), time.Duration(tc.timeout), time.Duration(w.tick))
				}
				// A write is cut both ways, so that one that ends just as
				// it is cut still cannot wait for the next request
				// unbounded; a read only on its side, so that the 408 can
				// go out.
				if tc.closes {
					if !fc.closed || !fc.rd.IsZero() || !fc.wd.IsZero() {
						t.Fatalf("closed %v, read deadline %v, write deadline %v", fc.closed, fc.rd, fc.wd)
					}
					continue
				}
				if fc.rd.IsZero() || fc.rd.After(time.Now()) || tc.write == fc.wd.IsZero() {
					t.Fatalf("read deadline %v, write deadline %v", fc.rd, fc.wd)
				}
				check(c, firstCut+w.write)
				if fc.closed {
					t.Fatal("closed too soon after the cut")
				}
				check(c, firstCut+w.write+1)
				if !fc.closed {
					t.Fatal("not closed a write timeout after the cut")
				}
			}
		})
	}
	t.Run("body", func(t *testing.T) {
		fc := &cutConn{}
		sc := &serverConn{Conn: fc, w: w}
		sc.timed.conn = fc
		deadline := clockBase.Add(5 * time.Second)
		sc.SetReadDeadline(deadline)
		check(&sc.timed, int64(5*time.Second))
		if !fc.rd.IsZero() {
			t.Fatal("cut at its deadline")
		}
		check(&sc.timed, int64(5*time.Second)+1)
		if fc.rd.IsZero() {
			t.Fatal("not cut past its deadline")
		}
	})
	t.Run("unbounded", func(t *testing.T) {
		for _, ph := range []uint64{phBusy} {
			fc := &cutConn{}
			c := &timed{conn: fc}
			c.enter(ph)
			for now := int64(1); now < 1<<50; now *= 2 {
				check(c, now)
			}
			if !fc.rd.IsZero() || !fc.wd.IsZero() || c.state.Load()&phMask != ph {
				t.Fatalf("phase %d cut", ph)
			}
		}
	})
	t.Run("moved on", func(t *testing.T) {
		// A connection that leaves its phase after the watchdog filled in
		// its start still leaves it; one the watchdog cut stays cut.
		c := &timed{conn: &cutConn{}}
		c.enter(phWrite)
		check(c, 10*ms)
		c.leave(phWrite, phBusy)
		if c.state.Load() != phBusy {
			t.Fatalf("state %x after leaving a write", c.state.Load())
		}
		c.enter(phWrite)
		check(c, 10*ms)
		check(c, 10*ms+w.write+1)
		c.leave(phWrite, phBusy)
		if c.state.Load()&phMask != phCut {
			t.Fatal("a cut connection left its cut")
		}
	})
}

// TestIdleTimeout: a keep-alive connection is closed after idle_timeout with
// no request, and a second request that starts but never finishes its
// header is cut at header_timeout from its first byte.
func TestIdleTimeout(t *testing.T) {
	b := newBackend(t, echoHandler)
	header, idle := 150*time.Millisecond, 600*time.Millisecond
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", b.addr)), HeaderTimeout: header, IdleTimeout: idle})

	exchange := func(t *testing.T) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatal(resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		return c, br
	}

	t.Run("idle", func(t *testing.T) {
		c, br := exchange(t)
		start := time.Now()
		// Past the header timeout with nothing sent: still open.
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("read %v, want the server's close", err)
		}
		if el := time.Since(start); el < idle || el > idle+2*time.Second {
			t.Fatalf("closed after %v idle, idle timeout %v", el, idle)
		}
		c.Close()
	})
	t.Run("slow second header", func(t *testing.T) {
		c, br := exchange(t)
		start := time.Now()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
		resp, err := http.ReadResponse(br, nil)
		el := time.Since(start)
		if err == nil && resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("answer %d to a header that never ended", resp.StatusCode)
		}
		if el < header || el > header+2*time.Second || el > idle {
			t.Fatalf("cut after %v, header timeout %v", el, header)
		}
	})
	if n := b.requests.Load(); n != 2 {
		t.Fatalf("backend saw %d requests, want 2", n)
	}
}

// TestWriteTimeout: a client that stops reading a large answer is cut at
// write_timeout, and the listener goes on serving others.
func TestWriteTimeout(t *testing.T) {
	big := strings.Repeat("x", 16<<20)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) })
	write := 300 * time.Millisecond
	s, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", b.addr)), WriteTimeout: write})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	// Not reading: the server's write stalls, and is cut.
	deadline := time.Now().Add(10 * time.Second)
	for s.OpenConnections() != 0 || b.requests.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", s.OpenConnections())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp, _ := get(t, &http.Client{Timeout: 5 * time.Second}, "http://"+addr+"/", nil); resp.StatusCode != 200 {
		t.Fatalf("next client: %d", resp.StatusCode)
	}
}

// TestTunnelOutlivesTimeouts: an upgraded connection is left alone by the
// header, idle and write timeouts.
func TestTunnelOutlivesTimeouts(t *testing.T) {
	b := newBackend(t, wsEchoHandler)
	header, idle := 50*time.Millisecond, 100*time.Millisecond
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", b.addr)), HeaderTimeout: header, IdleTimeout: idle, WriteTimeout: idle})
	c, br, resp := wsDial(t, addr, "Upgrade")
	if resp.StatusCode != 101 {
		t.Fatal(resp.Status)
	}
	for _, msg := range []string{"one", "two"} {
		// Silent for longer than every timeout.
		time.Sleep(3 * idle)
		c.Write(wsFrame(msg))
		var hdr [2]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			t.Fatalf("tunnel closed: %v", err)
		}
		got := make([]byte, hdr[1]&0x7f)
		io.ReadFull(br, got)
		if string(got) != msg {
			t.Fatalf("echo %q, want %q", got, msg)
		}
	}
}

// TestBackendTimeouts: a backend that never answers is cut at read_timeout
// and one that stops reading a request body at write_timeout; each costs
// the client a 502, not a hang.
func TestBackendTimeouts(t *testing.T) {
	read, write := 300*time.Millisecond, 300*time.Millisecond
	t.Run("read", func(t *testing.T) {
		ln := listenRaw(t, func(c rawConn) {
			c.Read(make([]byte, 4096))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			c.Read(make([]byte, 1)) // until lbd gives up
		})
		_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", ln)), ReadTimeout: read})
		start := time.Now()
		resp, _ := get(t, &http.Client{Timeout: 10 * time.Second}, "http://"+addr+"/", nil)
		if el := time.Since(start); resp.StatusCode != 502 || el < read || el > read+2*time.Second {
			t.Fatalf("%d after %v, read timeout %v", resp.StatusCode, el, read)
		}
	})
	t.Run("write", func(t *testing.T) {
		done := make(chan struct{})
		ln := listenRaw(t, func(c rawConn) {
			c.SetReadBuffer(4 << 10)
			c.Read(make([]byte, 1024)) // then reads no more
			select {
			case <-done:
			case <-time.After(10 * time.Second):
			}
		})
		defer close(done)
		body := strings.Repeat("b", 32<<20)
		_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", ln)), WriteTimeout: write, MaxBodyBytes: len(body)})
		start := time.Now()
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Post("http://"+addr+"/", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if el := time.Since(start); resp.StatusCode != 502 || el > write+3*time.Second {
			t.Fatalf("%d after %v, write timeout %v", resp.StatusCode, el, write)
		}
	})
}

// TestTunnelTimeout: an upgraded connection that carries bytes either way
// within tunnel_timeout stays open; once silent for longer it is closed on
// both sides.
func TestTunnelTimeout(t *testing.T) {
	b := newBackend(t, wsEchoHandler)
	p := testPool(t, "wrr", b.addr)
	tunnel := 400 * time.Millisecond
	_, addr := startServer(t, Config{Routes: simpleRoutes(p), TunnelTimeout: tunnel})
	c, br, resp := wsDial(t, addr, "Upgrade")
	if resp.StatusCode != 101 {
		t.Fatal(resp.Status)
	}
	// Traffic every quarter of the timeout, for twice the timeout.
	for i := range 8 {
		time.Sleep(tunnel / 4)
		msg := fmt.Sprintf("m%d", i)
		c.Write(wsFrame(msg))
		var hdr [2]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			t.Fatalf("message %d: tunnel closed while in use: %v", i, err)
		}
		got := make([]byte, hdr[1]&0x7f)
		io.ReadFull(br, got)
		if string(got) != msg {
			t.Fatalf("echo %q, want %q", got, msg)
		}
	}
	// Then silence: closed after the timeout.
	start := time.Now()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("a byte from a silent tunnel")
	}
	if el := time.Since(start); el < tunnel || el > tunnel+2*time.Second {
		t.Fatalf("closed after %v of silence, tunnel timeout %v", el, tunnel)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Backends()[0].Active.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the backend side of the tunnel is still open")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hookConn runs afterRead once, after the first Read that returns data.
type hookConn struct {
	net.Conn
	afterRead func()
}

func (h *hookConn) Read(p []byte) (int, error) {
	n, err := h.Conn.Read(p)
	if f := h.afterRead; f != nil && n > 0 {
		h.afterRead = nil
		f()
	}
	return n, err
}

// TestBackendCutAsAnswerCame: the watchdog cuts a backend read just as the
// answer comes in. That answer stands, and the connection, its read
// deadline now in the past, is not used for the next request, which is
// answered on another: no 502 for a request that did nothing wrong.
func TestBackendCutAsAnswerCame(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	p := testPool(t, "wrr", b.addr)
	s, addr := startServer(t, Config{Routes: simpleRoutes(p)})
	hc := s.client(p.Backends()[0], s.state.Load())
	first := true
	hc.Dial = func(a string) (net.Conn, error) {
		raw, err := net.Dial("tcp", a)
		if err != nil {
			return nil, err
		}
		h := &hookConn{Conn: raw}
		bc := newBackendConn(h, s.watch).(*backendConn)
		if first {
			first = false
			h.afterRead = func() { // the answer is in; Read is still in phRead
				now := int64(monotonic())
				s.watch.check(&bc.timed, now)                // fills in the start
				s.watch.check(&bc.timed, now+s.watch.read+1) // cuts
			}
		}
		return bc, nil
	}
	// POST: not idempotent, so only a request known not to have been sent
	// may go again.
	for i := 1; i <= 2; i++ {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Post("http://"+addr+"/", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := b.requests.Load(); n != 2 {
		t.Fatalf("the backend saw %d requests, want 2", n)
	}
}

// TestShutdownClosesWhatIsLeft: Shutdown lets an event stream and a tunnel
// go on until its context ends, then closes them.
func TestShutdownClosesWhatIsLeft(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	events := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			wsEchoHandler(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; ; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	s, addr, _ := serveUnmanaged(t, Config{Routes: simpleRoutes(testPool(t, "wrr", events.addr))})

	resp := getEventStream(t, addr)
	ws, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(ws, "GET /chat HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	wsr := bufio.NewReader(ws)
	if r, err := http.ReadResponse(wsr, nil); err != nil || r.StatusCode != 101 {
		t.Fatal(r, err)
	}

	drain := 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err == nil {
		t.Error("Shutdown reported everything finished")
	}
	if el := time.Since(start); el < drain {
		t.Errorf("Shutdown returned after %v, before its %v", el, drain)
	}
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, resp.Body)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream is still open after Shutdown")
	}
	if _, err := wsr.ReadByte(); err == nil {
		t.Fatal("a byte from the tunnel after Shutdown")
	}
}
