package l4

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkPump measures bytes carried through one proxied TCP connection
// on loopback. The small-message sub-benchmarks send a message and read its
// echo back: the copy path, one read and one write per direction. The bulk
// sub-benchmark streams one way into a backend that discards what it reads:
// reads fill the copy buffer at once, so the transfer goes by splice.
func BenchmarkPump(b *testing.B) {
	for _, size := range []int{64, 1 << 10} {
		b.Run(fmt.Sprintf("small-%dB", size), func(b *testing.B) { benchEcho(b, size) })
	}
	b.Run("bulk-256KiB", func(b *testing.B) { benchBulk(b, 256<<10) })
}

// benchEcho: each op writes size bytes and reads them back through the proxy.
func benchEcho(b *testing.B, size int) {
	e := testEngine(b, Options{Loops: 1})
	backend := listen(b, "tcp", "127.0.0.1:0", echo)
	ln := proxyTo(b, e, testPool(b, e.Loops(), "wrr", backend), nil)
	c := dial(b, ln.Addr())
	c.SetDeadline(time.Time{})
	c.SetNoDelay(true)
	msg := make([]byte, size)
	buf := make([]byte, size)
	if _, err := c.Write(msg); err != nil { // a first round trip outside the timer
		b.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(size))
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	spliced, copied := e.TotalSpliced()
	if copied == 0 {
		b.Fatalf("no byte went through the copy path (spliced %d)", spliced)
	}
}

// benchBulk: each op writes chunk bytes; the backend counts what it reads
// until the client half-closes and answers with the count, which must be
// every byte written.
func benchBulk(b *testing.B, chunk int) {
	e := testEngine(b, Options{Loops: 1})
	backend := listen(b, "tcp", "127.0.0.1:0", func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		var out [8]byte
		binary.BigEndian.PutUint64(out[:], uint64(n))
		c.Write(out[:])
	})
	ln := proxyTo(b, e, testPool(b, e.Loops(), "wrr", backend), nil)
	c := dial(b, ln.Addr())
	c.SetDeadline(time.Time{})
	data := make([]byte, chunk)
	b.SetBytes(int64(chunk))
	// A plain loop rather than b.Loop, so that the timer also covers the
	// drain: the bytes still in the socket buffers when the last write
	// returns.
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(data); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(time.Minute))
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if n, want := binary.BigEndian.Uint64(got[:]), uint64(b.N)*uint64(chunk); n != want {
		b.Fatalf("backend read %d bytes, want %d", n, want)
	}
	spliced, copied := e.TotalSpliced()
	if spliced == 0 {
		b.Fatalf("no byte was spliced (copied %d)", copied)
	}
	b.ReportMetric(float64(spliced)/float64(spliced+copied)*100, "%spliced")
}

// BenchmarkAccept measures connections through the proxy: each op dials
// the proxy, makes one round trip of one byte to an echo backend and
// closes.
func BenchmarkAccept(b *testing.B) {
	e := testEngine(b, Options{Loops: 1})
	backend := listen(b, "tcp", "127.0.0.1:0", echo)
	ln := proxyTo(b, e, testPool(b, e.Loops(), "wrr", backend), nil)
	to := ln.Addr().String()
	var one [1]byte
	conns := 0
	b.ResetTimer()
	for b.Loop() {
		c, err := net.DialTimeout("tcp", to, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte{'x'}); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one[:]); err != nil || one[0] != 'x' {
			b.Fatalf("echo %q, %v", one[:], err)
		}
		c.Close()
		conns++
	}
	b.ReportMetric(float64(conns)/b.Elapsed().Seconds(), "conns/s")
}
