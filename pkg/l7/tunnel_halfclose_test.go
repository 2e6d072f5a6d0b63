package l7

import (
	"testing"
)

// TestTunnelRetriesConnectFailure: a WebSocket upgrade reaches its backend
// the way a proxied request does (tryBackends): a backend that refuses the
// connect is counted (a connect error, a passive failure) and the next one
// is tried, within Retries; with no retry left the client gets 502.
func TestTunnelRetriesConnectFailure(t *testing.T) {
	live := newBackend(t, wsEchoHandler)
	dead := deadAddr(t)
	p := testPool(t, "wrr", dead, live.addr)
	_, addr := startServer(t, Config{Routes: simpleRoutes(p), Retries: 1})
	for i := range 4 {
		c, _, resp := wsDial(t, addr, "Upgrade")
		if resp.StatusCode != 101 {
			t.Fatalf("upgrade #%d: %d", i, resp.StatusCode)
		}
		c.Close()
	}
	_, deadErrs, _, _ := p.Backends()[0].Totals()
	_, liveErrs, _, _ := p.Backends()[1].Totals()
	if deadErrs == 0 || liveErrs != 0 {
		t.Fatalf("connect errors: dead backend %d, live one %d", deadErrs, liveErrs)
	}

	// No retry: a pick of the dead backend is the answer.
	only := testPool(t, "wrr", dead)
	s, addr := startServer(t, Config{Routes: simpleRoutes(only)})
	_, _, resp := wsDial(t, addr, "Upgrade")
	if resp.StatusCode != 502 {
		t.Fatalf("upgrade to a dead backend: %d, want 502", resp.StatusCode)
	}
	if _, errs, _, _ := only.Backends()[0].Totals(); errs != 1 {
		t.Fatalf("%d connect errors counted, want 1", errs)
	}
	if n := s.Stats().Routes[0].BackendErrors; n != 1 {
		t.Fatalf("route backend errors %d, want 1", n)
	}
}
