// Command soak runs lbd for a bounded time under a steady mix of traffic
// and samples its resident memory, open descriptors and goroutines, to show
// that they stay flat once warmed up: no table, pool or goroutine grows
// with the traffic that went through.
//
// The mix, at fixed rates, all on loopback: short TCP connections (one
// request and its echo each), bulk TCP streams checked byte for byte (each
// followed by a pause), and
// UDP flows of a few queries each from ever new source ports. Every sample
// (every -every) reads /proc/PID/status and /proc/PID/fd and lbd's own
// go_goroutines from its metrics endpoint. It writes soak.md and soak.svg
// to -out, and exits 1 when a figure is not flat after warm-up or any
// transfer went wrong.
//
//	go run ./bench/soak -lbd bin/lbd -duration 10m -out bench/results
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	lbdBin   = flag.String("lbd", "bin/lbd", "the lbd binary")
	duration = flag.Duration("duration", 10*time.Minute, "how long the traffic runs")
	every    = flag.Duration("every", 10*time.Second, "sampling interval")
	warmup   = flag.Duration("warmup", time.Minute, "samples before this are not judged")
	outDir   = flag.String("out", "bench/results", "where soak.md and soak.svg go")
	connRate = flag.Int("conns", 200, "short TCP connections per second")
	bulkN    = flag.Int("bulk", 2, "bulk streams running at once")
	bulkSize = flag.Int("bulksize", 16<<20, "bytes per bulk stream")
	bulkGap  = flag.Duration("bulkgap", time.Second, "pause after each bulk stream, so bulk traffic has a fixed rate")
	udpRate  = flag.Int("udp", 300, "UDP flows per second (3 queries each)")
)

// sample is one reading of lbd's footprint.
type sample struct {
	at         time.Duration
	rssKiB     int
	fds        int
	goroutines int
	conns      int64 // short connections completed so far
	bulk       int64 // bulk bytes verified so far
	udp        int64 // UDP answers received so far
}

