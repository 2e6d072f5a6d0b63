package l7

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/lbd-lb/lbd/balancer"
	"github.com/lbd-lb/lbd/pkg/l7/auth"
	"github.com/lbd-lb/lbd/pkg/l7/ratelimit"
)

// exchange is one request on its way through the chain.
type exchange struct {
	ctx    *fasthttp.RequestCtx
	st     *state
	route  *liveRoute // set by routeStage
	claims *auth.Claims
	peer   netip.AddrPort
	// now is the request's time for auth and rate limits, read on first
	// use (see clock): most routes need none.
	now time.Time
	// backend is the backend that answered, for the access log.
	backend string
	// upgrade marks a WebSocket upgrade, which proxyStage tunnels.
	upgrade bool
	// headers are the headers of headerSet the request carries, found by
	// the framing stage; proxyStage removes only those.
	headers headerSet
	// tried are the backends proxyStage tried.
	tried balancer.Tried
}

// exchanges are reused: an exchange passes through the chain's interface
// calls, so one made per request would be a heap allocation per request.
var exchanges = sync.Pool{New: func() any { return new(exchange) }}

func putExchange(x *exchange) {
	*x = exchange{}
	exchanges.Put(x)
}

// handler is one stage of the chain. A stage either answers the request
// itself or passes it on to the next stage.
type handler interface {
	serve(x *exchange)
}

// newChain builds the chain in its one fixed order.
func newChain(s *Server) handler {
	return framingStage{next: routeStage{next: authStage{next: limitStage{next: &proxyStage{s: s}}}}}
}

// serveHTTP is fasthttp's handler: it runs the chain under the current state
// and records the answer.
func (s *Server) serveHTTP(ctx *fasthttp.RequestCtx) {
	if c := clientConn(ctx.Conn()); c != nil {
		c.busy()
	}
	st := s.state.Load()
	start := monotonic()
	noteNow(int64(start))
	x := exchanges.Get().(*exchange)
	defer putExchange(x)
	*x = exchange{ctx: ctx, st: st, peer: peerOf(ctx)}
	st.chain.serve(x)
	if s.stopping.Load() && !ctx.Hijacked() {
		// The server is on its way out: no next request on this
		// connection (fasthttp itself says so only until Shutdown's
		// time is up).
		ctx.SetConnectionClose()
	}
	took := monotonic() - start
	if x.route != nil {
		x.route.stats.observe(ctx.Response.StatusCode(), took)
	}
	if al := st.cfg.AccessLog; al != nil {
		route := ""
		if x.route != nil {
			route = x.route.Name
		}
		al.LogAttrs(context.Background(), slog.LevelInfo, "access",
			slog.String("listener", st.cfg.Name),
			slog.String("method", string(ctx.Method())),
			slog.String("host", string(ctx.Host())),
			slog.String("path", string(ctx.Path())),
			slog.String("route", route),
			slog.Int("status", ctx.Response.StatusCode()),
			slog.Int("bytes", bodyLen(&ctx.Response)),
			slog.Duration("duration", took),
			slog.String("backend", x.backend),
			slog.String("client", x.peer.String()),
		)
	}
}

// clockBase anchors monotonic.
var clockBase = time.Now()

// monotonic reads the monotonic clock alone: one clock read where
// time.Now takes two.
func monotonic() time.Duration { return time.Since(clockBase) }

// clock is the request's time for auth and rate limits, read once.
func (x *exchange) clock() time.Time {
	if x.now.IsZero() {
		x.now = x.st.now()
	}
	return x.now
}

