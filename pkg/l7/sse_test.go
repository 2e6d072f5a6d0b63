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
	req, _ := http.NewRequest("GET", "http://"+addr+"/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
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
