package l7

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	"github.com/lbd-lb/lbd/pkg/l7/route"
)

// lockedBuffer is a bytes.Buffer safe for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAccessLog: one record per request with the fields an operator needs,
// for answered and refused requests alike.
func TestAccessLog(t *testing.T) {
	b := newBackend(t, echoHandler)
	p := testPool(t, "wrr", b.addr)
	var buf lockedBuffer
	cfg := Config{Name: "edge", Routes: []Route{{Name: "api", Spec: route.Spec{Name: "api", PathPrefix: "/api/"}, Pool: p}},
		AccessLog: slog.New(slog.NewJSONHandler(&buf, nil))}
	_, addr := startServer(t, cfg)
	c := &http.Client{}
	if resp, _ := get(t, c, "http://"+addr+"/api/x?q=1", nil); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if resp, _ := get(t, c, "http://"+addr+"/other", nil); resp.StatusCode != 404 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var recs []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace([]byte(buf.String())), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		recs = append(recs, m)
	}
	if len(recs) != 2 {
		t.Fatalf("%d records: %v", len(recs), recs)
	}
	first := recs[0]
	for k, want := range map[string]any{"msg": "access", "listener": "edge", "method": "GET", "path": "/api/x",
		"route": "api", "status": float64(200), "backend": "b0"} {
		if first[k] != want {
			t.Errorf("%s = %v, want %v", k, first[k], want)
		}
	}
	for _, k := range []string{"host", "bytes", "duration", "client"} {
		if _, ok := first[k]; !ok {
			t.Errorf("record lacks %s", k)
		}
	}
	if recs[1]["status"] != float64(404) || recs[1]["route"] != "" {
		t.Errorf("404 record: %v", recs[1])
	}
}
