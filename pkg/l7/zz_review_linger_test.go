package l7

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/pkg/l7/route"
)

func zzFDs() int {
	es, _ := os.ReadDir("/proc/self/fd")
	return len(es)
}

func zzLingerers() int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "l7.lingerClose(")
}

// TestZZLingerOutlivesShutdown: connections closing lingering are taken
// off the watchdog before they close, so Shutdown neither waits for them
// nor closes them: it returns nil with their goroutines and descriptors
// still alive (up to lingerTime).
func testZZLingerOutlivesShutdownX(t *testing.T) {
	be := newBackend(t, echoHandler)
	p := testPool(t, "wrr", be.addr)
	s, addr, done := serveUnmanaged(t, Config{Routes: []Route{{Name: "r", Spec: route.Spec{Host: "only.example"}, Pool: p}}})
	fd0, g0 := zzFDs(), runtime.NumGoroutine()
	const n = 20
	var conns []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		// no route: 404 with the body unread -> lingering close
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: other\r\nContent-Length: 100000\r\n\r\nAAAA")
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 404 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// the clients keep their sockets open and keep quiet
	time.Sleep(50 * time.Millisecond)
	t.Logf("before Shutdown: OpenConnections=%d lingerers=%d fds=%d(+%d) goroutines=%d(+%d)",
		s.OpenConnections(), zzLingerers(), zzFDs(), zzFDs()-fd0, runtime.NumGoroutine(), runtime.NumGoroutine()-g0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	start := time.Now()
	err := s.Shutdown(ctx)
	cancel()
	<-done
	t.Logf("Shutdown returned %v after %v", err, time.Since(start).Round(time.Millisecond))
	t.Logf("after Shutdown: lingerers=%d fds=+%d goroutines=+%d", zzLingerers(), zzFDs()-fd0, runtime.NumGoroutine()-g0)
	if zzLingerers() > 0 {
		t.Errorf("BUG: %d lingering connections survive Shutdown", zzLingerers())
	}
	time.Sleep(lingerTime + 300*time.Millisecond)
	t.Logf("lingerTime later: lingerers=%d fds=+%d", zzLingerers(), zzFDs()-fd0)
	for _, c := range conns {
		c.Close()
	}
}