func peerOf(ctx *fasthttp.RequestCtx) netip.AddrPort {
	if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// framingStage refuses requests whose framing another parser could read
// differently, and Upgrades, before anything else looks at them. fasthttp
// forwards Content-Length together with Transfer-Encoding, and obs-fold
// lines, so the raw header block is checked here. Every refusal closes the
// connection, so bytes the client sent after the request are never read as
// another request.
type framingStage struct{ next handler }

func (f framingStage) serve(x *exchange) {
	h := &x.ctx.Request.Header
	reason, seen := badFraming(h.RawHeaders())
	if reason != "" {
		x.st.reject(x, reasonFraming)
		x.ctx.Error("bad request: "+reason, fasthttp.StatusBadRequest)
		x.ctx.SetConnectionClose()
		return
	}
	x.headers = seen
	if seen&hdrTransferEncoding != 0 {
		// A chunked body may end in trailer fields, which fasthttp may
		// merge into the header: assume every header is there.
		x.headers = hdrAll | seen&hdrUnderscore
	}
	if up := h.Peek("Upgrade"); len(up) > 0 {
		// WebSocket goes on through routing, auth and rate limits, then
		// tunnels. h2c would tunnel a whole HTTP/2 connection past
		// routing; other upgrades are refused rather than half-proxied.
		if !hasToken(up, "h2c") && isWebSocket(x.ctx) {
			x.upgrade = true
			f.next.serve(x)
			return
		}
		x.st.reject(x, reasonUpgrade)
		if hasToken(up, "h2c") {
			x.ctx.Error("h2c upgrade refused", fasthttp.StatusBadRequest)
		} else {
			x.ctx.Error("upgrade not supported", fasthttp.StatusNotImplemented)
		}
		x.ctx.SetConnectionClose()
		return
	}
	f.next.serve(x)
}

// badFraming checks the raw header block (the bytes after the request line,
// up to and including the empty line) and returns why it is refused, or "",
// and the headers of headerSet that the block holds.
// It refuses obs-fold lines, bare LF line ends, Content-Length together with
// Transfer-Encoding, more than one Content-Length or Transfer-Encoding line,
// and a Transfer-Encoding other than exactly "chunked".
func badFraming(raw []byte) (reason string, seen headerSet) {
	var cl, te int
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			return "unterminated header line", seen
		}
		if i == 0 || raw[i-1] != '\r' {
			return "bare LF", seen
		}
		line := raw[:i-1]
		raw = raw[i+1:]
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			return "obs-fold", seen
		}
		if bytes.IndexByte(line, '\r') >= 0 {
			return "bare CR", seen
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			return "malformed header line", seen
		}
		name := line[:colon]
		if !isToken(name) {
			// RFC 9112 section 5.1: no space before the colon. A name
			// another parser would trim must not slip past headerBit.
			return "malformed header name", seen
		}
		bit := headerBit(name)
		seen |= bit
		if bytes.IndexByte(name, '_') >= 0 {
			seen |= hdrUnderscore
			if dashedBit(name) != 0 {
				// A backend behind CGI-style header folding would read
				// it as the header it imitates.
				return "underscore in a hop-by-hop or forwarding header name", seen
			}
		}
		switch bit {
		case hdrContentLength:
			cl++
		case hdrTransferEncoding:
			te++
			if !asciiEqualFold(bytes.Trim(line[colon+1:], " \t"), "chunked") {
				return "unsupported transfer-encoding", seen
			}
		}
	}
	switch {
	case cl > 0 && te > 0:
		return "content-length with transfer-encoding", seen
	case cl > 1:
		return "duplicate content-length", seen
	case te > 1:
		return "duplicate transfer-encoding", seen
	}
	return "", seen
}

// tchar marks the bytes of an RFC 9110 token.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tchar[c] {
			return false
		}
	}
	return true
}

// routeStage picks the route: 404 when none matches.
type routeStage struct{ next handler }

func (r routeStage) serve(x *exchange) {
	h := &x.ctx.Request.Header
	// Path() is the normalised path, and having parsed the URI makes
	// fasthttp forward that same normalised path: the backend acts on
	// exactly the path that was routed.
	i := x.st.table.Match(h.Host(), x.ctx.Path(), h.PeekBytes)
	if i < 0 {
		x.st.reject(x, reasonNoRoute)
		x.ctx.Error("no route", fasthttp.StatusNotFound)
		return
	}
	x.route = &x.st.routes[i]
	r.next.serve(x)
}

// authStage verifies the bearer token of routes with an auth block: 401 with
// auth.Challenge on any failure. The forward_claims headers are always
// stripped from the client's request first, then set from the claims.
type authStage struct{ next handler }

func (a authStage) serve(x *exchange) {
	v := x.route.Auth
	if v == nil {
		a.next.serve(x)
		return
	}
	h := &x.ctx.Request.Header
	fwd := v.Forwarded()
	if x.headers&hdrUnderscore != 0 && len(fwd) > 0 {
		dropDashed(h, fwd)
	}
	for _, f := range fwd {
		h.Del(f.Header)
	}
	// Should a claim be forwarded under a header the proxy also rewrites,
	// that header is handled as if the client sent it.
	x.headers |= x.route.forwardBits
	claims, err := v.Verify(string(h.Peek("Authorization")), x.clock())
	if err != nil {
		x.st.reject(x, reasonAuth)
		x.ctx.Error("unauthorized", fasthttp.StatusUnauthorized) // resets the headers
		x.ctx.Response.Header.Set("WWW-Authenticate", auth.Challenge)
		return
	}
	x.claims = claims
	for _, f := range fwd {
		if val, ok := claims.String(f.Claim); ok {
			h.Set(f.Header, val)
		}
	}
	a.next.serve(x)
}

