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
	"github.com/lbd-lb/lbd/internal/ascii"
	"github.com/lbd-lb/lbd/pkg/l7/auth"
	"github.com/lbd-lb/lbd/pkg/l7/ratelimit"
	"github.com/lbd-lb/lbd/pkg/l7/target"
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
	// start is when the request reached the chain.
	start time.Duration
	// expecting marks a run of the chain for Expect: 100-continue, which
	// stops before the proxy stage; passed is set if it got there.
	expecting, passed bool
	// target is the normalised request-target (path, then "?query" when
	// there is one): what is routed, limited, logged and forwarded, byte
	// for byte. pathLen is the length of its path.
	target  []byte
	pathLen int
	// auths is the number of Authorization headers.
	auths int
	// body passes a streamed request body on to the backend.
	body bodyReader
}

// path is the normalised path of the request: the one routed and sent.
func (x *exchange) path() []byte { return x.target[:x.pathLen] }

// exchanges are reused: an exchange passes through the chain's interface
// calls, so one made per request would be a heap allocation per request.
var exchanges = sync.Pool{New: func() any { return new(exchange) }}

func putExchange(x *exchange) {
	// The target's buffer stays with the exchange, so that a request
	// allocates none.
	*x = exchange{target: x.target[:0]}
	exchanges.Put(x)
}

// handler is one stage of the chain. A stage either answers the request
// itself or passes it on to the next stage.
type handler interface {
	serve(x *exchange)
}

// newChain builds the chain in its one fixed order.
func newChain(proxy *proxyStage) handler {
	return framingStage{next: routeStage{next: authStage{next: limitStage{next: proxy}}}}
}

// serveHTTP is fasthttp's handler: it runs the chain under the current state
// and records the answer.
func (s *Server) serveHTTP(ctx *fasthttp.RequestCtx) {
	c := clientConn(ctx.Conn())
	if c != nil && !ctx.Request.IsBodyStream() {
		// With a body still to come, the client is sending, bounded by
		// the body's deadline, until bodyReader has it all.
		c.busy()
	}
	var x *exchange
	if c != nil && c.pending != nil {
		// The request passed the chain in expect, before its body.
		x, c.pending = c.pending, nil
		x.expecting = false
		defer putExchange(x)
		x.st.proxy.serve(x)
	} else {
		x = exchanges.Get().(*exchange)
		defer putExchange(x)
		x.ctx, x.st, x.peer, x.start = ctx, s.state.Load(), peerOf(ctx), monotonic()
		noteNow(int64(x.start))
		x.st.chain.serve(x)
	}
	s.finish(x)
}

// expect is fasthttp's ExpectHandler for a request with Expect:
// 100-continue: the chain runs up to the proxy stage on the header alone.
// A request that passes gets 100 Continue and goes on in serveHTTP once
// its body comes; any other is answered here, and its body never read
// (pinned by TestFasthttpExpectHandler).
func (s *Server) expect(ctx *fasthttp.RequestCtx) int {
	c := clientConn(ctx.Conn())
	if c == nil {
		return fasthttp.StatusContinue // serveHTTP decides on everything
	}
	x := exchanges.Get().(*exchange)
	x.ctx, x.st, x.peer, x.start = ctx, s.state.Load(), peerOf(ctx), monotonic()
	noteNow(int64(x.start))
	x.expecting = true
	x.st.chain.serve(x)
	if x.passed {
		c.pending = x
		return fasthttp.StatusContinue
	}
	// The client may send its body without waiting for 100 Continue (RFC
	// 9110 section 10.1.1 lets it): the connection closes lingering, so
	// that this answer is not lost to a reset.
	c.linger = true
	// fasthttp writes the answer the chain left in ctx.Response, with
	// this status, and closes the connection (TestFasthttpExpectHandler).
	s.finish(x)
	putExchange(x)
	return ctx.Response.StatusCode()
}

