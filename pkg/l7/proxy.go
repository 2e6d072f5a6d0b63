package l7

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/lbd-lb/lbd/balancer"
	"github.com/lbd-lb/lbd/internal/ascii"
	"github.com/lbd-lb/lbd/pkg/l7/auth"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// Backend connection pool sizing. One HostClient per backend keeps up to
// MaxConnsPerBackend keep-alive connections; a request that finds them all
// busy waits up to the connect timeout for one before it fails with 502.
const (
	MaxConnsPerBackend  = 1024
	MaxIdleConnDuration = 30 * time.Second
)

// dialError marks a failure to connect, the one failure that may be retried
// on another backend whatever happened to the request, since it never left.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func isDialError(err error) bool {
	if err == nil {
		return false
	}
	_, ok := errors.AsType[*dialError](err)
	return ok
}

// dialBackend connects to the backend at addr within timeout; a failure is
// a *dialError. It is the one way to a backend: the keep-alive pools dial
// through it, and so does a WebSocket tunnel.
func dialBackend(addr string, timeout time.Duration) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, &dialError{err}
	}
	return conn, nil
}

// errUploadsFull is what a try of tryBackends returns for a backend whose
// connections are taken by streamed uploads up to their share: the next
// backend is tried, and the backend is not counted as failing.
var errUploadsFull = errors.New("l7: backend busy with uploads")

// backends returns a snapshot of the route's pool, or answers 503 and
// returns nil when the pool has no backend to offer.
func (x *exchange) backends() *pool.Snapshot {
	snap := x.route.Pool.Snapshot()
	if len(snap.Backends) == 0 {
		x.route.stats.noBackend.Add(1)
		x.ctx.Error("no backend available", fasthttp.StatusServiceUnavailable)
		return nil
	}
	return snap
}

// tryBackends is how a request reaches a backend, proxied or tunnelled:
// it picks backends of snap not tried yet for the request, and runs try on
// each, 1+Retries at most. A try that fails to connect (its error is a
// dialError) counts against its backend, as a connect error in the
// backend's stats and a passive health failure, and the next backend is
// tried: whatever the method, the request never left, so nothing can
// happen twice. So is one that returns errUploadsFull, with nothing
// counted. Any other outcome ends the search: tryBackends reports true
// with the try's error, nil for a success, which passive health hears of
// here. It reports false when no try ended it: every backend allowed was
// tried, or none was left to pick.
func (x *exchange) tryBackends(snap *pool.Snapshot, try func(b *pool.Backend) error) (bool, error) {
	key := balancer.HashKey(x.peer.Addr(), x.peer.Port(), snap.HashPort)
	for attempt := 0; attempt <= x.st.cfg.Retries && x.tried.Len() < balancer.MaxTried; attempt++ {
		b := x.pick(snap, key)
		if b == nil {
			break
		}
		err := try(b)
		switch {
		case err == errUploadsFull:
			continue
		case isDialError(err):
			b.SharedStats().ConnectErrors.Add(1)
			x.route.Pool.ConnectFailed(b)
			continue
		case err == nil:
			x.route.Pool.ConnectSucceeded(b)
			x.backend = b.Name
		}
		return true, err
	}
	return false, nil
}

