package l4

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const emfileChildEnv = "LBD_L4_EMFILE_CHILD_BACKEND"

// TestEMFILEChild is the proxy process of TestEMFILE: it runs only when
// re-executed by it, with a low file-descriptor limit.
func TestEMFILEChild(t *testing.T) {
	backend := os.Getenv(emfileChildEnv)
	if backend == "" {
		t.Skip("helper process for TestEMFILE")
	}
	lim := unix.Rlimit{Cur: 40, Max: 40}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	e := testEngine(t, Options{Loops: 1})
	p := testPool(t, 1, "wrr", netip.MustParseAddrPort(backend))
	ln := proxyTo(t, e, p, nil)
	fmt.Printf("ADDR %s\n", ln.Addr())
	// Serve until the parent closes our stdin.
	bufio.NewReader(os.Stdin).ReadString('\n')
	fmt.Printf("PAUSES %d\n", e.Stats(0).AcceptPauses.Load())
}

// cpuTime is a process's user+system time in clock ticks.
func cpuTime(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// utime and stime are fields 14 and 15 of stat, 12 and 13 here.
	u, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return u + st
}

// TestEMFILE runs a proxy limited to 40 descriptors and opens more
// connections than it can hold. The proxy must neither spin nor die, the
// connections it holds keep working, and once descriptors are free again
// it serves new connections by itself.
func TestEMFILE(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a few seconds")
	}
	backend := listen(t, "tcp", "127.0.0.1:0", echo)
	cmd := exec.Command(os.Args[0], "-test.run=^TestEMFILEChild$", "-test.v")
	cmd.Env = append(os.Environ(), emfileChildEnv+"="+backend.String())
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	out := bufio.NewScanner(stdout)
	var addr string
	for out.Scan() {
		if a, ok := strings.CutPrefix(out.Text(), "ADDR "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatal("child did not start")
	}
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	first.SetDeadline(time.Now().Add(30 * time.Second))
	if got, err := roundTrip(first, "first"); err != nil || got != "first" {
		t.Fatalf("%q, %v", got, err)
	}
	// Far more connections than the child has descriptors for. The
	// kernel completes their handshakes; they wait in the backlog.
	var flood []net.Conn
	for i := 0; i < 60; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
		c.Write([]byte("x"))
	}
	// Overload for 2 seconds: the child must stay (nearly) idle.
	before := cpuTime(t, cmd.Process.Pid)
	start := time.Now()
	for time.Since(start) < 2*time.Second {
		// The connection held before the overload keeps flowing.
		if got, err := roundTrip(first, "during"); err != nil || got != "during" {
			t.Fatalf("held connection broke during overload: %q, %v", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	used := cpuTime(t, cmd.Process.Pid) - before
	hz := int64(100) // USER_HZ on Linux
	if pct := float64(used) / float64(hz) / time.Since(start).Seconds() * 100; pct >= 10 {
		t.Fatalf("proxy used %.1f%% CPU while out of descriptors", pct)
	} else {
		t.Logf("proxy used %.1f%% CPU over %v of overload", pct, time.Since(start).Round(time.Millisecond))
	}
	for _, c := range flood {
		c.Close()
	}
	// Descriptors free up as the flood drains; a new client is served.
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			got, err := roundTrip(c, "after")
			c.Close()
			if err == nil && got == "after" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("proxy did not recover after descriptors were freed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	stdin.Close()
	var pauses string
	for out.Scan() {
		if p, ok := strings.CutPrefix(out.Text(), "PAUSES "); ok {
			pauses = p
		}
	}
	cmd.Wait()
	if pauses == "" || pauses == "0" {
		t.Fatalf("child reported %q accept pauses, want some", pauses)
	}
}
