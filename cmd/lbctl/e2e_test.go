package main

import (
	"encoding/json"
	"fmt"
	"github.com/lbd-lb/lbd/internal/conftest"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/internal/nettest"
	"github.com/lbd-lb/lbd/pkg/admin"
	"github.com/lbd-lb/lbd/pkg/config"
	"github.com/lbd-lb/lbd/pkg/server"
)

// liveLBD runs a real lbd (in-process) with two pools in front of echo
// backends, and returns its admin socket, its front address, the config
// file and the backends' addresses.
func liveLBD(t *testing.T) (sock, front, file string, backends []string) {
	t.Helper()
	for i := 0; i < 3; i++ {
		backends = append(backends, nettest.EchoTCP(t))
	}
	cf := conftest.New(t)
	sock = filepath.Join(cf.Dir(), "run", "admin.sock")
	// One loop: wrr then hands out backends in one deterministic sequence,
	// which the golden tables' TOTAL column relies on.
	cf.Global("workers", 1, "admin_socket", sock, "state_file", filepath.Join(cf.Dir(), "state.json"))
	cf.Listener("front", "pool", "web")
	web := cf.Pool("web", "algorithm", "wrr")
	web.Backend(backends[0], "name", "web-1")
	web.Backend(backends[1], "name", "web-2")
	web.HealthCheck("type", "tcp")
	db := cf.Pool("db", "algorithm", "least_conn")
	db.Backend(backends[2])
	db.HealthCheck("type", "none")
	file = cf.Write(t, "lbd.toml")
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.New(cfg, server.Options{Logger: slog.New(slog.DiscardHandler), Load: func() (*config.Config, error) { return config.Load(file) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return sock, s.ListenerAddr("front"), file, backends
}

// TestAgainstLiveLBD drives a real lbd with every lbctl command.
func TestAgainstLiveLBD(t *testing.T) {
	sock, front, file, backends := liveLBD(t)
	mask := func(s string) string {
		for i, b := range backends {
			s = strings.ReplaceAll(s, b, fmt.Sprintf("BACKEND%d", i+1))
		}
		return s
	}

	r := lbctl(sock, false, "backends")
	if r.code != 0 {
		t.Fatalf("backends: %d %s", r.code, r.stderr)
	}
	golden(t, "live_backends", mask(r.stdout))

	r = lbctl(sock, false, "-o", "json", "backends", "web")
	var pools []admin.Pool
	if err := json.Unmarshal([]byte(r.stdout), &pools); err != nil || r.code != 0 {
		// backends POOL may print one pool rather than a list
		var p admin.Pool
		if err2 := json.Unmarshal([]byte(r.stdout), &p); err2 != nil {
			t.Fatalf("backends web -o json: %v / %v\n%s", err, err2, r.stdout)
		}
		pools = []admin.Pool{p}
	}
	if len(pools) != 1 || len(pools[0].Backends) != 2 || pools[0].Backends[0].Name != "web-1" || pools[0].Backends[0].Health != "up" {
		t.Fatalf("web pool: %+v", pools)
	}

	r = lbctl(sock, false, "status")
	if r.code != 0 || !strings.Contains(r.stdout, file) || !strings.Contains(r.stdout, front) {
		t.Fatalf("status: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = lbctl(sock, false, "-o", "json", "status")
	var st admin.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Listeners) != 1 || st.Listeners[0].Bind != front {
		t.Fatalf("status json: %v %+v", err, st)
	}

	// A connection to web-1 (wrr starts there or on web-2: open two).
	var conns []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		c.Write([]byte("x"))
		io.ReadFull(c, make([]byte, 1))
		conns = append(conns, c)
	}
	// drain --wait with a timeout while a connection is open: exit 1.
	r = lbctl(sock, false, "drain", "web", "web-1", "--wait", "--timeout", "200ms")
	if r.code != 1 || !strings.Contains(r.stderr, "active") {
		t.Fatalf("drain --wait --timeout with an open connection: %d %q", r.code, r.stderr)
	}
	// drain --wait returns once the last connection closes.
	done := make(chan result, 1)
	go func() { done <- lbctl(sock, false, "drain", "web", "web-1", "--wait") }()
	// The drained backend's connection still works while it waits.
	for _, c := range conns {
		c.Write([]byte("y"))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("connection broke during drain: %v", err)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	select {
	case r = <-done:
		if r.code != 0 {
			t.Fatalf("drain --wait: %d %s", r.code, r.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("drain --wait did not return after the connections closed")
	}

	for _, args := range [][]string{{"weight", "web", "web-2", "7"}, {"disable", "db", backends[2]}} {
		if r := lbctl(sock, false, args...); r.code != 0 {
			t.Fatalf("%v: %d %s", args, r.code, r.stderr)
		}
	}
	r = lbctl(sock, false, "backends")
	golden(t, "live_backends_changed", mask(r.stdout))

	// Operator state reached the state file.
	state, err := os.ReadFile(filepath.Join(filepath.Dir(file), "state.json"))
	if err != nil || !strings.Contains(string(state), `"draining"`) || !strings.Contains(string(state), `"weight": 7`) {
		t.Fatalf("state file: %v\n%s", err, state)
	}
	if r := lbctl(sock, false, "enable", "web", "web-1"); r.code != 0 {
		t.Fatalf("enable: %d %s", r.code, r.stderr)
	}

	// Reload: ok, then rejected with FILE:LINE, and the running config stays.
	if r := lbctl(sock, false, "reload"); r.code != 0 {
		t.Fatalf("reload: %d %s", r.code, r.stderr)
	}
	good, _ := os.ReadFile(file)
	os.WriteFile(file, append(good, []byte("\nnot_a_key = 1\n")...), 0o644)
	r = lbctl(sock, false, "reload")
	if r.code != 1 || !strings.Contains(r.stdout+r.stderr, file+":") {
		t.Fatalf("bad reload: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if c, err := net.Dial("tcp", front); err != nil {
		t.Fatalf("listener gone after a rejected reload: %v", err)
	} else {
		c.Close()
	}

	// Exit codes for unknown names and an unreachable daemon.
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"drain", "nope", "web-1"}, 1},
		{[]string{"drain", "web", "nope"}, 1},
		{[]string{"weight", "web", "web-1", "0"}, 1},
		{[]string{"backends", "nope"}, 1},
		{[]string{"weight", "web", "web-1", "x"}, 2},
	} {
		if r := lbctl(sock, false, tc.args...); r.code != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, r.code, tc.code, r.stderr)
		}
	}
	if r := lbctl(filepath.Join(t.TempDir(), "none.sock"), false, "status"); r.code != 2 {
		t.Errorf("unreachable daemon: exit %d, want 2", r.code)
	}
}
