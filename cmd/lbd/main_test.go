package main

import (
	"bufio"
	"errors"
	"fmt"
	"github.com/lbd-lb/lbd/internal/conftest"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/internal/nettest"
)

var builtBinary string

// TestMain builds lbd once for every test that runs it.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lbd-test-")
	if err != nil {
		panic(err)
	}
	builtBinary = filepath.Join(dir, "lbd")
	if out, err := exec.Command("go", "build", "-o", builtBinary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build lbd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func lbdBinary(t *testing.T) string { return builtBinary }

func writeFile(t *testing.T, name, text string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCommands(t *testing.T) {
	bin := lbdBinary(t)
	t.Run("check ok", func(t *testing.T) {
		out, err := exec.Command(bin, "check", "-c", "../../configs/lbd.example.toml").CombinedOutput()
		if err != nil || string(out) != "../../configs/lbd.example.toml: ok\n" {
			t.Fatalf("%v: %s", err, out)
		}
	})
	t.Run("check reports file and line", func(t *testing.T) {
		f := writeFile(t, "bad.toml", "[global]\nworkers = 1\nbogus = 2\n\n[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\npool = \"missing\"\n")
		out, err := exec.Command(bin, "check", "--config", f).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("exit %v, want 1", err)
		}
		if !strings.Contains(string(out), f+":3: ") || !strings.Contains(string(out), f+":8: ") {
			t.Fatalf("output does not name lines 3 and 8:\n%s", out)
		}
	})
	t.Run("run refuses a bad config", func(t *testing.T) {
		f := writeFile(t, "bad.toml", "[global]\nworkers = -1\n")
		err := exec.Command(bin, "run", "-c", f).Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("exit %v, want 1", err)
		}
	})
	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(bin, "version").Output()
		if err != nil || !strings.HasPrefix(string(out), "lbd ") {
			t.Fatalf("%v: %s", err, out)
		}
	})
}

// startRun runs `lbd run` on a config with one listener in front of
// backend, and waits until it accepts.
func startRun(t *testing.T, bin, backend, shutdown string) (*exec.Cmd, string) {
	cf := conftest.New(t).Global("workers", 2, "shutdown_timeout", shutdown)
	cf.Listener("front", "pool", "p")
	p := cf.Pool("p", "algorithm", "wrr")
	p.Backend(backend)
	p.HealthCheck("type", "none")
	cmd := exec.Command(bin, "run", "-c", cf.Write(t, "lbd.toml"))
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// The bind has port 0: the log line says which port the kernel chose.
	var bind string
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if line := sc.Text(); strings.Contains(line, "msg=listening") {
			for _, f := range strings.Fields(line) {
				if a, ok := strings.CutPrefix(f, "bind="); ok {
					bind = a
				}
			}
			break
		}
	}
	go io.Copy(io.Discard, stderr)
	if bind == "" {
		t.Fatal("lbd run logged no listening address")
	}
	return cmd, bind
}

// openThrough opens a connection through lbd at bind and waits until it
// reaches the echo backend (one byte there and back).
func openThrough(t *testing.T, bind string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", bind)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write([]byte("x"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	return c
}

func exitCode(t *testing.T, cmd *exec.Cmd, within time.Duration) (int, time.Duration) {
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), time.Since(start)
		}
		return 0, time.Since(start)
	case <-time.After(within):
		t.Fatalf("lbd still running after %v", within)
	}
	return -1, 0
}

// TestGracefulShutdown: SIGTERM stops accepting at once, an open
// connection goes on until it ends, then lbd exits 0.
func TestGracefulShutdown(t *testing.T) {
	bin := lbdBinary(t)
	cmd, bind := startRun(t, bin, nettest.EchoTCP(t), "30s")
	c, err := net.Dial("tcp", bind)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 5)
	c.Write([]byte("hello"))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	// New connections are refused once the listeners are closed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := net.DialTimeout("tcp", bind, time.Second)
		if err != nil {
			break
		}
		n.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The open connection still works.
	c.Write([]byte("again"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "again" {
		t.Fatalf("open connection broke during shutdown: %q %v", buf, err)
	}
	c.Close()
	if code, _ := exitCode(t, cmd, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// TestShutdownDuringTransfer: a SIGTERM in the middle of a bulk transfer
// lets it finish within shutdown_timeout, byte for byte.
func TestShutdownDuringTransfer(t *testing.T) {
	bin := lbdBinary(t)
	cmd, bind := startRun(t, bin, nettest.EchoTCP(t), "30s")
	c, err := net.Dial("tcp", bind)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	const size = 64 << 20
	got := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	block := make([]byte, 64<<10)
	var sent int64
	for sent < size {
		if sent == size/4 {
			cmd.Process.Signal(syscall.SIGTERM)
		}
		n, err := c.Write(block)
		if err != nil {
			t.Fatalf("write after %d bytes: %v", sent, err)
		}
		sent += int64(n)
	}
	c.(*net.TCPConn).CloseWrite()
	if n := <-got; n != size {
		t.Fatalf("echoed %d of %d bytes across the shutdown", n, size)
	}
	if code, _ := exitCode(t, cmd, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// TestShutdownTimeout: connections still open at shutdown_timeout are
// closed and lbd exits 0.
func TestShutdownTimeout(t *testing.T) {
	bin := lbdBinary(t)
	cmd, bind := startRun(t, bin, nettest.EchoTCP(t), "300ms")
	c := openThrough(t, bind)
	cmd.Process.Signal(syscall.SIGTERM)
	code, took := exitCode(t, cmd, 10*time.Second)
	if code != 0 || took < 250*time.Millisecond {
		t.Fatalf("exit %d after %v", code, took)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after lbd exited")
	}
}

// TestSecondSignal: a second SIGTERM exits at once.
func TestSecondSignal(t *testing.T) {
	bin := lbdBinary(t)
	cmd, bind := startRun(t, bin, nettest.EchoTCP(t), "1m")
	openThrough(t, bind) // an open connection that would hold the shutdown for a minute
	cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(100 * time.Millisecond) // two distinct signals, not one coalesced
	cmd.Process.Signal(syscall.SIGTERM)
	if code, took := exitCode(t, cmd, 10*time.Second); code != 0 || took > 5*time.Second {
		t.Fatalf("exit %d after %v", code, took)
	}
}
