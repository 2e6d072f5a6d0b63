package l7

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/pkg/l7/target"
)

// heapPeak samples the heap in use every few milliseconds until stop, and
// returns the largest sample.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

func heapNow() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestLargeResponseStreams: a response far larger than any buffer goes
// through byte for byte while lbd's heap stays within a few MiB, also
// when the client stops reading for a while (backpressure, not buffering).
func TestLargeResponseStreams(t *testing.T) {
	size := int64(1 << 30)
	if raceEnabled || testing.Short() {
		size = 128 << 20
	}
	chunk := []byte(strings.Repeat("0123456789abcdef", 4096)) // 64 KiB
	be := listenRaw(t, func(c rawConn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		for left := size; left > 0; {
			n := min(left, int64(len(chunk)))
			if _, err := c.Write(chunk[:n]); err != nil {
				return
			}
			left -= n
		}
	})
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", be))})
	base := heapNow()
	stop := make(chan struct{})
	peak := heapPeak(stop)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Read a little, stall, then read the rest, checking every byte.
	got, pos := int64(0), 0
	buf := make([]byte, 256<<10)
	stalled := false
	for {
		n, err := resp.Body.Read(buf)
		for i := 0; i < n; i++ {
			if buf[i] != chunk[pos] {
				t.Fatalf("byte %d is %q, want %q", got+int64(i), buf[i], chunk[pos])
			}
			if pos++; pos == len(chunk) {
				pos = 0
			}
		}
		got += int64(n)
		if !stalled && got > 32<<20 {
			stalled = true
			time.Sleep(300 * time.Millisecond)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
	}
	close(stop)
	grew := int64(<-peak) - int64(base)
	t.Logf("%d MiB through, heap in use grew by at most %.1f MiB", size>>20, float64(grew)/(1<<20))
	if got != size {
		t.Fatalf("got %d bytes, want %d", got, size)
	}
	if grew > 8<<20 {
		t.Fatalf("heap in use grew by %d bytes while %d went through", grew, size)
	}
}

// TestUnauthenticatedUploads: uploads to an auth route without a token are
// refused on their header; their bodies are never read into memory.
func TestUnauthenticatedUploads(t *testing.T) {
	a := newAuthRoutes(t, target.Strict)
	const n, size = 40, 4 << 20
	body := []byte(strings.Repeat("u", size))
	base := heapNow()
	stop := make(chan struct{})
	peak := heapPeak(stop)
	var wg sync.WaitGroup
	var refused atomic.Int64
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", a.addr)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			go func() {
				fmt.Fprintf(c, "POST /admin/upload HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n", size)
				c.Write(body)
			}()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil && resp.StatusCode == 401 && resp.Header.Get("WWW-Authenticate") != "" {
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	grew := int64(<-peak) - int64(base)
	t.Logf("%d uploads of %d MiB refused, heap in use grew by at most %.1f MiB", refused.Load(), size>>20, float64(grew)/(1<<20))
	if refused.Load() != n {
		t.Fatalf("%d of %d uploads got 401", refused.Load(), n)
	}
	if grew > 16<<20 {
		t.Fatalf("heap in use grew by %d bytes", grew)
	}
	if len(a.admin.requests()) != 0 {
		t.Fatal("the backend got an unauthenticated upload")
	}
}

// TestExpectContinueAfterAuth: 100 Continue is sent only once route, auth
// and rate limit have passed; a refusal comes in its place, whole.
func TestExpectContinueAfterAuth(t *testing.T) {
	a := newAuthRoutes(t, target.Strict)
	c, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "POST /admin/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("without a token: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	io.ReadAll(resp.Body)

	c2, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c2, "POST /admin/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer "+a.token+"\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	br2 := bufio.NewReader(c2)
	line, err := br2.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("with a token: %q %v", line, err)
	}
	br2.ReadString('\n')
	io.WriteString(c2, "hello")
	resp, err = http.ReadResponse(br2, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the body: %v %v", resp, err)
	}
	got := a.admin.requests()
	if len(got) != 1 || !strings.HasSuffix(got[0], "\r\n\r\nhello") {
		t.Fatalf("backend got %q", got)
	}
}

// TestExpectRefusalLingers: a client that sends its body without waiting
// for 100 Continue still reads the refusal whole, then a FIN, not a reset.
func TestExpectRefusalLingers(t *testing.T) {
	a := newAuthRoutes(t, target.Strict)
	for i := range 5 {
		c, err := net.Dial("tcp", a.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "POST /admin/x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 60000\r\n\r\n")
		c.Write(make([]byte, 60000))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 401 {
			t.Fatalf("round %d: %v %v", i, resp, err)
		}
		io.ReadAll(resp.Body)
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("round %d: after the answer: %v, want EOF", i, err)
		}
		c.Close()
	}
}

// TestStalledBodyTimesOut: a body that stops coming gets 408 at
// read_timeout, and the backend never gets a complete request.
func TestStalledBodyTimesOut(t *testing.T) {
	rec := newRecorder(t, "")
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", rec.addr)), ReadTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n")
	c.Write(make([]byte, 20000))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 408 {
		t.Fatalf("%v %v", resp, err)
	}
	if n := len(rec.requests()); n != 0 {
		t.Fatalf("the backend recorded %d complete requests", n)
	}
}

// TestLingeringBounded: past maxLingering, a refused upload's connection
// closes at once instead of lingering, so lingering connections cannot
// pile up beyond the bound.
func TestLingeringBounded(t *testing.T) {
	a := newAuthRoutes(t, target.Strict)
	a.srv.watch.maxLingering.Store(2)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	lingered := 0
	for i := range 6 {
		c, err := net.Dial("tcp", a.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "POST /admin/x HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\nx")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 401 {
			t.Fatalf("upload %d: %v %v", i, resp, err)
		}
		io.ReadAll(resp.Body)
		// A lingering connection still takes bytes; a closed one resets.
		c.Write(make([]byte, 64<<10))
		time.Sleep(20 * time.Millisecond)
		if _, err := c.Write(make([]byte, 64<<10)); err == nil {
			lingered++
		}
	}
	if lingered > 2 {
		t.Fatalf("%d connections lingered, bound 2", lingered)
	}
	if lingered == 0 {
		t.Fatal("no connection lingered")
	}
}