// client returns the keep-alive pool of b, creating it on first use.
func (s *Server) client(b *pool.Backend, st *state) *fasthttp.HostClient {
	if c, ok := s.clients.Load(b); ok {
		return c.(*fasthttp.HostClient)
	}
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	if c, ok := s.clients.Load(b); ok {
		return c.(*fasthttp.HostClient)
	}
	cfg := st.cfg
	var c *fasthttp.HostClient
	c = &fasthttp.HostClient{
		Addr: b.Addr.String(),
		Dial: func(addr string) (net.Conn, error) {
			conn, err := dialBackend(addr, cfg.ConnectTimeout)
			if err != nil {
				return nil, err
			}
			return newBackendConn(conn, s.watch), nil
		},
		MaxConns:            MaxConnsPerBackend,
		MaxIdleConnDuration: MaxIdleConnDuration,
		MaxConnWaitTimeout:  cfg.ConnectTimeout,
		// The read and write timeouts are the watchdog's (backendConn):
		// ReadTimeout bounds each wait for the backend's next bytes, so a
		// long event stream that keeps sending is not cut.
		MaxResponseBodySize:      0,
		NoDefaultUserAgentHeader: true,
		// As on the client side (see New): a backend's lower-case
		// keep-alive or Connection-named header must be found by Del
		// (TestFasthttpHeaderNamesNormalized).
		DisableHeaderNamesNormalizing: false,
		DisablePathNormalizing:        true,
		// A keep-alive connection the backend closed while idle fails
		// before any response byte. An idempotent request is then sent
		// again, after the backend's other idle connections are dropped:
		// they were most likely closed too (a restart, or its keep-alive
		// timeout), so the next attempt dials. Everything else is decided
		// by proxyStage.
		MaxIdemponentCallAttempts: 3,
		RetryIfErr: func(req *fasthttp.Request, attempts int, err error) (bool, bool) {
			if isDialError(err) {
				return false, false
			}
			if errors.Is(err, errCut) {
				return false, true // never sent
			}
			// fasthttp turns a bare io.EOF into ErrConnectionClosed only
			// after its last attempt: here it is still io.EOF
			// (TestFasthttpClientClosedKeepAlive).
			closed := err == io.EOF || errors.Is(err, fasthttp.ErrConnectionClosed)
			if !closed || !idempotent(req.Header.Method()) {
				return false, false
			}
			c.CloseIdleConnections()
			return false, true
		},
	}
	s.clients.Store(b, c)
	return c
}

// maxUploadsPerBackend bounds the backend connections that streamed request
// bodies may hold at once, half of MaxConnsPerBackend: a body comes at the
// client's pace (read_timeout bounds it), so without a share of their own,
// slow uploads could take every connection and leave other requests 502.
const maxUploadsPerBackend = MaxConnsPerBackend / 2

// startUpload takes one of b's upload shares, and reports false when none
// is left.
func (s *Server) startUpload(b *pool.Backend) bool {
	v, _ := s.uploads.LoadOrStore(b, new(atomic.Int32))
	n := v.(*atomic.Int32)
	if n.Add(1) > maxUploadsPerBackend {
		n.Add(-1)
		return false
	}
	return true
}

// endUpload gives back the share startUpload took.
func (s *Server) endUpload(b *pool.Backend) {
	if v, ok := s.uploads.Load(b); ok {
		v.(*atomic.Int32).Add(-1)
	}
}

// pruneClients drops the pools of backends no route of st leads to.
func (s *Server) pruneClients(st *state) {
	live := map[*pool.Backend]bool{}
	for _, r := range st.routes {
		for _, b := range r.Pool.Backends() {
			live[b] = true
		}
	}
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	s.clients.Range(func(k, v any) bool {
		if !live[k.(*pool.Backend)] {
			s.clients.Delete(k)
			s.uploads.Delete(k)
			v.(*fasthttp.HostClient).CloseIdleConnections()
		}
		return true
	})
}

// timedOut reports an error that is a timeout.
func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func idempotent(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE":
		return true
	}
	return false
}

// proxyStage forwards the request to a backend of the route's pool.
type proxyStage struct{ s *Server }