// finish records the answer to x: the route's counters and the access log.
func (s *Server) finish(x *exchange) {
	ctx, st, start := x.ctx, x.st, x.start
	if ctx.Request.IsBodyStream() && x.body.src == nil {
		// Answered without its body being read (a refusal, a 401): the
		// connection cannot go on, and must not reset the answer. Every
		// request with Content-Length, 0 included, or chunked has a
		// stream (TestFasthttpBodyStreamOnlyWithBody).
		x.lingerClose()
	}
	if s.stopping.Load() && !ctx.Hijacked() {
		// The server is on its way out: no next request on this
		// connection (fasthttp itself says so only until Shutdown's
		// time is up: TestFasthttpCloseOnShutdown).
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
			slog.String("path", string(x.path())),
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
// passes on Content-Length together with Transfer-Encoding, and obs-fold
// lines, so the raw header block is checked here (TestFasthttpRawRequest). It also fixes the one
// request-target and the one Host that every later stage decides on and
// the backend receives (see requestTarget). Every refusal closes the
// connection, so bytes the client sent after the request are never read as
// another request.
type framingStage struct{ next handler }

func (f framingStage) serve(x *exchange) {
	h := &x.ctx.Request.Header
	if h.IsConnect() {
		// A tunnel to wherever the client names is no business of a
		// reverse proxy (RFC 9110 section 9.3.6).
		f.refuse(x, "CONNECT is not supported", fasthttp.StatusMethodNotAllowed)
		return
	}
	if p := h.Protocol(); string(p) != "HTTP/1.1" && string(p) != "HTTP/1.0" {
		// RFC 9110 section 15.6.6; fasthttp would forward "HTTP/1.2" as
		// such (TestFasthttpRawRequest).
		f.refuse(x, "HTTP version not supported", fasthttp.StatusHTTPVersionNotSupported)
		return
	}
	sc := scanHeader(h.RawHeaders())
	if sc.reason != "" {
		f.refuse(x, "bad request: "+sc.reason, fasthttp.StatusBadRequest)
		return
	}
	// Trailer fields of a chunked body never join the header: the body
	// is streamed and its trailer section dropped (bodyReader), so the
	// scan saw every header the request will carry.
	x.headers = sc.seen
	x.auths = sc.auths
	if reason := x.requestTarget(); reason != "" {
		f.refuse(x, "bad request: "+reason, fasthttp.StatusBadRequest)
		return
	}
	if name := x.st.repeatedRouteHeader(h.RawHeaders()); name != "" {
		// Routing reads the first value and a backend may read another.
		f.refuse(x, "bad request: repeated "+name+" header", fasthttp.StatusBadRequest)
		return
	}
	if cl := h.ContentLength(); cl > x.st.cfg.MaxBodyBytes {
		// The body is streamed, so its declared length is checked here,
		// before anything of it is read.
		x.st.owner.reject(reasonBodyTooLarge)
		x.ctx.Error("request body too large", fasthttp.StatusRequestEntityTooLarge)
		x.ctx.SetConnectionClose()
		return
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

// refuse answers a request the framing stage will not pass on, and closes
// its connection.
func (framingStage) refuse(x *exchange, msg string, code int) {
	x.st.reject(x, reasonFraming)
	x.ctx.Error(msg, code)
	x.ctx.SetConnectionClose()
}

// requestTarget sets x.target to the normalised request-target, the only
// one routed and forwarded, and makes the request carry it and its Host
// header to the backend unchanged; it returns why the request is refused,
// or "". An absolute-form target must name the Host header's authority,
// and is forwarded in origin-form; userinfo is refused everywhere, since a
// client library would turn it into an Authorization header.
func (x *exchange) requestTarget() string {
	req := &x.ctx.Request
	h := &req.Header
	host := h.Host()
	if len(host) == 0 {
		// RFC 9112 section 3.2: a request without Host gets 400; routing
		// needs one too.
		return "missing Host"
	}
	if !target.ValidHost(host) {
		return "malformed Host"
	}
	raw := h.RequestURI()
	form, authority, rest, err := target.Split(raw)
	if err != nil {
		return err.Error()
	}
	switch form {
	case target.AbsoluteForm:
		if !ascii.EqualFold(authority, host) {
			return "the target's authority differs from Host"
		}
	case target.AsteriskForm:
		if !h.IsOptions() {
			return "* is a target for OPTIONS only"
		}
	}
	if form == target.AsteriskForm {
		x.target, x.pathLen = append(x.target[:0], '*'), 1
	} else if x.target, x.pathLen, err = target.Normalize(x.target[:0], rest, x.st.pathMode); err != nil {
		return err.Error()
	}
	if !bytes.Equal(x.target, raw) {
		req.SetRequestURIBytes(x.target)
	} else {
		// fasthttp writes the target it parsed, which is raw itself
		// only with its own normalising off
		// (TestFasthttpRequestWriteAsGiven).
		req.URI().DisablePathNormalizing = true
	}
	// Written as they are: fasthttp would otherwise derive Host from the
	// target it parses (TestFasthttpRequestWriteAsGiven).
	req.UseHostHeader = true
	return ""
}

// repeatedRouteHeader returns the name of a header that some route
// matches on and that raw holds more than once, or "".
func (st *state) repeatedRouteHeader(raw []byte) string {
	if len(st.routeHeaders) == 0 {
		return ""
	}
	var counts [maxRouteHeaders]uint8
	for line := range headerLines(raw) {
		name, _, _ := bytes.Cut(line, []byte(":"))
		for i, n := range st.routeHeaders {
			// An underscore twin counts: a CGI-style backend folds it
			// into the same header.
			if dashedEqualFold(name, n) {
				if counts[i]++; counts[i] > 1 {
					return n
				}
			}
		}
	}
	return ""
}

// headerLines yields the lines of a raw header block without their CRLF,
// the empty last one excluded. The block has passed scanHeader.
func headerLines(raw []byte) func(yield func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(raw) > 0 {
			i := bytes.IndexByte(raw, '\n')
			if i < 0 {
				return
			}
			line := raw[:i]
			raw = raw[i+1:]
			if len(line) > 0 && line[len(line)-1] == '\r' {
				line = line[:len(line)-1]
			}
			if len(line) > 0 && !yield(line) {
				return
			}
		}
	}
}

// headerScan is what scanHeader found in a raw header block.
type headerScan struct {
	// reason is why the block is refused, or "".
	reason string
	// seen are the headers of headerSet the block holds.
	seen headerSet
	// auths counts the Authorization lines.
	auths int
}

// scanHeader checks the raw header block (the bytes after the request
// line, up to and including the empty line) and records which headers of
// headerSet it holds. It refuses obs-fold lines, bare LF line ends,
// Content-Length together with Transfer-Encoding, more than one
// Content-Length or Transfer-Encoding line, a Transfer-Encoding other than
// exactly "chunked", header names that are not tokens, and underscore
// imitations of the headers of headerSet.
func scanHeader(raw []byte) (sc headerScan) {
	var cl, te int
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			sc.reason = "unterminated header line"
			return sc
		}
		if i == 0 || raw[i-1] != '\r' {
			sc.reason = "bare LF"
			return sc
		}
		line := raw[:i-1]
		raw = raw[i+1:]
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			sc.reason = "obs-fold"
			return sc
		}
		if bytes.IndexByte(line, '\r') >= 0 {
			sc.reason = "bare CR"
			return sc
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			sc.reason = "malformed header line"
			return sc
		}
		name := line[:colon]
		if !ascii.IsToken(name) {
			// RFC 9112 section 5.1: no space before the colon. A name
			// another parser would trim must not slip past headerBit.
			sc.reason = "malformed header name"
			return sc
		}
		bit := headerBit(name)
		sc.seen |= bit
		if bytes.IndexByte(name, '_') >= 0 {
			sc.seen |= hdrUnderscore
			if dashedBit(name) != 0 {
				// A backend behind CGI-style header folding would read
				// it as the header it imitates.
				sc.reason = "underscore in a hop-by-hop or forwarding header name"
				return sc
			}
		}
		switch bit {
		case hdrContentLength:
			cl++
		case hdrTransferEncoding:
			te++
			if !ascii.EqualFold(bytes.Trim(line[colon+1:], " \t"), "chunked") {
				sc.reason = "unsupported transfer-encoding"
				return sc
			}
		case hdrAuthorization:
			sc.auths++
		}
	}
	switch {
	case cl > 0 && te > 0:
		sc.reason = "content-length with transfer-encoding"
	case cl > 1:
		sc.reason = "duplicate content-length"
	case te > 1:
		sc.reason = "duplicate transfer-encoding"
	}
	return sc
}

