package l7

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestServerSentEvents: each event reaches the client as soon as the
// backend flushes it, while the response is still open.
func TestServerSentEvents(t *testing.T) {
	next := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 1; i <= 3; i++ {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			if i < 3 {
				select {
				case <-next: // the client saw this event before the next is sent
				case <-time.After(10 * time.Second):
					return
				}
			}
		}
	})
	p := testPool(t, "wrr", b.addr)
	_, addr := startServer(t, Config{Name: "edge", Routes: simpleRoutes(p)})
	resp := getEventStream(t, addr)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	for i := 1; i <= 3; i++ {
		var line string
		for sc.Scan() {
			if line = sc.Text(); line != "" {
				break
			}
		}
		if line != fmt.Sprintf("data: event %d", i) {
			t.Fatalf("event %d: %q (%v)", i, line, sc.Err())
		}
		if i < 3 {
			next <- struct{}{}
		}
	}
}

// TestLongEventStream: read_timeout bounds the wait for the backend's next
// bytes, not the whole response, so an event stream that keeps sending
// outlives it; a stream that falls silent for longer is cut.
func TestLongEventStream(t *testing.T) {
	read := 300 * time.Millisecond
	silent := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 1; i <= 8; i++ {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(read / 3) // the pace of the stream, well within read
		}
		// Then silence past read_timeout.
		select {
		case <-silent:
		case <-time.After(10 * time.Second):
		}
	})
	defer close(silent)
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", b.addr)), ReadTimeout: read})
	resp := getEventStream(t, addr)
	start := time.Now()
	sc := bufio.NewScanner(resp.Body)
	var got []string
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			got = append(got, line)
		}
	}
	// 8 events over about 8/3 read timeouts, then the cut.
	if len(got) != 8 || got[7] != "data: event 8" {
		t.Fatalf("got %d events: %q", len(got), got)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("the silent stream was not cut (%v)", el)
	}
}