func (p *proxyStage) serve(x *exchange) {
	if x.expecting {
		// The request waits for 100 Continue: everything before this
		// stage passed, and the body comes once the client has it
		// (Server.expect).
		x.passed = true
		return
	}
	ctx := x.ctx
	req := &ctx.Request
	if x.upgrade {
		p.tunnel(x)
		return
	}
	resp := &ctx.Response
	r := x.route
	p.prepareRequest(x)
	if req.IsBodyStream() {
		switch taken, err := x.takeSmallBody(); {
		case err != nil:
			// The client stopped sending before its small body was in:
			// no backend needs to hear of it.
			if timedOut(err) {
				x.st.owner.reject(reasonTimeout)
				ctx.Error("request timeout", fasthttp.StatusRequestTimeout)
			} else {
				ctx.Error("bad request", fasthttp.StatusBadRequest)
			}
			x.lingerClose()
			return
		case !taken:
			x.body.start(x)
			req.SetBodyStream(&x.body, req.Header.ContentLength())
		}
	}

	snap := x.backends()
	if snap == nil {
		return
	}
	streaming := wantsEventStream(req.Header.Peek("Accept"))
	uploadsFull := false
	// The backend that answered, or failed past connecting, and its answer.
	var (
		b     *pool.Backend
		stats *pool.LoopStats
		br    *fasthttp.Response
	)
	done, err := x.tryBackends(snap, func(cand *pool.Backend) error {
		if x.body.src != nil && !p.s.startUpload(cand) {
			// This backend's connections are taken by streamed uploads
			// up to their share: another backend, or 503.
			uploadsFull = true
			return errUploadsFull
		}
		hc := p.s.client(cand, x.st)
		b, stats = cand, cand.SharedStats()

		b.Active.Add(1)
		// The backend's answer goes into a response of its own, so that
		// what the client's side decides about its connection (a
		// Connection: close, HTTP/1.0) never closes the backend's.
		br = fasthttp.AcquireResponse()
		// A response without a Content-Type goes on without one.
		br.Header.SetNoDefaultContentType(true)
		// The body is never read whole here: a small one is read into a
		// bounded buffer once the header is in (bufferSmall), anything
		// larger or of unknown length goes on to the client as it comes,
		// at the client's pace, so memory stays bounded whatever the size.
		br.StreamBody = true
		err := hc.Do(req, br)
		if err == nil {
			err = p.checkResponse(x, br, streaming)
		}
		if x.body.src != nil {
			p.s.endUpload(b)
		}
		if isDialError(err) {
			b.Active.Add(-1)
			fasthttp.ReleaseResponse(br)
			b, stats, br = nil, nil, nil
		}
		return err
	})
	if !done {
		resp.Reset()
		if uploadsFull {
			r.stats.noBackend.Add(1)
			ctx.Error("backends busy with uploads", fasthttp.StatusServiceUnavailable)
		} else {
			r.stats.backendErrors.Add(1)
			ctx.Error("bad gateway", fasthttp.StatusBadGateway)
		}
		if x.body.src != nil {
			// The body was never read: the connection cannot go on.
			x.lingerClose()
		}
		return
	}
	stats.Connections.Add(1)
	stats.BytesToBackend.Add(uint64(req.Header.Len() + len(req.Header.RequestURI()) + max(x.body.n, len(req.Body()))))
	if err != nil {
		b.Active.Add(-1)
		fasthttp.ReleaseResponse(br)
		resp.Reset()
		switch {
		case x.body.tooLarge:
			x.st.owner.reject(reasonBodyTooLarge)
			ctx.Error("request body too large", fasthttp.StatusRequestEntityTooLarge)
		case x.body.err != nil && timedOut(x.body.err):
			x.st.owner.reject(reasonTimeout)
			ctx.Error("request timeout", fasthttp.StatusRequestTimeout)
		case x.body.err != nil:
			// The client's body broke off: nobody is left to answer.
			ctx.Error("bad request", fasthttp.StatusBadRequest)
		default:
			r.stats.backendErrors.Add(1)
			p.s.log.Debug("backend request failed", "listener", x.st.cfg.Name, "backend", b.Name, "err", err)
			ctx.Error("bad gateway", fasthttp.StatusBadGateway)
		}
		if x.body.src != nil && !x.body.done {
			x.lingerClose()
		}
		return
	}
	br.Header.CopyTo(&resp.Header)
	if br.IsBodyStream() {
		// The backend's connection stays busy, and counted, until
		// the client has the whole body (streamTail).
		resp.SetBodyStream(newStreamTail(br, b, stats), br.Header.ContentLength())
	} else {
		// The buffers change hands, so both stay with their pools.
		br.SwapBody(resp.SwapBody(br.SwapBody(nil)))
		stats.BytesToClient.Add(uint64(len(resp.Body())))
		b.Active.Add(-1)
		fasthttp.ReleaseResponse(br)
	}
	stripHop(&resp.Header, responseHeaders(&resp.Header), nil, nil)
	// The backend's Connection: close concerns its own connection, not
	// the client's.
	resp.Header.ResetConnectionClose()
}