// routeStage picks the route: 404 when none matches.
type routeStage struct{ next handler }

func (r routeStage) serve(x *exchange) {
	h := &x.ctx.Request.Header
	// The path and Host routed here are the ones the backend receives,
	// byte for byte (framingStage).
	i := x.st.table.Match(h.Host(), x.path(), h.PeekBytes)
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
		// Another route of the listener forwards claims in these headers,
		// maybe to the same backend: here nobody vouches for them.
		if len(x.st.claimHeaders) > 0 {
			h := &x.ctx.Request.Header
			if x.headers&hdrUnderscore != 0 {
				dropDashed(h, x.st.claimHeaders)
			}
			for _, f := range x.st.claimHeaders {
				h.Del(f.Header)
			}
		}
		a.next.serve(x)
		return
	}
	h := &x.ctx.Request.Header
	if x.auths > 1 {
		// Only one token is verified, and a backend might read another.
		x.st.reject(x, reasonAuth)
		x.ctx.Error("bad request: more than one Authorization header", fasthttp.StatusBadRequest)
		x.ctx.SetConnectionClose()
		return
	}
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
		x.ctx.Error("unauthorized", fasthttp.StatusUnauthorized) // resets the headers: TestFasthttpErrorResetsResponse
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
		x.ctx.Error("too many requests", fasthttp.StatusTooManyRequests) // resets the headers: TestFasthttpErrorResetsResponse
		x.ctx.Response.Header.Set("Retry-After", strconv.FormatInt(secs, 10))
		return
	}
	l.next.serve(x)
}

