package healthcheck

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"
)

// The cost of one probe over loopback, both ends in this process. The
// whole-process figure at 1000 targets is bench/healthcheck's.
func BenchmarkProbe(b *testing.B) {
	for _, tc := range []struct {
		typ      string
		response string
	}{
		{TypeTCP, ""},
		{TypeHTTP, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"},
	} {
		b.Run(tc.typ, func(b *testing.B) {
			addr := rawServer(b, func(c net.Conn) {
				if tc.response != "" {
					readRequest(c)
					c.Write([]byte(tc.response))
				}
			})
			p := newProber(Config{Type: tc.typ}.withDefaults())
			b.ReportAllocs()
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if err := p.Probe(ctx, addr); err != nil {
					b.Fatal(err)
				}
				cancel()
			}
		})
	}
}

func BenchmarkReadResponse(b *testing.B) {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nDate: Fri, 27 Nov 2026 08:00:00 GMT\r\n\r\nok")
	buf := make([]byte, respHeadMax)
	r := bytes.NewReader(resp)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(resp)
		if _, _, err := readResponse(r, buf, respBodyMax); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTracker(b *testing.B) {
	tr := newTracker(2, 3, State{Up: true, Known: true})
	for i := 0; b.Loop(); i++ {
		var err error
		if i%4 == 0 {
			err = errScripted
		}
		tr.observe(err)
	}
}