func main() {
	flag.Parse()
	log.SetFlags(log.Ltime)
	stop := make(chan struct{})
	var errs atomic.Int64
	fail := func(format string, args ...any) {
		if errs.Add(1) <= 10 {
			log.Printf("error: "+format, args...)
		}
	}

	tcpBackend := listenTCP(func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		mode, err := br.ReadByte()
		if err != nil {
			return
		}
		switch mode {
		case 'e': // echo
			io.Copy(c, br)
		case 'b': // bulk: send bulkSize bytes of the seeded stream
			var seed [1]byte
			io.ReadFull(br, seed[:])
			io.Copy(c, stream(seed[0], *bulkSize))
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, br)
		}
	})
	udpBackend := listenUDP()
	dir, err := os.MkdirTemp("", "lbd-soak-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	front, udpFront, metrics := freePort(), freePort(), freePort()
	cfg := fmt.Sprintf(`[global]
admin_socket = %q
metrics_listen = %q
[[listener]]
name = "tcp"
bind = %q
pool = "tcp"
idle_timeout = "30s"
[[listener]]
name = "udp"
bind = %q
protocol = "udp"
pool = "udp"
udp_responses = 1
idle_timeout = "5s"
[[pool]]
name = "tcp"
algorithm = "least_conn"
  [[pool.backend]]
  address = %q
  [pool.health_check]
  type = "none"
[[pool]]
name = "udp"
algorithm = "maglev"
  [[pool.backend]]
  address = %q
  [pool.health_check]
  type = "none"
`, filepath.Join(dir, "admin.sock"), metrics, front, udpFront, tcpBackend, udpBackend)
	cfgFile := filepath.Join(dir, "lbd.toml")
	os.WriteFile(cfgFile, []byte(cfg), 0o644)
	cmd := exec.Command(*lbdBin, "run", "-c", cfgFile)
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitListening(front)
	pid := cmd.Process.Pid
	log.Printf("lbd pid %d: %v of traffic, sampled every %v", pid, *duration, *every)

	var conns, bulkBytes, udpAnswers atomic.Int64
	var wg sync.WaitGroup
	ticker := func(rate int, fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(time.Second / time.Duration(rate))
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					go fn()
				}
			}
		}()
	}
	ticker(*connRate, func() {
		c, err := net.DialTimeout("tcp", front, 5*time.Second)
		if err != nil {
			fail("dial: %v", err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := []byte("e" + strconv.Itoa(rand.IntN(1e9)))
		c.Write(msg)
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, msg[1:]) {
			fail("short connection: %q, %v", got, err)
			return
		}
		conns.Add(1)
	})
	for i := range *bulkN {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := byte(i); ; seed += byte(*bulkN) {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", front, 5*time.Second)
				if err != nil {
					fail("dial: %v", err)
					continue
				}
				c.SetDeadline(time.Now().Add(2 * time.Minute))
				c.Write([]byte{'b', seed})
				h := sha256.New()
				n, err := io.Copy(h, c)
				c.Close()
				if err != nil || n != int64(*bulkSize) || !bytes.Equal(h.Sum(nil), sum(seed, *bulkSize)) {
					fail("bulk stream %d: %d bytes, %v", seed, n, err)
					continue
				}
				bulkBytes.Add(n)
				select {
				case <-stop:
					return
				case <-time.After(*bulkGap):
				}
			}
		}()
	}
	ticker(*udpRate, func() {
		c, err := net.Dial("udp", udpFront)
		if err != nil {
			fail("udp: %v", err)
			return
		}
		defer c.Close()
		buf := make([]byte, 512)
		for q := range 3 {
			msg := fmt.Sprintf("q%d-%d", q, rand.IntN(1e9))
			c.SetDeadline(time.Now().Add(2 * time.Second))
			c.Write([]byte(msg))
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != msg {
				fail("udp query: %q, %v", buf[:n], err)
				return
			}
			udpAnswers.Add(1)
		}
	})

	var samples []sample
	start := time.Now()
	take := func() {
		s := sample{at: time.Since(start).Round(time.Second), conns: conns.Load(), bulk: bulkBytes.Load(), udp: udpAnswers.Load()}
		s.rssKiB = statusField(pid, "VmRSS:")
		if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			s.fds = len(fds)
		}
		s.goroutines = scrape(metrics, "go_goroutines")
		samples = append(samples, s)
		log.Printf("%6v  rss %6d KiB  fds %5d  goroutines %4d  conns %8d  bulk %6d MiB  udp %8d",
			s.at, s.rssKiB, s.fds, s.goroutines, s.conns, s.bulk>>20, s.udp)
	}
	take()
	t := time.NewTicker(*every)
	for range t.C {
		take()
		if time.Since(start) >= *duration {
			break
		}
	}
	t.Stop()
	close(stop)
	wg.Wait()
	// Once the traffic has ended and idle timeouts have passed, what is
	// left open should be what lbd started with.
	time.Sleep(6 * time.Second)
	take()

	verdict := judge(samples)
	if errs.Load() > 0 {
		verdict = append(verdict, fmt.Sprintf("%d transfers went wrong", errs.Load()))
	}
	if err := write(samples, verdict); err != nil {
		log.Fatal(err)
	}
	if len(verdict) > 0 {
		for _, v := range verdict {
			log.Print("NOT FLAT: ", v)
		}
		os.Exit(1)
	}
	log.Print("flat: every figure stayed within its bound after warm-up")
}

// judge returns what is not flat after warm-up: resident memory that grew
// by more than a quarter (or 8 MiB, whichever is more) from its first
// judged sample, descriptors or goroutines that grew by more than the
// traffic in flight can explain, and a final idle sample that did not come
// back to the first one's descriptors.
func judge(samples []sample) []string {
	var judged []sample
	for _, s := range samples[:len(samples)-1] {
		if s.at >= *warmup {
			judged = append(judged, s)
		}
	}
	if len(judged) < 2 {
		return []string{"too few samples after warm-up: run longer"}
	}
	var out []string
	first := judged[0]
	maxRSS, maxFds, maxG := 0, 0, 0
	for _, s := range judged {
		maxRSS, maxFds, maxG = max(maxRSS, s.rssKiB), max(maxFds, s.fds), max(maxG, s.goroutines)
	}
	if limit := first.rssKiB + max(first.rssKiB/4, 8<<10); maxRSS > limit {
		out = append(out, fmt.Sprintf("RSS rose from %d to %d KiB", first.rssKiB, maxRSS))
	}
	// In flight at once: about a second of short connections (two
	// descriptors each), the bulk streams and a few seconds of UDP flows.
	slack := 2**connRate + 2**bulkN + 5**udpRate + 64
	if maxFds > first.fds+slack {
		out = append(out, fmt.Sprintf("descriptors rose from %d to %d", first.fds, maxFds))
	}
	if maxG > first.goroutines+64 {
		out = append(out, fmt.Sprintf("goroutines rose from %d to %d", first.goroutines, maxG))
	}
	idle := samples[len(samples)-1]
	if idle.fds > samples[0].fds+16 {
		out = append(out, fmt.Sprintf("idle again, lbd holds %d descriptors, %d at the start", idle.fds, samples[0].fds))
	}
	return out
}

