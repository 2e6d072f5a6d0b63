package server

import (
	"context"
	"github.com/lbd-lb/lbd/internal/conftest"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/internal/nettest"
	"github.com/lbd-lb/lbd/pkg/admin"
	"github.com/lbd-lb/lbd/pkg/config"
)

// TestNotify: READY=1 comes only once listeners accept, RELOADING=1 and
// READY=1 bracket a reload, and STOPPING=1 announces shutdown.
func TestNotify(t *testing.T) {
	dir := t.TempDir()
	sockPath := filepath.Join(dir, "notify.sock")
	ns, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	t.Setenv("NOTIFY_SOCKET", sockPath)

	cf := conftest.New(t)
	cf.Listener("front", "pool", "p")
	p := cf.Pool("p", "algorithm", "wrr")
	p.Backend(nettest.EchoTCP(t))
	p.HealthCheck("type", "none")
	file := cf.Write(t, "lbd.toml")
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	sigs := make(chan os.Signal, 4)
	done := make(chan error, 1)
	go func() {
		done <- Run(cfg, Options{Logger: slog.New(slog.DiscardHandler), Load: func() (*config.Config, error) { return config.Load(file) }}, sigs)
	}()
	next := func() string {
		ns.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 256)
		n, err := ns.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	if msg := next(); msg != "READY=1" {
		t.Fatalf("first message %q", msg)
	}
	// Ready means accepting: the listener must answer now, on the port
	// the admin API reports.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := admin.NewClient(cf.AdminSocket()).Status(ctx)
	if err != nil || len(st.Listeners) != 1 {
		t.Fatalf("status: %+v %v", st, err)
	}
	c, err := net.DialTimeout("tcp", st.Listeners[0].Bind, time.Second)
	if err != nil {
		t.Fatalf("READY=1 before the listener accepts: %v", err)
	}
	c.Close()
	sigs <- syscall.SIGHUP
	if msg := next(); !strings.HasPrefix(msg, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Fatalf("reload message %q", msg)
	}
	if msg := next(); msg != "READY=1" {
		t.Fatalf("after reload %q", msg)
	}
	sigs <- syscall.SIGTERM
	if msg := next(); msg != "STOPPING=1" {
		t.Fatalf("stop message %q", msg)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestUnitFile runs systemd-analyze verify on the shipped unit.
func TestUnitFile(t *testing.T) {
	path, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; the unit file is not verified")
	}
	// verify checks that ExecStart binaries exist: point them at stand-ins.
	dir := t.TempDir()
	unit, err := os.ReadFile("../../configs/systemd/lbd.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"lbd"} {
		os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\n"), 0o755)
	}
	text := strings.ReplaceAll(string(unit), "/usr/local/bin/", dir+"/")
	for _, want := range []string{"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "RuntimeDirectory=", "StateDirectory=",
		"LimitNOFILE=", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "Restart=on-failure", "User=lbd"} {
		if !strings.Contains(text, want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	f := filepath.Join(dir, "lbd.service")
	os.WriteFile(f, []byte(text), 0o644)
	out, err := exec.Command(path, "verify", f).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestNotifyNeverBlocks: with a notification socket that nobody reads, its
// queue full, sending returns at once with an error instead of waiting.
func TestNotifyNeverBlocks(t *testing.T) {
	sockPath := filepath.Join(t.TempDir(), "notify.sock")
	ns, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	t.Setenv("NOTIFY_SOCKET", sockPath)
	done := make(chan int, 1)
	go func() {
		lost := 0
		for range 200 {
			if notify("RELOADING=1") != nil {
				lost++
			}
		}
		done <- lost
	}()
	select {
	case lost := <-done:
		if lost == 0 {
			t.Fatal("200 notifications to a socket nobody reads all went through")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("notify blocked on a full notification socket")
	}
}
