package l7

import (
	"net/http"
	"sync"
	"testing"
)

// TestConcurrentAccounting runs many requests at once through two backends:
// every request is counted once in the per-slot stats, and Active is back
// to zero when they are done.
func TestConcurrentAccounting(t *testing.T) {
	a, b := newBackend(t, echoHandler), newBackend(t, echoHandler)
	p := testPool(t, "least_conn", a.addr, b.addr)
	_, addr := startServer(t, Config{Routes: simpleRoutes(p)})
	const workers, each = 16, 25
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{}
			for i := 0; i < each; i++ {
				resp, _, err := tryGet(c, "http://"+addr+"/", nil)
				if err != nil {
					t.Error(err)
					return
				}
				if resp.StatusCode != 200 {
					t.Errorf("status %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	var conns uint64
	for _, be := range p.Backends() {
		if n := be.Active.Load(); n != 0 {
			t.Errorf("%s: Active = %d after all requests", be.Name, n)
		}
		c, _, toB, toC := be.Totals()
		if c > 0 && (toB == 0 || toC == 0) {
			t.Errorf("%s: bytes not counted", be.Name)
		}
		conns += c
	}
	if conns != workers*each {
		t.Errorf("requests counted %d, want %d", conns, workers*each)
	}
}