// dropDashed deletes the client's headers that read as a forward_claims
// header once their underscores are read as dashes (X_User_Id for
// X-User-Id), which a CGI-style backend would take for the claim.
func dropDashed(h *fasthttp.RequestHeader, fwd []auth.ForwardClaim) {
	var drop [][]byte
	for k := range h.All() {
		if bytes.IndexByte(k, '_') < 0 {
			continue
		}
		for _, f := range fwd {
			if dashedEqualFold(k, f.Header) {
				drop = append(drop, append([]byte(nil), k...))
				break
			}
		}
	}
	for _, k := range drop {
		h.DelBytes(k)
	}
}

// limitStage applies the route's rate limit: 429 with Retry-After.
//
// Keys live in separate spaces by prefix, so a header value can never
// collide with a client address. A header or claim key that the request
// does not carry (or, for a claim, a route without auth) uses the client
// IP instead: leaving the header out must not escape the limit.
type limitStage struct{ next handler }

func (l limitStage) serve(x *exchange) {
	lim := x.route.Limit
	if lim == nil {
		l.next.serve(x)
		return
	}
	ok, after := lim.Allow(limitKey(x), x.clock())
	if !ok {
		x.st.reject(x, reasonRateLimit)
		secs := int64((after + time.Second - 1) / time.Second)
		if secs < 1 {
			secs = 1
		}
		x.ctx.Error("too many requests", fasthttp.StatusTooManyRequests) // resets the headers
		x.ctx.Response.Header.Set("Retry-After", strconv.FormatInt(secs, 10))
		return
	}
	l.next.serve(x)
}

func limitKey(x *exchange) string {
	k := x.route.LimitKey
	switch k.Kind {
	case ratelimit.KeyRoute:
		return "r"
	case ratelimit.KeyHeader:
		if v := x.ctx.Request.Header.Peek(k.Name); len(v) > 0 {
			return "h:" + string(v)
		}
	case ratelimit.KeyClaim:
		if x.claims != nil {
			if v, ok := x.claims.String(k.Name); ok {
				return "c:" + v
			}
		}
	}
	return "ip:" + x.st.clientIP(x).String()
}

// clientIP is the client's address after trusted_proxies: the peer, or, when
// the peer is trusted, the rightmost X-Forwarded-For address that is not.
func (st *state) clientIP(x *exchange) netip.Addr {
	ip := x.peer.Addr()
	if !st.isTrusted(ip) {
		return ip
	}
	var vals [][]byte
	for k, v := range x.ctx.Request.Header.All() {
		if asciiEqualFold(k, "X-Forwarded-For") {
			vals = append(vals, v)
		}
	}
	for i := len(vals) - 1; i >= 0; i-- {
		parts := bytes.Split(vals[i], []byte(","))
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(string(bytes.TrimSpace(parts[j])))
			if err != nil {
				return ip
			}
			a = a.Unmap()
			ip = a
			if !st.isTrusted(a) {
				return a
			}
		}
	}
	return ip
}

func (st *state) isTrusted(a netip.Addr) bool {
	for _, p := range st.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// asciiEqualFold compares b and s ignoring ASCII case.
func asciiEqualFold(b []byte, s string) bool { return equalFold(b, s, false) }

// equalFold compares b and s ignoring ASCII case; with dashed, an
// underscore in b counts as a dash.
func equalFold(b []byte, s string, dashed bool) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if dashed && c == '_' {
			c = '-'
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated list v holds tok, ignoring
// case and spaces.
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var part []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			part, v = v[:i], v[i+1:]
		} else {
			part, v = v, nil
		}
		if asciiEqualFold(bytes.TrimSpace(part), tok) {
			return true
		}
	}
	return false
}

// bodyLen is the response body's length without reading a streamed body
// (an event stream may never end): for a stream, its Content-Length, or -1
// when unknown.
func bodyLen(r *fasthttp.Response) int {
	if r.IsBodyStream() {
		return r.Header.ContentLength()
	}
	return len(r.Body())
}