// streamTail passes a streamed response body on to the client. The
// backend connection it reads from is counted active until the body ends,
// and the bytes that went through are counted then; closing it releases
// the backend's response, which returns the connection to its pool or
// closes it.
type streamTail struct {
	br    *fasthttp.Response
	b     *pool.Backend
	stats *pool.LoopStats
	n     int
}

var streamTails = sync.Pool{New: func() any { return new(streamTail) }}

func newStreamTail(br *fasthttp.Response, b *pool.Backend, stats *pool.LoopStats) *streamTail {
	t := streamTails.Get().(*streamTail)
	*t = streamTail{br: br, b: b, stats: stats}
	return t
}

func (t *streamTail) Read(p []byte) (int, error) {
	n, err := t.br.BodyStream().Read(p)
	t.n += n
	return n, err
}

// CloseWithError is how fasthttp ends a body stream, with the error that
// stopped the write, if any (TestFasthttpBodyStreamClosedWithError).
func (t *streamTail) CloseWithError(err error) error {
	if t.br == nil {
		return nil
	}
	if c, ok := t.br.BodyStream().(fasthttp.ReadCloserWithError); ok {
		c.CloseWithError(err)
	}
	fasthttp.ReleaseResponse(t.br)
	t.b.Active.Add(-1)
	t.stats.BytesToClient.Add(uint64(t.n))
	*t = streamTail{}
	streamTails.Put(t)
	return nil
}

// smallBody is the largest request body of known length read whole once
// route, auth and rate limit have passed, rather than streamed: it may be
// sent again on another connection should a keep-alive one turn out
// closed, which a stream cannot (TestFasthttpClientRetriesWriteError,
// TestFasthttpTakeBodyThenNextRequest).
const smallBody = 8 << 10

// takeSmallBody reads a streamed body of known length up to smallBody into
// the request, and reports whether it did, or why the body did not come.
func (x *exchange) takeSmallBody() (bool, error) {
	req := &x.ctx.Request
	cl := req.Header.ContentLength()
	if cl < 0 || cl > smallBody {
		return false, nil
	}
	buf := smallBodies.Get().(*[streamThreshold + 1]byte)
	defer smallBodies.Put(buf)
	n, err := io.ReadFull(req.BodyStream(), buf[:cl])
	if err != nil {
		return false, err
	}
	x.body.n = n
	req.SetBody(buf[:n])
	if c := clientConn(x.ctx.Conn()); c != nil {
		c.busy()
	}
	return true, nil
}

// lingerClose answers the request with Connection: close while the client
// may still be sending a body no one will read: the connection then
// lingers, reading and dropping what comes, so that closing it with data
// unread does not reset it and destroy the answer before the client has
// read it (see serverConn.Close).
func (x *exchange) lingerClose() {
	x.ctx.SetConnectionClose()
	if c := clientConn(x.ctx.Conn()); c != nil {
		c.linger = true
	}
}

// errUnexpected101 refuses a backend's 101 to a request that asked for no
// upgrade: passed on, it could make a proxy in front take the connection
// for a tunnel.
var errUnexpected101 = errors.New("l7: backend switched protocols unasked")

// http10Limit bounds the response body of unknown length read whole for an
// HTTP/1.0 client, which can take neither chunked framing nor a stream.
const http10Limit = 1 << 20

// errTooLongFor10 refuses a response of unknown length over http10Limit
// to an HTTP/1.0 client.
var errTooLongFor10 = errors.New("l7: response of unknown length too long for an HTTP/1.0 client")

