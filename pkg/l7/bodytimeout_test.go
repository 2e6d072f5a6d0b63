package l7

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestBodyTimeoutOnlyForBodies: bodyTimeout sets a body deadline for a
// request with a body and none for one without (whose length fasthttp
// reads as -2), which would cost a clock read and a deadline per request.
func TestBodyTimeoutOnlyForBodies(t *testing.T) {
	in := make(chan []string, 1)
	var conn atomic.Pointer[recConn]
	s := fhServer(func(ctx *fasthttp.RequestCtx) {
		if ctx.Request.IsBodyStream() {
			io.Copy(io.Discard, ctx.Request.BodyStream())
		}
		in <- conn.Load().deadlineCalls()
	})
	s.HeaderReceived = bodyTimeout(time.Hour)
	addr := fhServe(t, s, func(ln net.Listener) net.Listener {
		rl := newRecListener(ln)
		rl.wrap = func(c *recConn) net.Conn { conn.Store(c); return c }
		return rl
	})
	c, br := fhDial(t, addr)
	for _, tc := range []struct {
		req  string
		want int
	}{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0},
		{"POST / HTTP/1.1\r\nHost: x\r\n\r\n", 0},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 0},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 1},
		{"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 2},
	} {
		io.WriteString(c, tc.req)
		if got := within(t, in, "the handler"); len(got) != tc.want {
			t.Fatalf("%q: deadlines %q, want %d body deadline(s) in all", tc.req, got, tc.want)
		}
		fhRead(t, br)
	}
}
