package conftest

import (
	"strings"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/pkg/config"
)

// TestBuildsValidConfig: a config built here parses, and says what was set.
func TestBuildsValidConfig(t *testing.T) {
	c := New(t).Global("workers", 2, "shutdown_timeout", 200*time.Millisecond)
	c.Listener("front", "pool", "p", "trusted_proxies", []string{"127.0.0.0/8"}, "accept_proxy_protocol", true)
	edge := c.Listener("edge", "protocol", "http", "max_body_bytes", 1024)
	edge.Route("path_prefix", "/api/", "pool", "p", "headers", map[string]string{"X-Tenant": "acme"}, "rate_limit", Raw("{ rate = 10.0 }"))
	p := c.Pool("p", "algorithm", "wrr")
	p.Backend("127.0.0.1:9", "name", "b1", "weight", 50)
	p.HealthCheck("type", "none")
	cfg, err := config.Parse("built.toml", []byte(c.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, c)
	}
	if len(cfg.Listeners) != 2 || cfg.Listeners[1].MaxBodyBytes != 1024 || cfg.Listeners[1].Routes[0].Headers["X-Tenant"] != "acme" ||
		cfg.Pools[0].Backends[0].Weight != 50 || cfg.Global.ShutdownTimeout != 200*time.Millisecond || cfg.Global.MetricsListen != "" ||
		!strings.HasPrefix(cfg.Global.AdminSocket, c.Dir()) {
		t.Fatalf("parsed back: %+v\n%s", cfg, c)
	}
	// A key set again keeps its place; nil removes it.
	p.Set("algorithm", "least_conn", "name", nil)
	if s := c.String(); !strings.Contains(s, "[[pool]]\nalgorithm = \"least_conn\"\n") {
		t.Fatalf("after Set:\n%s", s)
	}
}