// checkResponse vets a backend's response and sets how its body goes on:
// read whole when small (bufferSmall), streamed otherwise. lbd answers in
// HTTP/1.1 whatever its backends speak.
func (p *proxyStage) checkResponse(x *exchange, resp *fasthttp.Response, streaming bool) error {
	if resp.StatusCode() == fasthttp.StatusSwitchingProtocols {
		if c, ok := resp.BodyStream().(fasthttp.ReadCloserWithError); ok {
			c.CloseWithError(errUnexpected101)
		}
		return errUnexpected101
	}
	resp.Header.SetProtocol(http11)
	if !x.ctx.Request.Header.IsHTTP11() && resp.IsBodyStream() && resp.Header.ContentLength() < 0 {
		return bufferWhole(resp, http10Limit)
	}
	if streaming {
		return nil
	}
	return bufferSmall(resp)
}

var http11 = []byte("HTTP/1.1")

// bufferWhole reads a streamed response body of unknown length whole, up to
// limit bytes.
func bufferWhole(resp *fasthttp.Response, limit int64) error {
	var b bytes.Buffer
	n, err := io.Copy(&b, io.LimitReader(resp.BodyStream(), limit+1))
	if err == nil && n > limit {
		err = errTooLongFor10
	}
	if err != nil {
		if c, ok := resp.BodyStream().(fasthttp.ReadCloserWithError); ok {
			c.CloseWithError(err)
		}
		return err
	}
	resp.SetBody(b.Bytes())
	return nil
}

// streamThreshold is the largest response body read whole before it goes
// to the client; larger ones, and those of unknown length, stream.
const streamThreshold = 64 << 10

// smallBodies are the buffers of bufferSmall.
var smallBodies = sync.Pool{New: func() any { return new([streamThreshold + 1]byte) }}

// bufferSmall reads a streamed response body of known length up to
// streamThreshold whole, which gives its backend connection back at once
// and answers the client with one write.
func bufferSmall(resp *fasthttp.Response) error {
	cl := resp.Header.ContentLength()
	if !resp.IsBodyStream() || cl < 0 || cl > streamThreshold {
		return nil
	}
	buf := smallBodies.Get().(*[streamThreshold + 1]byte)
	defer smallBodies.Put(buf)
	n := 0
	var err error
	// Read to EOF, one byte past the length, so that the backend
	// connection is known to be fully read and goes back to its pool.
	for err == nil && n <= cl {
		var m int
		m, err = resp.BodyStream().Read(buf[n : cl+1])
		n += m
	}
	if err != io.EOF || n != cl {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if c, ok := resp.BodyStream().(fasthttp.ReadCloserWithError); ok {
			c.CloseWithError(err)
		}
		return err
	}
	resp.SetBody(buf[:n]) // closes the stream: TestFasthttpClientStreamBody
	return nil
}

// bodyReader passes a request body the server streams (never read whole)
// on to the backend: it enforces MaxBodyBytes on a chunked body, drops its
// trailer section, so that no trailer field reaches the backend after the
// header guard ran (TestFasthttpRequestTrailer), and, once the body is in, lets the watchdog know that
// the client is waiting rather than sending.
type bodyReader struct {
	src  io.Reader
	x    *exchange
	left int
	// n counts the bytes read; done is set at the body's end.
	n    int
	done bool
	// tooLarge is set past MaxBodyBytes; err is the client's read error.
	tooLarge bool
	err      error
}

// errBodyTooLarge stops a chunked body past MaxBodyBytes.
var errBodyTooLarge = errors.New("l7: request body too large")

