// Command healthcheck measures what active health checking costs lbd: the
// CPU time of a healthcheck.Checker probing 1000 real loopback backends
// every 2 s, with a tcp check and then with an http one (the target:
// under 5% of one core).
//
// The backends run in a child process (this binary re-executed with
// -serve), so that the CPU time of this process is the checker's alone:
// its getrusage over a measurement window, less the same process's idle
// rate over a window without checking. Each type is measured -rounds
// times, the types alternating, and the median is the result. The child's
// CPU is reported too, as what the probes cost the backends. Results go to
// healthcheck.md.
//
//	go run ./bench/healthcheck -out bench/results
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lbd-lb/lbd/healthcheck"
)

func main() {
	n := flag.Int("n", 1000, "backends (loopback listeners)")
	interval := flag.Duration("interval", 2*time.Second, "health_check interval")
	timeout := flag.Duration("timeout", time.Second, "health_check timeout")
	duration := flag.Duration("duration", 20*time.Second, "measurement window per check type")
	warmup := flag.Duration("warmup", 4*time.Second, "checking before the window opens, so that the first burst of probes is past")
	idle := flag.Duration("idle", 5*time.Second, "window measuring this process without checking")
	types := flag.String("types", "tcp,http", "check types to measure")
	rounds := flag.Int("rounds", 3, "measurements of each type, alternating types; the median is the result")
	out := flag.String("out", "bench/results", "directory for healthcheck.md; empty: stdout only")
	serve := flag.String("serve", "", "internal: run as the backends' process, of this check type")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of each window to this file name plus .TYPE")
	flag.Parse()

	if *serve != "" {
		if err := serveBackends(*serve, *n); err != nil {
			log.Fatalf("backends: %v", err)
		}
		return
	}
	if err := raiseNoFile(uint64(*n) + 256); err != nil {
		log.Fatal(err)
	}
	loadBefore = loadAvg()
	var runs []result
	for round := 1; round <= *rounds; round++ {
		for _, typ := range strings.Split(*types, ",") {
			r, err := measure(strings.TrimSpace(typ), *n, *interval, *timeout, *warmup, *duration, *idle)
			if err != nil {
				log.Fatalf("%s: %v", typ, err)
			}
			r.round = round
			fmt.Printf("round %d, %s: %d probes (%d failed) in %v: checker %.2f%% of one core (%.0f%% system; %.1f µs/probe), backends %.2f%%\n",
				round, r.typ, r.probes, r.failures, r.window.Round(time.Millisecond), r.checkerPct(), r.sysShare(), r.usPerProbe(), r.childPct())
			runs = append(runs, r)
		}
	}
	if *out == "" {
		return
	}
	cmd := "go run ./bench/healthcheck " + strings.Join(os.Args[1:], " ")
	if err := os.WriteFile(filepath.Join(*out, "healthcheck.md"), report(cmd, *n, *interval, *timeout, *warmup, runs), 0o644); err != nil {
		log.Fatal(err)
	}
}

var cpuProfile, loadBefore string

// loadAvg returns the first three fields of /proc/loadavg.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}

// result is one check type's measurement.
type result struct {
	typ              string
	round            int
	window           time.Duration
	cpu              time.Duration // this process over the window
	sys              time.Duration // of which system time
	idleCPU, idleWin time.Duration // this process without checking
	childCPU         time.Duration // the backends' process over the window
	probes, failures int64
	events, up       int64
}

// checkerPct is the checker's CPU in % of one core: the process's rate
// over the window less its idle rate.
func (r result) checkerPct() float64 {
	return 100 * (r.cpu.Seconds()/r.window.Seconds() - r.idleCPU.Seconds()/r.idleWin.Seconds())
}

func (r result) usPerProbe() float64 {
	if r.probes == 0 {
		return 0
	}
	return r.checkerPct() / 100 * r.window.Seconds() / float64(r.probes) * 1e6
}

func (r result) sysShare() float64 { return 100 * r.sys.Seconds() / r.cpu.Seconds() }

func (r result) childPct() float64 { return 100 * r.childCPU.Seconds() / r.window.Seconds() }

