package l7

import (
	"bufio"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/lbd-lb/lbd/pkg/pool"
)

// isWebSocket reports a well-formed WebSocket upgrade request (RFC 6455
// §4.1): GET, Upgrade: websocket, Connection naming upgrade, no body.
// fasthttp's Peek("Connection") is the whole list the client sent
// (TestFasthttpConnectionHeaderValue).
func isWebSocket(ctx *fasthttp.RequestCtx) bool {
	h := &ctx.Request.Header
	return h.IsGet() && hasToken(h.Peek("Upgrade"), "websocket") &&
		hasToken(h.Peek("Connection"), "upgrade") && h.ContentLength() <= 0
}

// tunnel proxies a WebSocket upgrade: the request goes to a backend on a
// connection of its own (not the keep-alive pool), and once the backend
// answers 101 the client's connection is hijacked and bytes flow both ways
// untouched until both sides are done: a half-close passes through, either
// way. Routing, auth and rate limits have
// already run, so nothing tunnels past them.
func (p *proxyStage) tunnel(x *exchange) {
	ctx := x.ctx
	r := x.route
	upgrade := append([]byte(nil), ctx.Request.Header.Peek("Upgrade")...)
	p.prepareRequest(x) // hop-by-hop headers go, X-Forwarded-* are set
	// The two hop-by-hop headers that carry the upgrade itself go on.
	ctx.Request.Header.Set("Connection", "Upgrade")
	ctx.Request.Header.SetBytesV("Upgrade", upgrade)

	snap := x.backends()
	if snap == nil {
		return
	}
	// Picked, dialled and retried as a proxied request is (tryBackends),
	// but on a connection of its own.
	var conn net.Conn
	var b *pool.Backend
	if done, _ := x.tryBackends(snap, func(cand *pool.Backend) (err error) {
		conn, err = dialBackend(cand.Addr.String(), x.st.cfg.ConnectTimeout)
		b = cand
		return err
	}); !done {
		r.stats.backendErrors.Add(1)
		ctx.Error("bad gateway", fasthttp.StatusBadGateway)
		return
	}

	// The handshake is bounded by the read and write timeouts.
	conn.SetDeadline(time.Now().Add(x.st.cfg.ReadTimeout))
	bw := bufio.NewWriter(conn)
	br := bufio.NewReader(conn)
	var head fasthttp.ResponseHeader
	err := ctx.Request.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = head.Read(br)
	}
	if err != nil || head.StatusCode() != fasthttp.StatusSwitchingProtocols {
		// The backend refused or failed the upgrade: say so, and never
		// reuse the connection.
		conn.Close()
		r.stats.backendErrors.Add(1)
		code := fasthttp.StatusBadGateway
		if err == nil && head.StatusCode() >= 400 {
			code = head.StatusCode()
		}
		ctx.Error("upgrade failed", code)
		ctx.SetConnectionClose()
		return
	}
	conn.SetDeadline(time.Time{})
	head.CopyTo(&ctx.Response.Header)
	// The backend's hop-by-hop headers, and those its Connection names,
	// stay on its side; the two that carry the upgrade are set again.
	stripHop(&ctx.Response.Header, hdrAll, nil, nil)
	ctx.Response.Header.Set("Connection", "Upgrade")
	ctx.Response.Header.SetBytesV("Upgrade", upgrade)
	ctx.SetStatusCode(fasthttp.StatusSwitchingProtocols)

	// The 101 is written from the hijack handler (HijackSetNoResponse):
	// fasthttp skips a hijack handler after writing the answer of a
	// request that closes its connection (Connection: close, HTTP/1.0,
	// a server shutting down), which would leave the backend connection
	// and its count behind. With no answer to write it always runs it
	// (TestFasthttpHijackNoResponse).
	answer := append([]byte(nil), ctx.Response.Header.Header()...)
	ctx.HijackSetNoResponse(true)
	wc := clientConn(ctx.Conn())
	// Should the handler never run (the client went away while an
	// earlier pipelined answer was flushed:
	// TestFasthttpHijackAfterPipelinedAnswer), the backend connection goes
	// after the read timeout.
	var claimed atomic.Bool // by the handler, or by the timer
	orphan := time.AfterFunc(x.st.cfg.ReadTimeout, func() {
		if claimed.CompareAndSwap(false, true) {
			conn.Close()
		}
	})
	stats := b.SharedStats()
	ctx.Hijack(func(client net.Conn) {
		orphan.Stop()
		defer conn.Close()
		if !claimed.CompareAndSwap(false, true) {
			return // too late: the backend connection is gone
		}
		// The answer goes out under the write timeout (the connection is
		// busy, not yet a tunnel).
		if _, err := client.Write(answer); err != nil {
			return
		}
		stats.Connections.Add(1)
		b.Active.Add(1)
		defer b.Active.Add(-1)
		if wc != nil {
			// From here on the tunnel timeout bounds the connection, and a
			// cut or a shutdown closes both sides.
			wc.tunnel(conn)
			// fasthttp's hijacked connection does not close on Close
			// (TestFasthttpHijackedConn):
			// the client is closed here, through lbd's connection, so
			// that the other copy ends and the watchdog forgets it.
			defer wc.Close()
		}
		// Each copy passes the end of its side's bytes on as a half-close,
		// and the other direction goes on: a client that half-closed
		// still gets the rest of the backend's answer, a backend that
		// half-closed still gets the rest of the client's bytes. A copy
		// that fails (a reset, a cut, a close) ends both sides at once.
		// The tunnel ends when both copies have; the tunnel timeout bounds
		// a side that neither sends nor closes after the other is done.
		clientSide := client
		if wc != nil {
			clientSide = wc.Conn
		}
		done := make(chan int64, 1)
		go func() {
			n, err := io.Copy(conn, client)
			if err != nil || !closeWrite(conn) {
				// End the backend's side, which ends the other copy.
				conn.Close()
			}
			done <- n
		}()
		// br holds whatever the backend sent right after its 101
		// (TestFasthttpUpgradeResponseHeader).
		n, err := io.Copy(client, br)
		stats.BytesToClient.Add(uint64(n))
		if err != nil || !closeWrite(clientSide) {
			// End the client's side too, which ends the copy above.
			if wc != nil {
				wc.Close()
			} else {
				client.Close()
			}
		}
		stats.BytesToBackend.Add(uint64(<-done))
	})
}

// closeWrite half-closes c, and reports whether it could: how a tunnel
// passes on that one side is done sending.
func closeWrite(c net.Conn) bool {
	cw, ok := c.(interface{ CloseWrite() error })
	return ok && cw.CloseWrite() == nil
}