func limitKey(x *exchange) ratelimit.Key {
	k := x.route.LimitKey
	switch k.Kind {
	case ratelimit.KeyRoute:
		return ratelimit.RouteKey()
	case ratelimit.KeyHeader:
		if v := x.ctx.Request.Header.Peek(k.Name); len(v) > 0 {
			return ratelimit.HeaderKey(v)
		}
	case ratelimit.KeyClaim:
		if x.claims != nil {
			if v, ok := x.claims.String(k.Name); ok {
				return ratelimit.ClaimKey(v)
			}
		}
	}
	return ratelimit.AddrKey(x.st.clientIP(x), x.st.cfg.SourcePrefixV6)
}

// clientIP is the client's address after trusted_proxies: the peer, or, when
// the peer is trusted, the rightmost X-Forwarded-For address that is not.
func (st *state) clientIP(x *exchange) netip.Addr {
	ip := x.peer.Addr()
	if !st.trusted.Contains(ip) {
		return ip
	}
	var vals [][]byte
	for k, v := range x.ctx.Request.Header.All() {
		if ascii.EqualFold(k, "X-Forwarded-For") {
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
			if !st.trusted.Contains(a) {
				return a
			}
		}
	}
	return ip
}

// equalFold compares b and s ignoring ASCII case; with dashed, an
// underscore in b counts as a dash.
func equalFold[T ~string | ~[]byte](b []byte, s T, dashed bool) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if dashed && c == '_' {
			c = '-'
		}
		if ascii.Lower(c) != ascii.Lower(d) {
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
		if ascii.EqualFold(bytes.TrimSpace(part), tok) {
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