func measure(typ string, n int, interval, timeout, warmup, window, idle time.Duration) (result, error) {
	r := result{typ: typ}
	child, addrs, err := startBackends(typ, n)
	if err != nil {
		return r, err
	}
	defer child.stop()

	// The idle rate: the runtime's own background work, with the same
	// memory as during the run minus the Checker.
	runtime.GC()
	c0, t0 := processCPU(), time.Now()
	time.Sleep(idle)
	r.idleCPU, r.idleWin = processCPU()-c0, time.Since(t0)

	var probes, failures, events, up atomic.Int64
	chk := healthcheck.New(healthcheck.Config{
		Type: typ, Interval: interval, Timeout: timeout, Rise: 2, Fall: 3,
		Path: "/healthz", ExpectStatusMin: 200, ExpectStatusMax: 399,
	}, func(ev healthcheck.Event) {
		events.Add(1)
		if ev.Up {
			up.Add(1)
		} else {
			up.Add(-1)
		}
	}, healthcheck.OnProbe(func(_ string, ok bool) {
		probes.Add(1)
		if !ok {
			failures.Add(1)
		}
	}), healthcheck.WithLogger(slog.New(slog.DiscardHandler)))
	for i, a := range addrs {
		chk.Add("b"+strconv.Itoa(i), a, healthcheck.State{})
	}
	time.Sleep(warmup)

	p0, f0 := probes.Load(), failures.Load()
	cc0, err := child.cpu()
	if err != nil {
		return r, err
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile + "." + typ)
		if err != nil {
			return r, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return r, err
		}
	}
	u0, s0 := processTimes()
	t0 = time.Now()
	time.Sleep(window)
	u1, s1 := processTimes()
	r.cpu, r.sys, r.window = u1+s1-u0-s0, s1-s0, time.Since(t0)
	if cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	cc1, err := child.cpu()
	if err != nil {
		return r, err
	}
	r.childCPU = cc1 - cc0
	r.probes, r.failures = probes.Load()-p0, failures.Load()-f0
	chk.Close()
	r.events, r.up = events.Load(), up.Load()
	if r.up != int64(n) {
		return r, fmt.Errorf("%d of %d backends up (%d events, %d failed probes in the window)", r.up, n, r.events, r.failures)
	}
	return r, nil
}

// processCPU is this process's user and system time so far.
func processCPU() time.Duration {
	u, s := processTimes()
	return u + s
}

func processTimes() (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		log.Fatal(os.NewSyscallError("getrusage", err))
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// backends is the child process holding the listeners.
type backends struct {
	cmd   *exec.Cmd
	stdin io.Closer
}

// startBackends re-executes this binary with -serve and reads the
// listeners' addresses from its output.
func startBackends(typ string, n int) (*backends, []netip.AddrPort, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(exe, "-serve", typ, "-n", strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	b := &backends{cmd: cmd, stdin: stdin}
	var addrs []netip.AddrPort
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && sc.Text() != "READY" {
		a, err := netip.ParseAddrPort(sc.Text())
		if err != nil {
			b.stop()
			return nil, nil, fmt.Errorf("backends said %q", sc.Text())
		}
		addrs = append(addrs, a)
	}
	if len(addrs) != n {
		b.stop()
		return nil, nil, fmt.Errorf("backends started %d listeners, want %d", len(addrs), n)
	}
	return b, addrs, nil
}

// cpu reads the child's user and system time from /proc.
func (b *backends) cpu() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc stat %q", s)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc stat %q", s)
	}
	// USER_HZ is 100 on every Linux ABI Go supports.
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// stop ends the child: it exits when its stdin closes.
func (b *backends) stop() {
	b.stdin.Close()
	done := make(chan struct{})
	go func() {
		_ = b.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-done
	}
}

// serveBackends is the child: n listeners that accept and close (tcp) or
// answer any request with a minimal 200 (http), until stdin closes.
func serveBackends(typ string, n int) error {
	if err := raiseNoFile(uint64(n) + 256); err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		fmt.Fprintln(w, ln.Addr())
		go accept(ln, typ == healthcheck.TypeHTTP)
	}
	fmt.Fprintln(w, "READY")
	if err := w.Flush(); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

func accept(ln net.Listener, http bool) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !http {
			c.Close()
			continue
		}
		go answer(c)
	}
}

var okResponse = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

// answer reads a request head and writes okResponse, as a minimal health
// endpoint would.
func answer(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1024)
	n := 0
	for !strings.Contains(string(buf[:n]), "\r\n\r\n") {
		if n == len(buf) {
			return
		}
		m, err := c.Read(buf[n:])
		n += m
		if err != nil {
			return
		}
	}
	_, _ = c.Write(okResponse)
}

