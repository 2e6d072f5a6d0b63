package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/lbd-lb/lbd/internal/conftest"
	"github.com/lbd-lb/lbd/internal/nettest"
	"github.com/lbd-lb/lbd/pkg/config"
)

func scrape(t *testing.T, addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestServerMetrics runs a server from a config and checks that traffic
// and rejections show in /metrics under the names of docs/reference.md.
func TestServerMetrics(t *testing.T) {
	backend := nettest.EchoTCP(t)
	cc := conftest.New(t).Global("workers", 2, "metrics_listen", conftest.AnyPort)
	cc.Listener("front", "pool", "p")
	cc.Listener("strict", "pool", "p", "accept_proxy_protocol", true, "trusted_proxies", []string{"127.0.0.0/8"})
	cc.Pool("p", "algorithm", "least_conn").Backend(backend, "name", "b1")
	cfg, err := config.Parse("test.toml", []byte(cc.String()))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	s.metricsReg.Loaded(time.Now(), false)
	defer s.Close()
	front, strict, metricsAddr := s.ListenerAddr("front"), s.ListenerAddr("strict"), s.MetricsAddr()

	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("hello"))
	io.ReadFull(c, make([]byte, 5))

	bad, err := net.Dial("tcp", strict)
	if err != nil {
		t.Fatal(err)
	}
	bad.SetDeadline(time.Now().Add(10 * time.Second))
	bad.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	io.ReadAll(bad)
	bad.Close()

	// Operator state shows in lbd_backend_state.
	if err := s.Drain("p", "b1"); err != nil {
		t.Fatal(err)
	}
	// The client may read the echo before the loop that relayed it has
	// counted the bytes: wait for the count.
	var text string
	nettest.Eventually(t, "the relayed bytes counted", func() bool {
		text = scrape(t, metricsAddr)
		return strings.Contains(text, `direction="to_client",pool="p"} 5`)
	})
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text format: %v", err)
	}
	for _, name := range []string{"lbd_listener_connections_total", "lbd_backend_state", "lbd_health_checks_total",
		"lbd_config_reloads_total", "lbd_config_last_reload_success_timestamp_seconds", "lbd_backend_up",
		"lbd_backend_connect_duration_seconds"} {
		if families[name] == nil {
			t.Errorf("no %s family", name)
		}
	}
	for _, want := range []string{
		`lbd_backend_state{backend="b1",pool="p",state="draining"} 1`,
		`lbd_backend_state{backend="b1",pool="p",state="up"} 1`,
		`lbd_backend_state{backend="b1",pool="p",state="down"} 0`,
		`lbd_backend_state{backend="b1",pool="p",state="disabled"} 0`,
		`lbd_backend_up{backend="b1",pool="p"} 1`,
		`lbd_health_checks_total{backend="b1",pool="p",result="success"} 1`,
		`lbd_config_reloads_total{result="failure"} 0`,
		`lbd_backend_connect_duration_seconds_count{pool="p"} 1`,
		`lbd_backend_connect_duration_seconds_bucket{pool="p",le="5"} 1`,
		`lbd_listener_connections_total{listener="front"} 1`,
		`lbd_listener_active_connections{listener="front"} 1`,
		`lbd_listener_rejected_total{listener="strict",reason="proxy_header"} 1`,
		`lbd_listener_rejected_total{listener="front",reason="no_backend"} 0`,
		`lbd_backend_bytes_total{backend="b1",direction="to_backend",pool="p"} 5`,
		`lbd_backend_bytes_total{backend="b1",direction="to_client",pool="p"} 5`,
		`lbd_backend_active_connections{backend="b1",pool="p"} 1`,
		`lbd_backend_connections_total{backend="b1",pool="p"} 1`,
		`go_goroutines `,
		`process_open_fds `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
