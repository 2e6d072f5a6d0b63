package l7

import (
	"bufio"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/lbd-lb/lbd/balancer"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// isWebSocket reports a well-formed WebSocket upgrade request (RFC 6455
// §4.1): GET, Upgrade: websocket, Connection naming upgrade, no body.
func isWebSocket(ctx *fasthttp.RequestCtx) bool {
	h := &ctx.Request.Header
	return h.IsGet() && hasToken(h.Peek("Upgrade"), "websocket") &&
		hasToken(h.Peek("Connection"), "upgrade") && h.ContentLength() <= 0
}

// tunnel proxies a WebSocket upgrade: the request goes to a backend on a
// connection of its own (not the keep-alive pool), and once the backend
// answers 101 the client's connection is hijacked and bytes flow both ways
// untouched until either side closes. Routing, auth and rate limits have
// already run, so nothing tunnels past them.
func (p *proxyStage) tunnel(x *exchange) {
	ctx := x.ctx
	r := x.route
	upgrade := append([]byte(nil), ctx.Request.Header.Peek("Upgrade")...)
	p.prepareRequest(x) // hop-by-hop headers go, X-Forwarded-* are set
	// The two hop-by-hop headers that carry the upgrade itself go on.
	ctx.Request.Header.Set("Connection", "Upgrade")
	ctx.Request.Header.SetBytesV("Upgrade", upgrade)

	snap := r.Pool.Snapshot()
	if len(snap.Backends) == 0 {
		r.stats.noBackend.Add(1)
		ctx.Error("no backend available", fasthttp.StatusServiceUnavailable)
		return
	}
	key := balancer.HashKey(x.peer.Addr(), x.peer.Port(), snap.HashPort)
	var conn net.Conn
	var b *pool.Backend
	for attempt := 0; attempt <= x.st.cfg.Retries && x.tried.Len() < balancer.MaxTried; attempt++ {
		if b = x.pick(snap, key); b == nil {
			break
		}
		c, err := net.DialTimeout("tcp", b.Addr.String(), x.st.cfg.ConnectTimeout)
		if err != nil {
			b.SharedStats().ConnectErrors.Add(1)
			r.Pool.ConnectFailed(b)
			continue
		}
		conn = c
		break
	}
	if conn == nil {
		r.stats.backendErrors.Add(1)
		ctx.Error("bad gateway", fasthttp.StatusBadGateway)
		return
	}
	r.Pool.ConnectSucceeded(b)
	x.backend = b.Name

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
	// and its count behind. With no answer to write it always runs it.
	answer := append([]byte(nil), ctx.Response.Header.Header()...)
	ctx.HijackSetNoResponse(true)
	wc := clientConn(ctx.Conn())
	// Should the handler never run (the client went away while an
	// earlier pipelined answer was flushed), the backend connection goes
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
			// fasthttp's hijacked connection does not close on Close:
			// the client is closed here, through lbd's connection, so
			// that the other copy ends and the watchdog forgets it.
			defer wc.Close()
		}
		done := make(chan int64, 1)
		go func() {
			n, err := io.Copy(conn, client)
			if err != nil {
				// The client's side failed or was closed: end the
				// backend's side too, which ends the other copy.
				conn.Close()
			} else if tc, ok := conn.(*net.TCPConn); ok {
				// The client is done sending: pass the half-close on.
				tc.CloseWrite()
			}
			done <- n
		}()
		// br holds whatever the backend sent right after its 101.
		n, _ := io.Copy(client, br)
		stats.BytesToClient.Add(uint64(n))
		// The backend closed: end the client's side too, which ends the
		// copy above.
		if wc != nil {
			wc.Close()
		} else {
			client.Close()
		}
		stats.BytesToBackend.Add(uint64(<-done))
	})
}
