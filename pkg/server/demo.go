package server

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/lbd-lb/lbd/pkg/config"
)

// demoConfig is the embedded default that `lbd demo` runs. BACKENDS is
// replaced by the three in-process backends.
const demoConfig = `
[global]
admin_socket = "ADMIN"
metrics_listen = "127.0.0.1:9090"
log_level = "info"
shutdown_timeout = "5s"

[[listener]]
name = "spread"
bind = "127.0.0.1:8080"
pool = "web-wrr"

[[listener]]
name = "sticky"
bind = "127.0.0.1:8081"
pool = "web-maglev"

[[pool]]
name = "web-wrr"
algorithm = "wrr"
BACKENDS

[[pool]]
name = "web-maglev"
algorithm = "maglev"
hash = "source_ip"
BACKENDS
`

// Demo starts three HTTP backends in-process and lbd in front of them, and
// serves until SIGTERM or SIGINT arrives on signals.
func Demo(out io.Writer, signals <-chan os.Signal) error {
	var backends strings.Builder
	for i := 1; i <= 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		name := fmt.Sprintf("backend-%d", i)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s (%s), you are %s\n", name, ln.Addr(), r.RemoteAddr)
		})}
		go srv.Serve(ln)
		fmt.Fprintf(&backends, "  [[pool.backend]]\n  name = %q\n  address = %q\n", name, ln.Addr().String())
	}
	dir, err := os.MkdirTemp("", "lbd-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	text := strings.ReplaceAll(demoConfig, "BACKENDS", backends.String())
	text = strings.ReplaceAll(text, "ADMIN", filepath.Join(dir, "admin.sock"))
	// The config is embedded, not a file: a reload has nothing to re-read.
	cfg, err := config.Parse("demo.toml", []byte(text))
	if err != nil {
		return err
	}
	log, level := NewLogger(cfg.Global, os.Stderr)
	sock := filepath.Join(dir, "admin.sock")
	fmt.Fprintf(out, `lbd demo: three HTTP backends behind two listeners.

  curl http://127.0.0.1:8080/   # wrr: successive requests spread over the backends
  curl http://127.0.0.1:8081/   # maglev by source IP: the same client sticks to one backend
  curl --interface 127.0.0.2 http://127.0.0.1:8081/   # another source IP may land elsewhere
  curl -s http://127.0.0.1:9090/metrics | grep ^lbd_   # Prometheus metrics

Operate it with lbctl (make build puts it in bin/):

  export LBCTL_SOCKET=%s
  bin/lbctl status
  bin/lbctl backends
  bin/lbctl drain web-wrr backend-1    # its traffic stops; the others take it
  bin/lbctl enable web-wrr backend-1

Press Ctrl-C to stop.
`, sock)
	return Run(cfg, Options{Logger: log.With("demo", true), LogLevel: level}, signals)
}
