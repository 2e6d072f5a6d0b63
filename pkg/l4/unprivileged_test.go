package l4

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/internal/nettest"
)

// unprivilegedUID is the user the shipped unit's equivalent runs as here:
// nobody, with no capabilities.
const unprivilegedUID = 65534

// TestUnprivilegedPipeBudget runs bulk transfers through the engine as an
// unprivileged user, with more connections holding pipes at once than
// fs.pipe-user-pages-soft has room for at full size: past the budget, pipes
// are two pages, and every transfer must still arrive byte for byte, none
// reset. (It shows that lbd works as the shipped unit runs it; the partial
// write into a small pipe that used to reset a connection needs timing this
// test does not force, which TestLimitedPipeFloor pins instead.) As root, the test runs itself again as nobody (the test binary is
// copied where nobody can run it); as any other user it runs in place.
func TestUnprivilegedPipeBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("many connections")
	}
	if os.Getuid() == 0 {
		runAsNobody(t, "TestUnprivilegedPipeBudget")
		return
	}
	e := testEngine(t, Options{Loops: 1})
	if !e.budget.limited {
		t.Skip("this process is exempt from the pipe limits")
	}
	t.Logf("budget: %d pages, %d pipes of %d bytes", e.budget.pages, e.budget.pipes, e.opts.PipeSize)
	conns := e.budget.pipes + 64
	const size = 256 << 10
	start := make(chan struct{})
	be := listen(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		<-start
		io.Copy(c, newStream(7, size))
	})
	ln := proxyTo(t, e, testPool(t, 1, "wrr", be), nil)
	var clients []*net.TCPConn
	for range conns {
		c := dial(t, ln.Addr())
		c.SetReadBuffer(4096) // small: backpressure from the first bytes
		clients = append(clients, c)
	}
	nettest.Eventually(t, "every connection forwarding", func() bool { return e.Active() == int64(conns) })
	close(start)
	// Every transfer fills its client's buffer and then a pipe before
	// anyone reads: more pipes at once than the budget holds.
	time.Sleep(500 * time.Millisecond)
	wantSum := want(7, size)
	var wg sync.WaitGroup
	errs := make(chan string, conns)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sum, n, err := digest(c)
			if err != nil || n != size || sum != wantSum {
				errs <- "connection " + itoa(i) + ": " + itoa(int(n)) + " bytes, " + errString(err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	bad := 0
	for msg := range errs {
		if bad++; bad <= 5 {
			t.Error(msg)
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d transfers failed", bad, conns)
	}
}

func itoa(n int) string { return string(appendInt(nil, n)) }

func appendInt(b []byte, n int) []byte {
	if n < 0 {
		return appendInt(append(b, '-'), -n)
	}
	if n >= 10 {
		b = appendInt(b, n/10)
	}
	return append(b, byte('0'+n%10))
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// runAsNobody runs test in a copy of this test binary as unprivilegedUID
// and fails t if it fails.
func runAsNobody(t *testing.T, test string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "lbd-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "l4.test")
	src, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "GORACE=" + os.Getenv("GORACE")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: unprivilegedUID, Gid: unprivilegedUID}}
	out, err := cmd.CombinedOutput()
	t.Logf("as uid %d:\n%s", unprivilegedUID, out)
	if err != nil {
		t.Fatalf("as uid %d: %v", unprivilegedUID, err)
	}
}

// TestLimitedPipeFloor: under the pipe limit, copy reads never exceed a
// page, the least capacity of a pipe the kernel hands out past the budget
// (two pages since Linux 5.14, one before), so
// that a partial write always parks whole; without the limit they go up
// to the pipe size.
func TestLimitedPipeFloor(t *testing.T) {
	if pp := newPipePool(256<<10, 4, true); pp.floor != os.Getpagesize() {
		t.Fatalf("limited floor %d, want a page", pp.floor)
	}
	if pp := newPipePool(256<<10, 4, false); pp.floor != defaultPipeCap {
		t.Fatalf("floor %d, want %d", pp.floor, defaultPipeCap)
	}
}