func (b *bodyReader) start(x *exchange) {
	*b = bodyReader{src: x.ctx.Request.BodyStream(), x: x, left: x.st.cfg.MaxBodyBytes}
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.src.Read(p)
	b.n += n
	if b.left -= n; b.left < 0 {
		b.tooLarge = true
		return 0, errBodyTooLarge
	}
	switch {
	case err == io.EOF:
		b.done = true
		h := &b.x.ctx.Request.Header
		if h.ContentLength() == -1 {
			dropTrailer(h)
		}
		if c := clientConn(b.x.ctx.Conn()); c != nil {
			c.busy()
		}
	case err != nil:
		b.err = err
	}
	return n, err
}

// dropTrailer removes the fields of a chunked body's trailer section,
// which the body stream parsed into h at its end; the header itself is on
// the wire by then, so only the trailer section is affected.
func dropTrailer(h *fasthttp.RequestHeader) {
	tr := h.TrailerHeader()
	if len(tr) <= 2 {
		return // only the CRLF that ends it
	}
	var names []string
	for line := range headerLines(tr) {
		if name, _, ok := bytes.Cut(line, []byte(":")); ok {
			names = append(names, string(name))
		}
	}
	for _, n := range names {
		h.Del(n)
	}
}

// pick picks a backend of snap not tried yet for the request and notes it
// tried; nil when there is none. Handlers run on any goroutine, so the pick
// goes through the snapshot's own pickers (pool.Snapshot.Pick).
func (x *exchange) pick(snap *pool.Snapshot, key uint64) *pool.Backend {
	i := snap.Pick(key, &x.tried)
	if i < 0 {
		return nil
	}
	x.tried.Add(i)
	return snap.Backends[i]
}

// prepareRequest strips hop-by-hop headers, and from an untrusted peer the
// headers only a proxy may set, and sets X-Forwarded-*.
func (p *proxyStage) prepareRequest(x *exchange) {
	h := &x.ctx.Request.Header
	var claims []auth.ForwardClaim
	if x.route != nil && x.route.Auth != nil {
		claims = x.route.Auth.Forwarded()
	}
	stripHop(h, x.headers, claims, x.st.routeHeaders)
	// The client's Connection: close is for the client's connection; the
	// server has already noted it (TestFasthttpConnectionCloseNotedBeforeHandler).
	h.ResetConnectionClose()
	// A body without a Content-Type goes on without one.
	h.SetNoDefaultContentType(true)
	if x.ctx.IsTLS() {
		// TLS ends here: the request goes to the backend in plain HTTP,
		// and the client's scheme travels in X-Forwarded-Proto. The target
		// and Host written stay the ones framingStage fixed.
		x.ctx.Request.URI().SetScheme("http")
	}

	trusted := x.st.trusted.Contains(x.peer.Addr())
	var buf [64]byte
	peer := x.peer.Addr().AppendTo(buf[:0])
	if trusted {
		var chain []byte
		for _, v := range h.PeekAll("X-Forwarded-For") {
			if len(chain) > 0 {
				chain = append(chain, ", "...)
			}
			chain = append(chain, v...)
		}
		if len(chain) > 0 {
			chain = append(chain, ", "...)
		}
		chain = append(chain, peer...)
		h.Del("X-Forwarded-For")
		h.SetBytesV("X-Forwarded-For", chain)
	} else {
		del(h, x.headers, hdrXForwardedFor|hdrXForwardedProto|hdrXForwardedHost|hdrForwarded|hdrSpoofable)
		if x.headers&hdrXForwardedOther != 0 || (x.headers&hdrUnderscore != 0 && len(x.st.cfg.StripHeaders) > 0) {
			dropNamed(h, x.st.cfg.StripHeaders, true)
		}
		for _, n := range x.st.cfg.StripHeaders {
			h.Del(n)
		}
		h.SetBytesV("X-Forwarded-For", peer)
	}
	if !trusted || x.headers&hdrXForwardedProto == 0 || len(h.Peek("X-Forwarded-Proto")) == 0 {
		if x.ctx.IsTLS() {
			h.Set("X-Forwarded-Proto", "https")
		} else {
			h.Set("X-Forwarded-Proto", "http")
		}
	}
	if !trusted || x.headers&hdrXForwardedHost == 0 || len(h.Peek("X-Forwarded-Host")) == 0 {
		h.SetBytesV("X-Forwarded-Host", h.Host())
	}
}