// raiseNoFile lifts the soft RLIMIT_NOFILE to the hard limit and checks
// that need descriptors fit.
func raiseNoFile(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return os.NewSyscallError("getrlimit", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return os.NewSyscallError("setrlimit", err)
		}
	}
	if lim.Cur < need {
		return fmt.Errorf("RLIMIT_NOFILE is %d, need about %d", lim.Cur, need)
	}
	return nil
}

func report(cmd string, n int, interval, timeout, warmup time.Duration, runs []result) []byte {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# Health-check cost: %d loopback backends every %v\n\n", n, interval)
	fmt.Fprintf(&b, "Generated by `%s` on %s (%s, %s/%s, %d CPUs, host %s).\n\n",
		cmd, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), host)
	fmt.Fprintf(&b, "Issue 4 asks that health-checking 1000 backends every 2 s cost under 5%% of one core.\n\n")
	fmt.Fprintf(&b, "How it is measured: the %d backends are loopback listeners in a child process (this binary re-executed with `-serve`); "+
		"a `healthcheck.Checker` (interval %v ±10%% jitter, timeout %v, rise 2, fall 3) probes them from the measuring process, "+
		"which does nothing else. After %v of checking (the first, simultaneous probe of every new backend is past), "+
		"the process's user+system time (getrusage) over the window, divided by the window, less the same process's rate over an idle "+
		"window before the Checker exists, is the checker's share of one core. The child's time over the window (from /proc) is what the probes cost the backends. "+
		"The kernel's loopback work is charged to whichever process is running when it happens, so the split between the two is approximate; their sum is not.\n\n",
		n, interval, timeout, warmup)
	b.WriteString("| check | median checker CPU, % of one core | rounds | target |\n|---|---|---|---|\n")
	var types []string
	byType := map[string][]float64{}
	for _, r := range runs {
		if byType[r.typ] == nil {
			types = append(types, r.typ)
		}
		byType[r.typ] = append(byType[r.typ], r.checkerPct())
	}
	for _, typ := range types {
		pcts := slices.Clone(byType[typ])
		slices.Sort(pcts)
		med := pcts[len(pcts)/2]
		if len(pcts)%2 == 0 {
			med = (pcts[len(pcts)/2-1] + med) / 2
		}
		verdict := "**met** (< 5%)"
		if med >= 5 {
			verdict = "**missed** (≥ 5%)"
		}
		fmt.Fprintf(&b, "| %s | **%.2f%%** | %d | %s |\n", typ, med, len(pcts), verdict)
	}
	b.WriteString("\nEvery round:\n\n")
	b.WriteString("| round | check | window | probes | probes/s | failed | checker CPU | of which system | checker, % of one core | CPU per probe | idle rate | backends, % of one core |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		fmt.Fprintf(&b, "| %d | %s | %.1f s | %d | %.0f | %d | %.3f s | %.0f%% | %.2f%% | %.1f µs | %.3f%% | %.2f%% |\n",
			r.round, r.typ, r.window.Seconds(), r.probes, float64(r.probes)/r.window.Seconds(), r.failures,
			r.cpu.Seconds(), r.sysShare(), r.checkerPct(), r.usPerProbe(), 100*r.idleCPU.Seconds()/r.idleWin.Seconds(), r.childPct())
	}
	b.WriteString("\nWhat a probe costs (see `healthcheck/`): a timer per backend on the Go runtime's timer heap, one short-lived goroutine per probe; " +
		"probe instants are rounded up to a grid of interval/20 (at most 100 ms), so that the process wakes 10 times a second for batches of about 50 probes rather than 500 times for one each " +
		"(before the grid, with probes started one by one at their own instants, this benchmark measured about 6% of a core for tcp and 8–10% for http, " +
		"most of it the runtime waking threads; all 1000 in lockstep measured 2.3% for tcp); " +
		"tcp: a non-blocking connect through the netpoller, then close with RST (SO_LINGER 0), so no TIME_WAIT socket is left behind; " +
		"http: the same connection, one write of the request, reads of the response head and at most 4 KiB of body into a pooled buffer.\n")
	fmt.Fprintf(&b, "\nLoad average (1, 5, 15 min) before: %s; after: %s. ", loadBefore, loadAvg())
	b.WriteString("The machine may share its CPUs with other work; a load average well above what the benchmark itself adds means the figures are disturbed, upwards. Run it on an otherwise idle machine.\n")
	return []byte(b.String())
}