func write(samples []sample, verdict []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# lbd soak: memory, descriptors and goroutines under steady traffic\n\n")
	fmt.Fprintf(&b, "Written by `bench/soak` (`make soak`) on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- Traffic for %v: %d short TCP connections a second (one request and its echo), %d bulk streams of %d MiB at a time, each followed by a %v pause, checked with SHA-256, %d UDP flows a second of three queries each from new source ports.\n",
		*duration, *connRate, *bulkN, *bulkSize>>20, *bulkGap, *udpRate)
	fmt.Fprintf(&b, "- Sampled every %v: VmRSS and the descriptor count from /proc, goroutines from lbd's `go_goroutines`. Samples before %v are warm-up; the last row is taken 6 s after the traffic stopped.\n", *every, *warmup)
	if len(verdict) == 0 {
		b.WriteString("- Verdict: **flat**. After warm-up RSS stayed within a quarter (or 8 MiB) of its first judged sample, descriptors and goroutines within what the traffic in flight explains, and idle again lbd held the descriptors it started with.\n\n")
	} else {
		b.WriteString("- Verdict: **not flat**: " + strings.Join(verdict, "; ") + ".\n\n")
	}
	b.WriteString("![soak](soak.svg)\n\n| time | RSS (KiB) | fds | goroutines | short conns | bulk (MiB) | UDP answers |\n|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "| %v | %d | %d | %d | %d | %d | %d |\n", s.at, s.rssKiB, s.fds, s.goroutines, s.conns, s.bulk>>20, s.udp)
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*outDir, "soak.md"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*outDir, "soak.svg"), svg(samples), 0o644)
}

// svg draws three small line charts, one per figure, against time.
func svg(samples []sample) []byte {
	const w, h, pad = 720, 170, 40
	series := []struct {
		name string
		val  func(sample) int
	}{
		{"RSS (KiB)", func(s sample) int { return s.rssKiB }},
		{"open descriptors", func(s sample) int { return s.fds }},
		{"goroutines", func(s sample) int { return s.goroutines }},
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h*len(series))
	last := samples[len(samples)-1].at.Seconds()
	for i, se := range series {
		top := i * h
		hi := 1
		for _, s := range samples {
			hi = max(hi, se.val(s))
		}
		hi = hi * 5 / 4
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s (0 to %d)</text>`+"\n", pad, top+16, se.name, hi)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", pad, top+24, w-2*pad, h-48)
		var pts []string
		for _, s := range samples {
			x := pad + int(s.at.Seconds()/max(last, 1)*float64(w-2*pad))
			y := top + 24 + (h - 48) - se.val(s)*(h-48)/hi
			pts = append(pts, fmt.Sprintf("%d,%d", x, y))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="%s"/>`+"\n", strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%d" y="%d">0 s</text><text x="%d" y="%d" text-anchor="end">%.0f s</text>`+"\n", pad, top+h-8, w-pad, top+h-8, last)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func statusField(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}

func scrape(addr, name string) int {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int(f)
		}
	}
	return 0
}

func listenTCP(serve func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

func listenUDP() string {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:n], from)
		}
	}()
	return c.LocalAddr().String()
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitListening(addr string) {
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	log.Fatalf("lbd is not listening on %s", addr)
}

// stream is n bytes of a pseudo-random stream named by seed.
func stream(seed byte, n int) io.Reader {
	r := rand.NewChaCha8([32]byte{seed})
	return io.LimitReader(r, int64(n))
}

var sums sync.Map // seed → SHA-256 of its stream

func sum(seed byte, n int) []byte {
	if v, ok := sums.Load(seed); ok {
		return v.([]byte)
	}
	h := sha256.New()
	io.Copy(h, stream(seed, n))
	s := h.Sum(nil)
	sums.Store(seed, s)
	return s
}