// dropNamed deletes the headers named in names when read with underscores
// as dashes (what a CGI-style backend would take them for), and with
// xForwarded every X-Forwarded-* header other than For, Proto and Host:
// from an untrusted peer they can only be forged.
func dropNamed(h *fasthttp.RequestHeader, names []string, xForwarded bool) {
	var drop [][]byte
	for k := range h.All() {
		bit := headerBit(k)
		forged := xForwarded && (bit == hdrXForwardedOther || bit == hdrXForwardedPort)
		if !forged && bytes.IndexByte(k, '_') >= 0 {
			for _, n := range names {
				if dashedEqualFold(k, n) {
					forged = true
					break
				}
			}
		}
		if forged {
			drop = append(drop, append([]byte(nil), k...))
		}
	}
	for _, k := range drop {
		h.DelBytes(k)
	}
}

// responseHeaders are the headers of headerSet that a backend's response
// carries: all of them for a chunked one, whose trailer fields fasthttp may
// keep apart from the header (see TestFasthttpRequestTrailer for requests).
func responseHeaders(h *fasthttp.ResponseHeader) headerSet {
	if h.ContentLength() == -1 {
		return hdrAll
	}
	var seen headerSet
	for k := range h.All() {
		seen |= headerBit(k)
	}
	if seen&hdrTrailer != 0 {
		return hdrAll
	}
	return seen
}

// headerMap is what stripHop needs of a request or response header.
type headerMap interface {
	PeekAll(key string) [][]byte
	Del(key string)
}

// del removes the headers of which that present says are there.
func del(h headerMap, present, which headerSet) {
	for s := present & which; s != 0; s &= s - 1 {
		h.Del((s & -s).name())
	}
}

// stripHop removes the hop-by-hop headers and every header named in
// Connection, of those that present says are there, except that
// Connection cannot name away a header lbd relies on or sets itself:
// Host, the framing headers, X-Forwarded-For, -Proto and -Host, the
// forward_claims headers in claims and the headers routes match on (the
// backend must see what the request was routed by).
func stripHop(h headerMap, present headerSet, claims []auth.ForwardClaim, routed []string) {
	del(h, present, hdrHop)
	if present&hdrConnection == 0 {
		return
	}
	var named []string
	for _, v := range h.PeekAll("Connection") {
		for len(v) > 0 {
			var part []byte
			if i := indexByte(v, ','); i >= 0 {
				part, v = v[:i], v[i+1:]
			} else {
				part, v = v, nil
			}
			part = trimSpace(part)
			if len(part) > 0 && !keeps(claims, routed, part) {
				named = append(named, string(part))
			}
		}
	}
	for _, n := range named {
		h.Del(n)
	}
	h.Del("Connection")
}

// neverNamedAway are the headers Connection cannot remove.
const neverNamedAway = hdrContentLength | hdrTransferEncoding | hdrXForwardedFor | hdrXForwardedProto | hdrXForwardedHost

func keeps(keep []auth.ForwardClaim, routed []string, name []byte) bool {
	if ascii.EqualFold(name, "Host") || headerBit(name)&neverNamedAway != 0 {
		return true
	}
	for _, r := range routed {
		if ascii.EqualFold(name, r) {
			return true
		}
	}
	for _, k := range keep {
		if ascii.EqualFold(name, k.Header) {
			return true
		}
	}
	return false
}

func indexByte(b []byte, c byte) int {
	for i := range b {
		if b[i] == c {
			return i
		}
	}
	return -1
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// wantsEventStream reports an Accept header that asks for Server-Sent
// Events, whose responses must stream rather than be buffered whole.
func wantsEventStream(accept []byte) bool {
	const sse = "text/event-stream"
	for i := 0; i+len(sse) <= len(accept); i++ {
		if ascii.EqualFold(accept[i:i+len(sse)], sse) {
			return true
		}
	}
	return false
}
