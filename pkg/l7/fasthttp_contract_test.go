// The fasthttp contract: what lbd relies on in github.com/valyala/fasthttp
// that fasthttp does not document, or documents loosely, each pinned by a
// test of its own that exercises fasthttp directly (a bare fasthttp.Server
// on a loopback listener and a raw TCP client, or a bare HostClient and a
// raw TCP backend) and names the lbd code that depends on it. A fasthttp
// upgrade that changes one of them fails here, with a message saying what
// to look at, before it fails (or, worse, does not) anywhere else.
//
// Server, request side:
//   - TestFasthttpStreamsRequestBody: with StreamRequestBody and a body
//     limit of one byte, the handler runs on the header alone, the body is
//     read from BodyStream as it comes, and a body over the limit is no
//     error.
//   - TestFasthttpBodyStreamOnlyWithBody: IsBodyStream is false without a
//     body and for a body of one byte (read whole into Body), true for a
//     longer one and for a chunked one; ContentLength is 0, n or -1.
//   - TestFasthttpHeaderReceivedDeadline: HeaderReceived's ReadTimeout is
//     the one read deadline set, on the listener's connection, once the
//     header is in; with no timeouts of its own fasthttp sets no other
//     deadline but a zero one at a hijack.
//   - TestFasthttpExpectHandler: ExpectHandler runs on the header alone
//     with the RequestCtx the handler then gets; StatusContinue writes 100
//     Continue before the body is read, anything else writes the response
//     the ExpectHandler left, with that status, closes the connection and
//     skips the handler; an HTTP/1.0 Expect is ignored.
//   - TestFasthttpConnectionCloseNotedBeforeHandler: a client's Connection:
//     close is noted before the handler runs, which may remove it from the
//     request.
//   - TestFasthttpHandlerConnectionClose: SetConnectionClose in the handler
//     writes Connection: close and closes the listener's connection, after
//     the answer is out.
//   - TestFasthttpCloseOnShutdown: with CloseOnShutdown, answers carry
//     Connection: close while ShutdownWithContext runs, not after it gave
//     up, and the connections it gave up on go on.
//   - TestFasthttpErrorResetsResponse: RequestCtx.Error resets the response
//     (headers and Connection: close set before it are gone, those set
//     after it are written).
//   - TestFasthttpErrorHandler: ErrorHandler gets *ErrSmallBuffer for a
//     header over ReadBufferSize, a timeout net.Error for a request whose
//     read is cut (none for an idle keep-alive connection), another error
//     for garbage; its answer goes out and the connection closes.
//   - TestFasthttpRawRequest: RawHeaders is the header block as received
//     (case, Content-Length with Transfer-Encoding, obs-fold lines, which
//     the handler gets), RequestURI and Protocol are as sent, Host is the
//     Host header whatever the target says, a second Host is refused.
//   - TestFasthttpHeaderNamesNormalized: header names are stored in
//     canonical case (All, Write), Peek and Del take any case, and
//     RawHeaders keeps the client's case; the same for a HostClient's
//     response header.
//   - TestFasthttpDuplicateHeaders: Peek returns the first of repeated
//     headers, PeekAll and All every one in order, Del removes them all,
//     Write writes each.
//   - TestFasthttpConnectionHeaderValue: Peek("Connection") is the whole
//     list the client sent, close included; a response's PeekAll
//     ("Connection") holds the names listed beside close.
//   - TestFasthttpRequestWriteAsGiven: Request.Write writes the target as
//     received with URI().DisablePathNormalizing, a target set with
//     SetRequestURIBytes as set, and with UseHostHeader the Host header as
//     it is; no Content-Type is added with SetNoDefaultContentType, no
//     Connection: close after ResetConnectionClose.
//   - TestFasthttpRequestTrailer: a chunked body's trailer fields join the
//     request header when its stream ends, and Request.Write writes them
//     after a streamed body unless deleted by then.
//   - TestFasthttpTakeBodyThenNextRequest: a body read whole from its
//     stream and set with SetBody leaves the connection ready for the next
//     pipelined request.
//   - TestFasthttpIsTLSByMethods: a connection is TLS to fasthttp when it
//     has Handshake and ConnectionState; ctx.Conn is the listener's
//     connection itself.
//
// Server, response side:
//   - TestFasthttpStreamsResponse: SetBodyStream with a length of -1 or -2
//     goes chunked, each Read's bytes flushed before the next Read, and a
//     known length goes with Content-Length; to an HTTP/1.0 client too, a
//     stream of unknown length goes chunked.
//   - TestFasthttpBodyStreamClosedWithError: a response body stream is
//     ended with CloseWithError, nil once it is all written, the write's
//     error when the client goes away.
//
// Hijack:
//   - TestFasthttpHijackNoResponse: with HijackSetNoResponse the hijack
//     handler runs, nothing written before it, even for Connection: close,
//     HTTP/1.0 and during Shutdown; without it, a closing request's hijack
//     handler is skipped.
//   - TestFasthttpHijackedConn: the hijacked connection reads the bytes
//     that came after the request first, reads and writes through the
//     listener's connection, ignores Close, and is closed when the hijack
//     handler returns; in the handler, ctx.Hijacked reports the hijack.
//   - TestFasthttpHijackAfterPipelinedAnswer: an earlier pipelined answer
//     is flushed before the hijack handler runs, which does not run when
//     that flush fails.
//   - TestFasthttpShutdownLeavesHijacked: ShutdownWithContext does not
//     wait for hijacked connections, and GetOpenConnectionsCount counts
//     served connections (idle ones included) but not hijacked ones.
//   - TestFasthttpConcurrencyLimit: past Concurrency, a new connection is
//     answered 503 and closed unread, and GetRejectedConnectionsCount
//     counts it.
//   - TestFasthttpUpgradeResponseHeader: ResponseHeader.Read leaves what
//     follows a 101's header in the reader, and Header() of a 101 has no
//     body framing.
//
// HostClient (the backend side):
//   - TestFasthttpClientDialError: an error of Dial comes back from Do as
//     it is, and fasthttp dials no second time.
//   - TestFasthttpClientClosedKeepAlive: a keep-alive connection the
//     backend closed fails with a bare io.EOF in RetryIfErr, is retried on a
//     new connection when RetryIfErr says so, and becomes
//     ErrConnectionClosed when it does not.
//   - TestFasthttpClientRetriesWriteError: a connection's write error
//     reaches RetryIfErr as it is, whatever the method; the connection is
//     closed and the request goes again on a new one, at most
//     MaxIdemponentCallAttempts times in all; a streamed body is never
//     sent twice.
//   - TestFasthttpClientStreamBody: with StreamBody, Do returns once the
//     header is in; the body stream is a ReadCloserWithError; read to its
//     end and replaced by SetBody it gives the connection back to the pool,
//     closed with an error it closes the connection.

package l7

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/lbd-lb/lbd/internal/nettest"
)

// broken fails t for a fasthttp behaviour that changed, naming the lbd code
// that depends on it.
func broken(t *testing.T, reliedOn, format string, args ...any) {
	t.Helper()
	t.Fatalf("fasthttp contract broken: %s\n\tlbd code that relies on it: %s", fmt.Sprintf(format, args...), reliedOn)
}

// fhQuiet drops fasthttp's log lines.
type fhQuiet struct{}

func (fhQuiet) Printf(string, ...any) {}

// fhServer is a fasthttp.Server set up as newServer sets up lbd's, but for
// the handler, the watchdog and the limits.
func fhServer(h fasthttp.RequestHandler) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      h,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		NoDefaultDate:                true,
		ReadBufferSize:               limited(Config{}).MaxHeaderBytes,
		StreamRequestBody:            true,
		MaxRequestBodySize:           1,
		LazyRequestTime:              true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
		Logger:                       fhQuiet{},
	}
}

// fhServe serves s on a loopback listener, wrapped by wrap when not nil,
// until the test ends, and returns its address.
func fhServe(t *testing.T, s *fasthttp.Server, wrap func(net.Listener) net.Listener) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var l net.Listener = ln
	if wrap != nil {
		l = wrap(ln)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(l)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.ShutdownWithContext(ctx)
		<-done
	})
	return ln.Addr().String()
}

// fhDial connects to addr, with a deadline that ends a stuck test.
func fhDial(t *testing.T, addr string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn), bufio.NewReader(c)
}

// fhRead reads one response and its body.
func fhRead(t *testing.T, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading a response body: %v", err)
	}
	return resp, string(b)
}

// fhEOF reports whether the server closed the connection (a FIN, or a
// reset for bytes it left unread), what is left in
// br read and dropped.
func fhEOF(br *bufio.Reader) bool {
	_, err := io.Copy(io.Discard, br)
	return err == nil || !isTimeout(err)
}

// within waits for ch, or fails the test after 10 seconds with what.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// recListener hands out its connections as *recConn, and each also on
// conns; closed is closed by Close.
type recListener struct {
	net.Listener
	conns  chan *recConn
	closed chan struct{}
	once   sync.Once
	wrap   func(*recConn) net.Conn
}

func newRecListener(ln net.Listener) *recListener {
	return &recListener{Listener: ln, conns: make(chan *recConn, 16), closed: make(chan struct{})}
}

func (l *recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &recConn{Conn: c, closed: make(chan struct{})}
	l.conns <- rc
	if l.wrap != nil {
		return l.wrap(rc), nil
	}
	return rc, nil
}

func (l *recListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// recConn records what fasthttp does with a connection.
type recConn struct {
	net.Conn
	mu        sync.Mutex
	deadlines []string // "read +1h", "write 0", "both 0", ...
	reads     int
	writes    int
	failWrite atomic.Bool
	closed    chan struct{}
	closeOnce sync.Once
}

func (c *recConn) note(kind string, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.IsZero() {
		c.deadlines = append(c.deadlines, kind+" 0")
		return
	}
	c.deadlines = append(c.deadlines, fmt.Sprintf("%s +%v", kind, time.Until(t).Round(time.Hour)))
}

func (c *recConn) SetDeadline(t time.Time) error {
	c.note("both", t)
	return c.Conn.SetDeadline(t)
}

func (c *recConn) SetReadDeadline(t time.Time) error {
	c.note("read", t)
	return c.Conn.SetReadDeadline(t)
}

func (c *recConn) SetWriteDeadline(t time.Time) error {
	c.note("write", t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *recConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	c.reads++
	c.mu.Unlock()
	return c.Conn.Read(p)
}

var errFailWrite = errors.New("contract test: write refused")

func (c *recConn) Write(p []byte) (int, error) {
	if c.failWrite.Load() {
		return 0, errFailWrite
	}
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func (c *recConn) deadlineCalls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.deadlines...)
}

// TestFasthttpStreamsRequestBody: lbd streams request bodies to backends
// and never holds one whole, which rests on StreamRequestBody with a body
// limit of one byte: the handler runs once the header and at most one
// byte of a longer body are in (fasthttp reads up to the limit first),
// reads the body from BodyStream as it comes, and a body over the limit is
// no error (lbd enforces MaxBodyBytes itself). A chunked body is not read
// at all before the handler.
func TestFasthttpStreamsRequestBody(t *testing.T) {
	const lbd = "newServer's StreamRequestBody and MaxRequestBodySize (server.go); Server.serveHTTP (chain.go); " +
		"proxyStage.serve, exchange.takeSmallBody and bodyReader (proxy.go)"
	for _, tc := range []struct {
		name, header, first, body string
		cl                        int
		want                      string
	}{
		{"content-length", "Content-Length: 100\r\n", "x", strings.Repeat("x", 99), 100, strings.Repeat("x", 100)},
		{"chunked", "Transfer-Encoding: chunked\r\n", "", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", -1, "hello world"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := make(chan struct{})
			got := make(chan string, 1)
			addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
				if !ctx.Request.IsBodyStream() {
					got <- "the body is not a stream"
					return
				}
				close(in)
				b, err := io.ReadAll(ctx.Request.BodyStream())
				got <- fmt.Sprintf("%d %s %v", ctx.Request.Header.ContentLength(), b, err)
			}), nil)
			c, br := fhDial(t, addr)
			io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\n"+tc.header+"\r\n"+tc.first)
			select {
			case <-in:
			case g := <-got:
				broken(t, lbd, "%s", g)
			case <-time.After(10 * time.Second):
				broken(t, lbd, "the handler did not run on the header and %d byte(s) of the body", len(tc.first))
			}
			io.WriteString(c, tc.body)
			if g, want := within(t, got, "the body"), fmt.Sprintf("%d %s <nil>", tc.cl, tc.want); g != want {
				broken(t, lbd, "the handler read %q from the body stream, want %q", g, want)
			}
			if resp, _ := fhRead(t, br); resp.StatusCode != 200 {
				broken(t, lbd, "a body over MaxRequestBodySize got %d", resp.StatusCode)
			}
		})
	}
}

// TestFasthttpBodyStreamOnlyWithBody: IsBodyStream tells a request that
// says it has a body, whose body is then read from the stream: every one
// with Content-Length (0 included, an empty stream; 1 included, its byte
// already read into the stream) or chunked, and none without either.
// ContentLength, in HeaderReceived as in the handler, is n for
// Content-Length: n and -1 for a chunked body; without either it is -2 (no
// body, for a request), which becomes 0 by the handler for a method that
// may have a body. (Body must not be called first: it reads the stream
// whole.)
func TestFasthttpBodyStreamOnlyWithBody(t *testing.T) {
	const lbd = "Server.serveHTTP and Server.finish (chain.go); bodyTimeout (server.go); " +
		"proxyStage.serve and bodyReader.Read (proxy.go); isWebSocket (upgrade.go)"
	var received atomic.Int64
	s := fhServer(func(ctx *fasthttp.RequestCtx) {
		req := &ctx.Request
		// Asked first: Body would read a stream whole.
		stream := req.IsBodyStream()
		var body []byte
		if stream {
			body, _ = io.ReadAll(req.BodyStream())
		} else {
			body = req.Body()
		}
		fmt.Fprintf(ctx, "%d %v %d %q", received.Load(), stream, req.Header.ContentLength(), body)
	})
	s.HeaderReceived = func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
		received.Store(int64(h.ContentLength()))
		return fasthttp.RequestConfig{MaxRequestBodySize: 1}
	}
	addr := fhServe(t, s, nil)
	c, br := fhDial(t, addr)
	for _, tc := range []struct{ req, want string }{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", `-2 false -2 ""`},
		{"POST / HTTP/1.1\r\nHost: x\r\n\r\n", `-2 false 0 ""`},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", `0 true 0 ""`},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na", `1 true 1 "a"`},
		{"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab", `2 true 2 "ab"`},
		{"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", `-1 true -1 "ab"`},
	} {
		io.WriteString(c, tc.req)
		if _, got := fhRead(t, br); got != tc.want {
			broken(t, lbd, "%q: ContentLength in HeaderReceived, IsBodyStream, ContentLength, body = %s, want %s", tc.req, got, tc.want)
		}
	}
}

// TestFasthttpHeaderReceivedDeadline: lbd's timeouts are the watchdog's,
// which takes a read deadline on a client connection for the body timeout
// and ignores the others. That rests on fasthttp, given no timeouts of its
// own, setting the ReadTimeout that HeaderReceived returns as the one read
// deadline, once the header is in and only for the request that asked for
// it, and otherwise no deadline but a zero one when it hands a connection
// to a hijack handler.
func TestFasthttpHeaderReceivedDeadline(t *testing.T) {
	const lbd = "bodyTimeout and newServer (server.go); serverConn.SetReadDeadline, SetWriteDeadline and SetDeadline (watch.go)"
	in := make(chan []string, 1)
	var rl *recListener
	var conn atomic.Pointer[recConn]
	s := fhServer(func(ctx *fasthttp.RequestCtx) {
		in <- conn.Load().deadlineCalls()
		if ctx.Request.IsBodyStream() {
			io.Copy(io.Discard, ctx.Request.BodyStream())
		}
		if string(ctx.Path()) == "/hijack" {
			ctx.HijackSetNoResponse(true)
			ctx.Hijack(func(c net.Conn) { in <- conn.Load().deadlineCalls() })
		}
	})
	s.HeaderReceived = func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
		if !h.IsPost() {
			return fasthttp.RequestConfig{MaxRequestBodySize: 1}
		}
		return fasthttp.RequestConfig{ReadTimeout: time.Hour, MaxRequestBodySize: 1}
	}
	addr := fhServe(t, s, func(ln net.Listener) net.Listener {
		rl = newRecListener(ln)
		rl.wrap = func(c *recConn) net.Conn { conn.Store(c); return c }
		return rl
	})
	c, br := fhDial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if got := within(t, in, "the handler"); len(got) != 0 {
		broken(t, lbd, "deadlines set before a request whose HeaderReceived asked for none reached the handler: %q", got)
	}
	fhRead(t, br)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	if got := within(t, in, "the handler"); len(got) != 1 || got[0] != "read +1h0m0s" {
		broken(t, lbd, "deadlines set for a request with a body: %q, want one read deadline of HeaderReceived's ReadTimeout", got)
	}
	fhRead(t, br)
	io.WriteString(c, "GET /hijack HTTP/1.1\r\nHost: x\r\n\r\n")
	within(t, in, "the handler")
	if got := within(t, in, "the hijack handler"); strings.Join(got, ", ") != "read +1h0m0s, both 0" {
		broken(t, lbd, "deadlines set by the time of a hijack: %q, want the body's and a zero one", got)
	}
}

// TestFasthttpExpectHandler: lbd runs its chain for Expect: 100-continue
// in the ExpectHandler, on the header alone, keeps the exchange on the
// connection, and forwards the request from the handler once the body
// comes. That rests on the ExpectHandler running before any of the body
// is read or 100 Continue written, with the RequestCtx and connection the
// handler then gets; on StatusContinue writing 100 Continue; and on any
// other status writing the response the ExpectHandler left in the
// RequestCtx with that status, closing the connection and never running
// the handler. An HTTP/1.0 request's Expect is ignored (the chain runs
// from the handler then).
func TestFasthttpExpectHandler(t *testing.T) {
	const lbd = "Server.expect and Server.serveHTTP (chain.go); serverConn.pending (watch.go)"
	type seen struct {
		ctx  *fasthttp.RequestCtx
		conn net.Conn
		what string
	}
	events := make(chan seen, 4)
	s := fhServer(func(ctx *fasthttp.RequestCtx) {
		b, err := io.ReadAll(ctx.Request.BodyStream())
		events <- seen{ctx, ctx.Conn(), fmt.Sprintf("handler %q %v", b, err)}
	})
	s.ExpectHandler = func(ctx *fasthttp.RequestCtx) int {
		events <- seen{ctx, ctx.Conn(), "expect"}
		if string(ctx.Path()) == "/pass" {
			return fasthttp.StatusContinue
		}
		ctx.Error("unauthorized", fasthttp.StatusUnauthorized)
		ctx.Response.Header.Set("WWW-Authenticate", "Bearer")
		return ctx.Response.StatusCode()
	}
	addr := fhServe(t, s, nil)

	t.Run("continue", func(t *testing.T) {
		c, br := fhDial(t, addr)
		io.WriteString(c, "POST /pass HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		e := within(t, events, "the ExpectHandler")
		if e.what != "expect" {
			broken(t, lbd, "%s ran before the ExpectHandler", e.what)
		}
		line := make([]byte, len("HTTP/1.1 100 Continue\r\n\r\n"))
		if _, err := io.ReadFull(br, line); err != nil || string(line) != "HTTP/1.1 100 Continue\r\n\r\n" {
			broken(t, lbd, "answer to StatusContinue: %q, %v", line, err)
		}
		io.WriteString(c, "hello")
		h := within(t, events, "the handler")
		if h.what != `handler "hello" <nil>` || h.ctx != e.ctx || h.conn != e.conn {
			broken(t, lbd, "the handler after 100 Continue: %s, same RequestCtx %v, same connection %v", h.what, h.ctx == e.ctx, h.conn == e.conn)
		}
		if resp, _ := fhRead(t, br); resp.StatusCode != 200 {
			broken(t, lbd, "final answer %d", resp.StatusCode)
		}
	})
	t.Run("refused", func(t *testing.T) {
		c, br := fhDial(t, addr)
		io.WriteString(c, "POST /deny HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		within(t, events, "the ExpectHandler")
		resp, body := fhRead(t, br)
		if resp.StatusCode != 401 || body != "unauthorized" || resp.Header.Get("WWW-Authenticate") != "Bearer" || !resp.Close {
			broken(t, lbd, "answer to a refusal: %d %q %v close=%v, want the ExpectHandler's 401, closing", resp.StatusCode, body, resp.Header, resp.Close)
		}
		if !fhEOF(br) {
			broken(t, lbd, "the connection stays open after a refused Expect")
		}
		select {
		case e := <-events:
			broken(t, lbd, "%s after a refused Expect", e.what)
		default:
		}
	})
	t.Run("HTTP/1.0", func(t *testing.T) {
		c, br := fhDial(t, addr)
		io.WriteString(c, "POST /deny HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")
		if e := within(t, events, "the handler"); e.what != `handler "hello" <nil>` {
			broken(t, lbd, "an HTTP/1.0 Expect: %s, want the handler alone", e.what)
		}
		if resp, _ := fhRead(t, br); resp.StatusCode != 200 {
			broken(t, lbd, "answer %d", resp.StatusCode)
		}
	})
}

// TestFasthttpConnectionCloseNotedBeforeHandler: lbd removes the client's
// Connection: close from the request it forwards, which must not keep the
// client's connection open: fasthttp notes the close before the handler
// runs.
func TestFasthttpConnectionCloseNotedBeforeHandler(t *testing.T) {
	const lbd = "proxyStage.prepareRequest (proxy.go)"
	addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
		ctx.Request.Header.ResetConnectionClose()
		ctx.Request.Header.Del("Connection")
	}), nil)
	c, br := fhDial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if resp, _ := fhRead(t, br); !resp.Close || !fhEOF(br) {
		broken(t, lbd, "a client's Connection: close, removed from the request by the handler, kept the connection open")
	}
}

// TestFasthttpHandlerConnectionClose: an answer after which lbd closes the
// connection sets Connection: close in the handler; fasthttp writes it and
// closes the connection through the listener's connection, after the
// answer is out, which is where a lingering close (serverConn.Close) takes
// over.
func TestFasthttpHandlerConnectionClose(t *testing.T) {
	const lbd = "exchange.lingerClose (proxy.go), framingStage.refuse and Server.finish (chain.go), serverConn.Close (watch.go)"
	var rl *recListener
	addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString("bye")
		ctx.SetConnectionClose()
	}), func(ln net.Listener) net.Listener { rl = newRecListener(ln); return rl })
	c, br := fhDial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	sc := within(t, rl.conns, "the connection")
	resp, body := fhRead(t, br)
	if !resp.Close || body != "bye" {
		broken(t, lbd, "answer %q close=%v, want bye with Connection: close", body, resp.Close)
	}
	within(t, sc.closed, "Close on the listener's connection")
	if !fhEOF(br) {
		broken(t, lbd, "bytes after a Connection: close answer")
	}
}

// TestFasthttpCloseOnShutdown: with CloseOnShutdown fasthttp answers with
// Connection: close while ShutdownWithContext runs, and stops once it has
// given up on a connection (its context ended), which it leaves open; lbd
// says Connection: close itself from then on, and Retire leaves such
// connections to finish.
func TestFasthttpCloseOnShutdown(t *testing.T) {
	const lbd = "Server.finish (chain.go); Server.shutdown and Retire (server.go)"
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	var rl *recListener
	s := fhServer(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			arrived <- struct{}{}
			<-release
		}
	})
	addr := fhServe(t, s, func(ln net.Listener) net.Listener { rl = newRecListener(ln); return rl })

	// While Shutdown runs.
	c, br := fhDial(t, addr)
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	within(t, arrived, "the request")
	shut := make(chan error, 1)
	go func() { shut <- s.ShutdownWithContext(context.Background()) }()
	within(t, rl.closed, "Shutdown to close the listener")
	release <- struct{}{}
	if resp, _ := fhRead(t, br); !resp.Close {
		broken(t, lbd, "an answer during Shutdown without Connection: close")
	}
	if err := within(t, shut, "Shutdown"); err != nil {
		t.Fatal(err)
	}

	// After Shutdown gave up.
	s2 := fhServer(s.Handler)
	addr = fhServe(t, s2, nil)
	c, br = fhDial(t, addr)
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	within(t, arrived, "the request")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s2.ShutdownWithContext(ctx); err == nil {
		t.Fatal("Shutdown did not wait for the request in flight")
	}
	release <- struct{}{}
	if resp, _ := fhRead(t, br); resp.Close {
		broken(t, lbd, "Connection: close after Shutdown gave up (Server.finish's own could go)")
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := fhRead(t, br); resp.StatusCode != 200 {
		broken(t, lbd, "a connection Shutdown gave up on was not left to go on")
	}
}

// TestFasthttpErrorResetsResponse: the chain answers refusals with
// RequestCtx.Error and sets WWW-Authenticate, Retry-After and Connection:
// close after it, since Error resets the response: headers set before it
// are gone.
func TestFasthttpErrorResetsResponse(t *testing.T) {
	const lbd = "authStage.serve, limitStage.serve and framingStage.refuse (chain.go)"
	addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Before", "1")
		ctx.SetConnectionClose()
		ctx.Error("unauthorized", fasthttp.StatusUnauthorized)
		ctx.Response.Header.Set("WWW-Authenticate", "Bearer")
	}), nil)
	c, br := fhDial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := fhRead(t, br)
	if resp.StatusCode != 401 || body != "unauthorized" || resp.Header.Get("WWW-Authenticate") != "Bearer" {
		broken(t, lbd, "answer %d %q %v: a header set after Error is lost", resp.StatusCode, body, resp.Header)
	}
	if resp.Header.Get("X-Before") != "" || resp.Close {
		broken(t, lbd, "Error kept what was set before it (X-Before %q, close %v)", resp.Header.Get("X-Before"), resp.Close)
	}
}

// TestFasthttpErrorHandler: parseError maps fasthttp's parse errors to
// 431, 408 and 400 by their type, and relies on the connection closing
// after its answer. The watchdog cuts a slow request by a read deadline in
// the past, which fasthttp reports as a timeout, and answers; an idle
// keep-alive connection cut that way is closed without an answer.
func TestFasthttpErrorHandler(t *testing.T) {
	const lbd = "Server.parseError (server.go); watchdog.cut (watch.go)"
	errs := make(chan error, 1)
	var rl *recListener
	s := fhServer(func(ctx *fasthttp.RequestCtx) {})
	s.ErrorHandler = func(ctx *fasthttp.RequestCtx, err error) {
		errs <- err
		ctx.Error("refused", 499)
	}
	addr := fhServe(t, s, func(ln net.Listener) net.Listener { rl = newRecListener(ln); return rl })
	for _, tc := range []struct {
		name, send string
		cut        bool
		kind       func(error) bool
	}{
		{"header too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 2*limited(Config{}).MaxHeaderBytes) + "\r\n\r\n", false,
			func(err error) bool { var small *fasthttp.ErrSmallBuffer; return errors.As(err, &small) }},
		{"cut in the header", "GET / HTTP/1.1\r\nHost: x\r\n", true, timedOut},
		{"cut before a byte", "", true, timedOut},
		{"garbage", "NOT HTTP\r\n\r\n", false, func(err error) bool {
			var small *fasthttp.ErrSmallBuffer
			return err != nil && !timedOut(err) && !errors.As(err, &small)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := fhDial(t, addr)
			io.WriteString(c, tc.send)
			sc := within(t, rl.conns, "the connection")
			if tc.cut {
				sc.Conn.SetReadDeadline(cutTime)
			}
			if err := within(t, errs, "ErrorHandler"); !tc.kind(err) {
				broken(t, lbd, "ErrorHandler got %T %v", err, err)
			}
			resp, _ := fhRead(t, br)
			if resp.StatusCode != 499 || !resp.Close || !fhEOF(br) {
				broken(t, lbd, "after ErrorHandler: %d close=%v, want its answer and the connection closed", resp.StatusCode, resp.Close)
			}
		})
	}
	t.Run("idle keep-alive cut", func(t *testing.T) {
		c, br := fhDial(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		sc := within(t, rl.conns, "the connection")
		fhRead(t, br)
		sc.Conn.SetReadDeadline(cutTime)
		if rest, _ := io.ReadAll(br); len(rest) != 0 {
			broken(t, lbd, "an idle connection cut got %q", rest)
		}
		select {
		case err := <-errs:
			broken(t, lbd, "ErrorHandler called for an idle connection cut: %v", err)
		default:
		}
	})
}

// TestFasthttpRawRequest: the framing guard checks the raw header block,
// since fasthttp passes on what another parser could read differently
// (Content-Length with Transfer-Encoding, obs-fold lines); it routes and
// forwards the target and Host it reads, and refuses versions other than
// 1.0 and 1.1 itself. That rests on RawHeaders being the header block as
// received, up to and including its empty line, on RequestURI and Protocol
// being as sent, and on Host being the Host header whatever an
// absolute-form target names; a second Host never reaches the handler.
func TestFasthttpRawRequest(t *testing.T) {
	const lbd = "framingStage.serve, scanHeader, exchange.requestTarget and state.repeatedRouteHeader (chain.go)"
	got := make(chan string, 1)
	addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Request.Header
		got <- fmt.Sprintf("%s %s %s %q", h.Protocol(), h.RequestURI(), h.Host(), h.RawHeaders())
		if ctx.Request.IsBodyStream() {
			io.Copy(io.Discard, ctx.Request.BodyStream())
		}
	}), nil)
	for _, tc := range []struct{ line, header, want string }{
		{"GET /a/../b%2F/?q=1 HTTP/1.1", "host: h\r\nX-Mixed-case: 1\r\n\r\n", "HTTP/1.1 /a/../b%2F/?q=1 h"},
		{"GET http://other.example/x HTTP/1.1", "Host: h\r\n\r\n", "HTTP/1.1 http://other.example/x h"},
		{"GET / HTTP/1.2", "Host: h\r\n\r\n", "HTTP/1.2 / h"},
		{"POST / HTTP/1.1", "Host: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "HTTP/1.1 / h"},
		{"GET / HTTP/1.1", "Host: h\r\nX-A: 1\r\n  folded\r\n\r\n", "HTTP/1.1 / h"},
	} {
		c, br := fhDial(t, addr)
		io.WriteString(c, tc.line+"\r\n"+tc.header)
		raw, _, _ := strings.Cut(tc.header, "\r\n\r\n")
		want := fmt.Sprintf("%s %q", tc.want, raw+"\r\n\r\n")
		if g := within(t, got, "the handler: "+tc.line); g != want {
			broken(t, lbd, "%q: the handler saw\n\t%s\nwant\n\t%s", tc.line+"\r\n"+tc.header, g, want)
		}
		fhRead(t, br)
	}
	c, br := fhDial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
	if resp, _ := fhRead(t, br); resp.StatusCode != 400 {
		broken(t, lbd, "two Host headers: %d, want 400 from fasthttp", resp.StatusCode)
	}
}

// TestFasthttpHeaderNamesNormalized: lbd removes hop-by-hop, forwarding and
// claim headers by exact canonical name, which a client's lower-case
// header must not escape: fasthttp stores names in canonical case (All,
// Write), and Peek and Del find them whatever case they are given, while
// RawHeaders keeps the client's case for the framing guard. A HostClient's
// response header is normalised the same way.
func TestFasthttpHeaderNamesNormalized(t *testing.T) {
	const lbd = "newServer and Server.client's DisableHeaderNamesNormalizing (server.go, proxy.go); " +
		"stripHop, proxyStage.prepareRequest (proxy.go); authStage.serve (chain.go); route.canonicalName (route/route.go)"
	got := make(chan string, 1)
	addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Request.Header
		var names []string
		for k := range h.All() {
			names = append(names, string(k))
		}
		peek := string(h.Peek("X-FORWARDED-FOR")) + "," + string(h.PeekBytes([]byte("x-forwarded-for")))
		h.Del("keep-alive")
		var w bytes.Buffer
		bw := bufio.NewWriter(&w)
		ctx.Request.Write(bw)
		bw.Flush()
		got <- fmt.Sprintf("%s|%s|%t|%q", strings.Join(names, " "), peek, bytes.Contains(h.RawHeaders(), []byte("x-forwarded-for:")), w.String())
	}), nil)
	c, br := fhDial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nhost: h\r\nx-forwarded-for: 1.2.3.4\r\nKEEP-ALIVE: 5\r\n\r\n")
	want := fmt.Sprintf("Host X-Forwarded-For Keep-Alive|1.2.3.4,1.2.3.4|true|%q", "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
	if g := within(t, got, "the handler"); g != want {
		broken(t, lbd, "request header names:\n\t%s\nwant\n\t%s", g, want)
	}
	fhRead(t, br)

	be := listenRaw(t, func(c rawConn) {
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nkeep-alive: timeout=5\r\nx-internal: 1\r\n\r\nok")
	})
	hc := &fasthttp.HostClient{Addr: be.String()}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + be.String() + "/")
	if err := hc.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	found := string(resp.Header.Peek("keep-alive")) + "," + string(resp.Header.Peek("X-INTERNAL"))
	resp.Header.Del("KEEP-ALIVE")
	resp.Header.Del("x-internal")
	if found != "timeout=5,1" || resp.Header.Peek("Keep-Alive") != nil || resp.Header.Peek("X-Internal") != nil {
		broken(t, lbd, "a backend's lower-case headers: Peek %q, left after Del: %q", found, resp.Header.String())
	}
}

// TestFasthttpDuplicateHeaders: routing reads the first value of a header
// (and refuses repeated route headers itself), X-Forwarded-For from a
// trusted proxy is extended from all its values, and a removed header must
// go in every copy: Peek returns the first of repeated headers, PeekAll and
// All every one in order, Del removes them all, and Write writes each.
func TestFasthttpDuplicateHeaders(t *testing.T) {
	const lbd = "routeStage.serve, limitKey and state.clientIP (chain.go); proxyStage.prepareRequest, stripHop and del (proxy.go)"
	got := make(chan string, 1)
	addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Request.Header
		var all []string
		for k, v := range h.All() {
			if string(k) == "X-Tenant" {
				all = append(all, string(v))
			}
		}
		var peekAll []string
		for _, v := range h.PeekAll("X-Tenant") {
			peekAll = append(peekAll, string(v))
		}
		var w bytes.Buffer
		bw := bufio.NewWriter(&w)
		ctx.Request.Write(bw)
		bw.Flush()
		written := strings.Count(w.String(), "\r\nX-Tenant: ")
		h.Del("X-Tenant")
		got <- fmt.Sprintf("%s %s %s %s %d %q", h.Peek("X-Tenant-Was"), h.PeekBytes([]byte("X-Route")),
			strings.Join(peekAll, ","), strings.Join(all, ","), written, h.PeekAll("X-Tenant"))
	}), nil)
	c, br := fhDial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant-Was: first\r\nX-Tenant-Was: second\r\nX-Route: r1\r\nx-route: r2\r\n"+
		"X-Tenant: a\r\nx-tenant: b\r\nX-Tenant: c\r\n\r\n")
	if g, want := within(t, got, "the handler"), "first r1 a,b,c a,b,c 3 []"; g != want {
		broken(t, lbd, "repeated headers: %s, want %s", g, want)
	}
	fhRead(t, br)
}

// TestFasthttpConnectionHeaderValue: a WebSocket upgrade is told by the
// Upgrade token in Connection, which may come with close; and the headers a
// backend's Connection names are removed, which close must not hide:
// Peek("Connection") is the whole list the client sent, close included,
// and a response's PeekAll("Connection") holds every name listed.
func TestFasthttpConnectionHeaderValue(t *testing.T) {
	const lbd = "isWebSocket and proxyStage.tunnel (upgrade.go); stripHop (proxy.go)"
	got := make(chan string, 1)
	addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
		got <- string(ctx.Request.Header.Peek("Connection"))
	}), nil)
	for _, v := range []string{"keep-alive, Upgrade", "Upgrade, close"} {
		c, br := fhDial(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\nConnection: "+v+"\r\n\r\n")
		if g := within(t, got, "the handler"); g != v {
			broken(t, lbd, "Peek(Connection) = %q for %q", g, v)
		}
		fhRead(t, br)
	}
	for _, v := range []string{"close, X-Secret", "X-Secret", "keep-alive, X-Secret"} {
		var h fasthttp.ResponseHeader
		if err := h.Read(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nConnection: " + v + "\r\nX-Secret: s\r\nContent-Length: 0\r\n\r\n"))); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, x := range h.PeekAll("Connection") {
			names = append(names, string(x))
		}
		if !strings.Contains(strings.Join(names, ","), "X-Secret") {
			broken(t, lbd, "a response's Connection: %s reads as %q: X-Secret would reach the client", v, names)
		}
	}
}

// TestFasthttpRequestWriteAsGiven: the backend gets the target and Host
// the request was routed by, byte for byte: Request.Write writes the target
// as received with URI().DisablePathNormalizing (as the HostClient sets it
// from its own DisablePathNormalizing), a target set with
// SetRequestURIBytes as set, and with UseHostHeader the Host header as it
// is. A body without Content-Type gets none with SetNoDefaultContentType,
// and a Connection: close removed with ResetConnectionClose is not written.
func TestFasthttpRequestWriteAsGiven(t *testing.T) {
	const lbd = "exchange.requestTarget (chain.go); proxyStage.prepareRequest and Server.client (proxy.go); proxyStage.tunnel (upgrade.go)"
	got := make(chan string, 1)
	addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
		req := &ctx.Request
		if string(req.Header.Peek("X-Set")) != "" {
			req.SetRequestURIBytes(req.Header.Peek("X-Set"))
		} else {
			req.URI().DisablePathNormalizing = true
		}
		req.UseHostHeader = true
		req.Header.ResetConnectionClose()
		req.Header.SetNoDefaultContentType(true)
		req.Header.Del("X-Set")
		if req.IsBodyStream() {
			b, _ := io.ReadAll(req.BodyStream())
			req.SetBody(b)
		}
		var w bytes.Buffer
		bw := bufio.NewWriter(&w)
		req.Write(bw)
		bw.Flush()
		got <- w.String()
	}), nil)
	for _, tc := range []struct{ req, want string }{
		{"GET /a/../b//c%2F?x=%41 HTTP/1.1\r\nHost: Edge.Example\r\n\r\n",
			"GET /a/../b//c%2F?x=%41 HTTP/1.1\r\nHost: Edge.Example\r\n\r\n"},
		{"GET http://edge.example/a/../x HTTP/1.1\r\nHost: Edge.Example\r\nX-Set: /x\r\n\r\n",
			"GET /x HTTP/1.1\r\nHost: Edge.Example\r\n\r\n"},
		{"POST /p HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 2\r\n\r\nab",
			"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab"},
	} {
		c, br := fhDial(t, addr)
		io.WriteString(c, tc.req)
		if g := within(t, got, "the handler"); g != tc.want {
			broken(t, lbd, "%q written as\n\t%q\nwant\n\t%q", tc.req, g, tc.want)
		}
		fhRead(t, br)
	}

	// The HostClient writes the target as set when its own
	// DisablePathNormalizing is on.
	seen := make(chan string, 1)
	be := listenRaw(t, func(c rawConn) {
		line, _ := bufio.NewReader(c).ReadString('\n')
		seen <- line
		io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
	})
	hc := &fasthttp.HostClient{Addr: be.String(), DisablePathNormalizing: true}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("/a/../b//c%2F")
	req.Header.SetHost("h")
	if err := hc.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	if g := within(t, seen, "the backend"); g != "GET /a/../b//c%2F HTTP/1.1\r\n" {
		broken(t, lbd, "the HostClient wrote %q", g)
	}
}

// TestFasthttpRequestTrailer: lbd never lets a chunked body's trailer
// fields reach the backend (they never passed the header guard): they join
// the request header when the body's stream reaches its end, which is
// while the request, header already written, is being sent, and
// Request.Write writes whatever trailer fields are left after the last
// chunk, so bodyReader deletes them at that moment.
func TestFasthttpRequestTrailer(t *testing.T) {
	const lbd = "bodyReader.Read and dropTrailer (proxy.go); framingStage.serve (chain.go)"
	for _, drop := range []bool{false, true} {
		got := make(chan string, 1)
		addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
			req := &ctx.Request
			before := string(req.Header.Peek("X-Trail"))
			src := req.BodyStream()
			var tr string
			req.SetBodyStream(readerFunc(func(p []byte) (int, error) {
				n, err := src.Read(p)
				if err == io.EOF {
					tr = string(req.Header.TrailerHeader())
					if drop {
						dropTrailer(&req.Header)
					}
				}
				return n, err
			}), -1)
			var w bytes.Buffer
			bw := bufio.NewWriter(&w)
			err := req.Write(bw)
			bw.Flush()
			got <- fmt.Sprintf("%q %q %q %v", before, tr, w.String(), err)
		}), nil)
		c, br := fhDial(t, addr)
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-Trail: t\r\n\r\n")
		trailer := "X-Trail: t\r\n"
		if drop {
			trailer = ""
		}
		want := fmt.Sprintf("%q %q %q <nil>", "", "X-Trail: t\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n"+trailer+"\r\n")
		if g := within(t, got, "the handler"); g != want {
			broken(t, lbd, "trailer (dropped at the end: %v): got\n\t%s\nwant\n\t%s", drop, g, want)
		}
		fhRead(t, br)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestFasthttpTakeBodyThenNextRequest: a small body is read whole from its
// stream and set with SetBody, so that it can be sent again; the next
// request on the connection must still be read from the right place.
func TestFasthttpTakeBodyThenNextRequest(t *testing.T) {
	const lbd = "exchange.takeSmallBody (proxy.go)"
	addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
		req := &ctx.Request
		if req.IsBodyStream() {
			buf := make([]byte, req.Header.ContentLength())
			if _, err := io.ReadFull(req.BodyStream(), buf); err != nil {
				ctx.Error(err.Error(), 400)
				return
			}
			req.SetBody(buf)
		}
		fmt.Fprintf(ctx, "%s %q", req.Header.Method(), req.Body())
	}), nil)
	c, br := fhDial(t, addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: h\r\n\r\n")
	for _, want := range []string{`POST "hello"`, `GET ""`} {
		if resp, body := fhRead(t, br); resp.StatusCode != 200 || body != want {
			broken(t, lbd, "pipelined answer %d %q, want %q", resp.StatusCode, body, want)
		}
	}
}

// fakeTLSConn is a connection with the two methods by which fasthttp tells
// a TLS one.
type fakeTLSConn struct{ net.Conn }

func (fakeTLSConn) Handshake() error                     { return nil }
func (fakeTLSConn) ConnectionState() tls.ConnectionState { return tls.ConnectionState{} }

// TestFasthttpIsTLSByMethods: lbd's listener wraps every accepted
// connection, TLS ones in a type with Handshake and ConnectionState, which
// is how fasthttp tells TLS (IsTLS), and finds its wrapper again as
// ctx.Conn().
func TestFasthttpIsTLSByMethods(t *testing.T) {
	const lbd = "watchListener.Accept, tlsServerConn and clientConn (watch.go); proxyStage.prepareRequest (proxy.go)"
	for _, isTLS := range []bool{false, true} {
		var rl *recListener
		handed := make(chan net.Conn, 1)
		got := make(chan string, 1)
		addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
			got <- fmt.Sprintf("%v %v", ctx.IsTLS(), ctx.Conn() == <-handed)
		}), func(ln net.Listener) net.Listener {
			rl = newRecListener(ln)
			rl.wrap = func(c *recConn) net.Conn {
				var out net.Conn = c
				if isTLS {
					out = fakeTLSConn{c}
				}
				handed <- out
				return out
			}
			return rl
		})
		c, br := fhDial(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		if g, want := within(t, got, "the handler"), fmt.Sprintf("%v true", isTLS); g != want {
			broken(t, lbd, "IsTLS, ctx.Conn() is the listener's: %s, want %s", g, want)
		}
		fhRead(t, br)
	}
}

// TestFasthttpStreamsResponse: a response streamed from a backend (an
// event stream above all) goes to the client as it comes: SetBodyStream
// with a length of -1 (chunked from the backend) or -2 (to its close)
// goes chunked, each Read's bytes flushed before the next Read, and a
// known length goes with Content-Length. To an HTTP/1.0 client a stream of
// unknown length goes chunked too, which it cannot read, so lbd reads such
// a body whole for it.
func TestFasthttpStreamsResponse(t *testing.T) {
	const lbd = "proxyStage.serve and streamTail (proxy.go); proxyStage.checkResponse and bufferWhole (proxy.go)"
	next := make(chan struct{})
	addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/known":
			ctx.Response.SetBodyStream(strings.NewReader("0123456789"), 10)
		case "/old":
			ctx.Response.SetBodyStream(strings.NewReader("for 1.0"), -1)
		default:
			n := 0
			size := -1
			if string(ctx.Path()) == "/identity" {
				size = -2
			}
			ctx.Response.SetBodyStream(readerFunc(func(p []byte) (int, error) {
				n++
				switch n {
				case 1:
					return copy(p, "first"), nil
				case 2:
					<-next // until the client has the first piece
					return copy(p, "second"), nil
				}
				return 0, io.EOF
			}), size)
		}
	}), nil)
	for _, path := range []string{"/chunked", "/identity"} {
		c, br := fhDial(t, addr)
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
			broken(t, lbd, "%s: transfer encoding %q, want chunked", path, resp.TransferEncoding)
		}
		first := make([]byte, 5)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first" {
			broken(t, lbd, "%s: the first piece was not flushed before the next Read: %q, %v", path, first, err)
		}
		next <- struct{}{}
		if rest, err := io.ReadAll(resp.Body); err != nil || string(rest) != "second" {
			broken(t, lbd, "%s: rest %q, %v", path, rest, err)
		}
	}
	c, br := fhDial(t, addr)
	io.WriteString(c, "GET /known HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, body := fhRead(t, br); resp.ContentLength != 10 || body != "0123456789" {
		broken(t, lbd, "known length: %d %q", resp.ContentLength, body)
	}
	c, br = fhDial(t, addr)
	io.WriteString(c, "GET /old HTTP/1.0\r\nHost: h\r\n\r\n")
	head, _ := br.ReadString('\n')
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "Transfer-Encoding: chunked") {
		broken(t, lbd, "an HTTP/1.0 client got %q %q: if fasthttp no longer sends it chunked, checkResponse's buffering may go", head, rest)
	}
}

// closeRecorder is a body stream that records how it is closed; it has no
// Close method, as streamTail has none.
type closeRecorder struct {
	r      io.Reader
	closes chan error
}

func (c *closeRecorder) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *closeRecorder) CloseWithError(err error) error {
	c.closes <- err
	return nil
}

// endless yields bytes forever.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'e'
	}
	return len(p), nil
}

// TestFasthttpBodyStreamClosedWithError: streamTail gives the backend's
// response back (its connection to the pool, or closed) and the backend's
// active count when fasthttp ends the body stream, by CloseWithError, with
// nil once the body is all written and with the write's error when the
// client goes away mid-body.
func TestFasthttpBodyStreamClosedWithError(t *testing.T) {
	const lbd = "streamTail.CloseWithError (proxy.go)"
	closes := make(chan error, 2)
	addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/endless" {
			ctx.Response.SetBodyStream(&closeRecorder{endless{}, closes}, -1)
			return
		}
		ctx.Response.SetBodyStream(&closeRecorder{strings.NewReader("all of it"), closes}, 9)
	}), nil)
	c, br := fhDial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, body := fhRead(t, br); body != "all of it" {
		t.Fatalf("body %q", body)
	}
	if err := within(t, closes, "CloseWithError"); err != nil {
		broken(t, lbd, "a body written whole ended with CloseWithError(%v)", err)
	}
	c, br = fhDial(t, addr)
	io.WriteString(c, "GET /endless HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	c.SetLinger(0)
	c.Close() // a reset: the server's next writes fail
	if err := within(t, closes, "CloseWithError after the client left"); err == nil {
		broken(t, lbd, "a body cut short by the client ended with CloseWithError(nil)")
	}
}

// TestFasthttpHijackNoResponse: a tunnel writes its 101 from the hijack
// handler (HijackSetNoResponse), since fasthttp skips the hijack handler
// after writing the answer of a request that closes its connection, which
// would leave the backend connection behind; with no answer to write it
// runs it, for Connection: close, HTTP/1.0 and during Shutdown alike, and
// writes nothing before it.
func TestFasthttpHijackNoResponse(t *testing.T) {
	const lbd = "proxyStage.tunnel (upgrade.go)"
	var rl *recListener
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	ran := make(chan string, 1)
	s := fhServer(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/shutdown" {
			arrived <- struct{}{}
			<-release
		}
		noResponse := string(ctx.Path()) != "/answer"
		if !noResponse {
			ctx.SetBodyString("answer")
		}
		ctx.HijackSetNoResponse(noResponse)
		ctx.Hijack(func(c net.Conn) {
			ran <- string(ctx.Path())
			io.WriteString(c, "tunnel")
		})
	})
	addr := fhServe(t, s, func(ln net.Listener) net.Listener { rl = newRecListener(ln); return rl })
	for _, tc := range []struct{ path, proto, header string }{
		{"/plain", "HTTP/1.1", ""},
		{"/close", "HTTP/1.1", "Connection: close\r\n"},
		{"/old", "HTTP/1.0", ""},
	} {
		c, br := fhDial(t, addr)
		io.WriteString(c, "GET "+tc.path+" "+tc.proto+"\r\nHost: h\r\n"+tc.header+"\r\n")
		if got := within(t, ran, "the hijack handler of "+tc.path); got != tc.path {
			t.Fatalf("hijack handler of %s ran for %s", tc.path, got)
		}
		if all, _ := io.ReadAll(br); string(all) != "tunnel" {
			broken(t, lbd, "%s: the client got %q, want only what the hijack handler wrote", tc.path, all)
		}
	}
	c, br := fhDial(t, addr)
	io.WriteString(c, "GET /answer HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	if resp, body := fhRead(t, br); body != "answer" || !resp.Close {
		t.Fatalf("answer %q", body)
	}
	select {
	case p := <-ran:
		broken(t, lbd, "the hijack handler of a closing request with an answer ran (%s): HijackSetNoResponse may no longer be needed", p)
	default:
		if !fhEOF(br) {
			t.Fatal("bytes after the answer")
		}
	}

	c, br = fhDial(t, addr)
	io.WriteString(c, "GET /shutdown HTTP/1.1\r\nHost: h\r\n\r\n")
	within(t, arrived, "the request")
	go s.ShutdownWithContext(context.Background())
	within(t, rl.closed, "Shutdown to close the listener")
	close(release)
	if got := within(t, ran, "the hijack handler during Shutdown"); got != "/shutdown" {
		t.Fatalf("ran for %s", got)
	}
	if all, _ := io.ReadAll(br); string(all) != "tunnel" {
		broken(t, lbd, "during Shutdown the client got %q, want only what the hijack handler wrote", all)
	}
}

// TestFasthttpHijackedConn: the tunnel copies between the hijacked
// connection and the backend: the hijacked connection must first yield
// what the client sent right after its request, read and write through
// lbd's own connection (whose reads and writes keep the tunnel timeout);
// since its Close does nothing, lbd closes the client through its own
// connection, and fasthttp closes it once the hijack handler returns.
// Server.finish tells a hijacked request by ctx.Hijacked, in the handler.
func TestFasthttpHijackedConn(t *testing.T) {
	const lbd = "proxyStage.tunnel (upgrade.go); serverConn.Read, Write and tunnel (watch.go); Server.finish (chain.go)"
	var rl *recListener
	steps := make(chan struct{})
	hijacked := make(chan bool, 1)
	got := make(chan string, 1)
	addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
		wc := ctx.Conn().(*recConn)
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) {
			wc.mu.Lock()
			reads, writes := wc.reads, wc.writes
			wc.mu.Unlock()
			early := make([]byte, 5)
			_, err := io.ReadFull(c, early)
			c.Close()
			io.WriteString(c, "after Close")
			<-steps // the client has it
			c.Write([]byte("!"))
			late := make([]byte, 4)
			io.ReadFull(c, late)
			wc.mu.Lock()
			through := wc.reads > reads && wc.writes > writes
			wc.mu.Unlock()
			got <- fmt.Sprintf("%q %v %q %v %v", early, err, late, through, <-hijacked)
		})
		hijacked <- ctx.Hijacked()
	}), func(ln net.Listener) net.Listener { rl = newRecListener(ln); return rl })
	c, br := fhDial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\nearly")
	msg := make([]byte, len("after Close"))
	if _, err := io.ReadFull(br, msg); err != nil || string(msg) != "after Close" {
		broken(t, lbd, "after Close on the hijacked connection the client got %q, %v", msg, err)
	}
	steps <- struct{}{}
	io.WriteString(c, "late")
	if g, want := within(t, got, "the hijack handler"), `"early" <nil> "late" true true`; g != want {
		broken(t, lbd, "hijacked connection: %s, want %s (bytes after the request, then through the listener's connection, Hijacked)", g, want)
	}
	if rest, err := io.ReadAll(br); err != nil || string(rest) != "!" {
		broken(t, lbd, "the client got %q, %v: the connection is not closed when the hijack handler returns", rest, err)
	}
}

// TestFasthttpHijackAfterPipelinedAnswer: fasthttp flushes the answers of
// earlier pipelined requests before it runs a hijack handler, so the 101
// the tunnel writes follows them; and when that flush fails (the client
// went away), the hijack handler never runs, so the tunnel closes its
// backend connection on a timer of its own.
func TestFasthttpHijackAfterPipelinedAnswer(t *testing.T) {
	const lbd = "proxyStage.tunnel's orphan timer (upgrade.go)"
	ran := make(chan struct{}, 1)
	var rl *recListener
	var failNext atomic.Bool
	addr := fhServe(t, fhServer(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != "/up" {
			ctx.SetBodyString("a")
			return
		}
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) {
			ran <- struct{}{}
			io.WriteString(c, "tunnel")
		})
	}), func(ln net.Listener) net.Listener {
		rl = newRecListener(ln)
		rl.wrap = func(c *recConn) net.Conn {
			c.failWrite.Store(failNext.Load())
			return c
		}
		return rl
	})
	pipelined := "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /up HTTP/1.1\r\nHost: h\r\n\r\n"

	c, br := fhDial(t, addr)
	io.WriteString(c, pipelined)
	within(t, rl.conns, "the connection")
	if _, body := fhRead(t, br); body != "a" {
		broken(t, lbd, "the first pipelined answer %q", body)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "tunnel" {
		broken(t, lbd, "after the first answer the client got %q, want the hijack handler's bytes", rest)
	}
	within(t, ran, "the hijack handler")

	failNext.Store(true)
	c, _ = fhDial(t, addr)
	io.WriteString(c, pipelined)
	sc := within(t, rl.conns, "the connection")
	within(t, sc.closed, "the connection to close")
	select {
	case <-ran:
		broken(t, lbd, "the hijack handler ran although the earlier answer could not be written")
	default:
	}
}

// TestFasthttpShutdownLeavesHijacked: Shutdown waits for tunnels itself
// (watchdog.waitClients), since ShutdownWithContext does not: it returns
// once the served connections are gone, idle keep-alive ones closed,
// hijacked ones left open. OpenConnections adds nothing for tunnels either:
// GetOpenConnectionsCount counts served connections, idle ones included,
// and not hijacked ones.
func TestFasthttpShutdownLeavesHijacked(t *testing.T) {
	const lbd = "Server.shutdown and Server.OpenConnections (server.go)"
	hijacked := make(chan net.Conn, 1)
	release := make(chan struct{})
	s := fhServer(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/up" {
			ctx.HijackSetNoResponse(true)
			ctx.Hijack(func(c net.Conn) {
				hijacked <- c
				<-release
				io.WriteString(c, "still here")
			})
		}
	})
	addr := fhServe(t, s, nil)
	idle, idleBr := fhDial(t, addr)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	fhRead(t, idleBr)
	up, upBr := fhDial(t, addr)
	io.WriteString(up, "GET /up HTTP/1.1\r\nHost: h\r\n\r\n")
	within(t, hijacked, "the hijack")
	nettest.Eventually(t, "the count to settle", func() bool { return s.GetOpenConnectionsCount() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.ShutdownWithContext(ctx); err != nil {
		broken(t, lbd, "ShutdownWithContext with a hijacked connection open: %v", err)
	}
	if !fhEOF(idleBr) {
		broken(t, lbd, "Shutdown left an idle keep-alive connection open")
	}
	close(release)
	msg := make([]byte, len("still here"))
	if _, err := io.ReadFull(upBr, msg); err != nil {
		broken(t, lbd, "Shutdown closed a hijacked connection: %v", err)
	}
	_ = up
}

// TestFasthttpConcurrencyLimit: max_connections is fasthttp's Concurrency:
// past it, a new connection is answered 503 and closed before anything is
// read from it, and RejectedConnections is GetRejectedConnectionsCount.
func TestFasthttpConcurrencyLimit(t *testing.T) {
	const lbd = "newServer's Concurrency and Server.RejectedConnections (server.go)"
	s := fhServer(func(ctx *fasthttp.RequestCtx) {})
	s.Concurrency = 1
	addr := fhServe(t, s, nil)
	first, br := fhDial(t, addr)
	io.WriteString(first, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	fhRead(t, br) // served, and kept open
	_, br2 := fhDial(t, addr)
	resp, _ := fhRead(t, br2)
	if resp.StatusCode != 503 || !fhEOF(br2) {
		broken(t, lbd, "a connection past Concurrency got %d", resp.StatusCode)
	}
	if n := s.GetRejectedConnectionsCount(); n != 1 {
		broken(t, lbd, "GetRejectedConnectionsCount %d, want 1", n)
	}
}

// TestFasthttpUpgradeResponseHeader: the tunnel reads the backend's 101
// with ResponseHeader.Read and then copies what its reader holds to the
// client, so Read must leave whatever followed the header there; it
// writes the 101 from Header(), which must carry no body framing, and
// keeps the Connection: Upgrade it sets.
func TestFasthttpUpgradeResponseHeader(t *testing.T) {
	const lbd = "proxyStage.tunnel (upgrade.go)"
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Internal\r\nX-Internal: 1\r\n\r\nframes"))
	var head fasthttp.ResponseHeader
	if err := head.Read(br); err != nil || head.StatusCode() != 101 {
		broken(t, lbd, "reading a 101: %d %v", head.StatusCode(), err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "frames" {
		broken(t, lbd, "after the 101's header the reader holds %q, want the bytes that followed it", rest)
	}
	var out fasthttp.ResponseHeader
	out.SetNoDefaultContentType(true)
	head.CopyTo(&out)
	stripHop(&out, hdrAll, nil, nil)
	out.Set("Connection", "Upgrade")
	out.Set("Upgrade", "websocket")
	out.SetStatusCode(101)
	h := string(out.Header())
	if !strings.HasPrefix(h, "HTTP/1.1 101 Switching Protocols\r\n") || !strings.HasSuffix(h, "\r\n\r\n") ||
		!strings.Contains(h, "\r\nConnection: Upgrade\r\n") || !strings.Contains(h, "\r\nUpgrade: websocket\r\n") ||
		strings.Contains(h, "Content-Length") || strings.Contains(h, "Transfer-Encoding") || strings.Contains(h, "X-Internal") {
		broken(t, lbd, "the 101 written: %q", h)
	}
}

// errDialTest is a dial failure of a test's own.
type errDialTest struct{}

func (errDialTest) Error() string { return "contract test: no connect" }

// TestFasthttpClientDialError: a connect failure, and only that, is tried
// again on another backend whatever the method, which lbd tells by the
// dialError its Dial returns: HostClient.Do gives that error back as it
// is, and does not dial again itself.
func TestFasthttpClientDialError(t *testing.T) {
	const lbd = "dialBackend, isDialError, tryBackends and Server.client (proxy.go)"
	var dials atomic.Int32
	hc := &fasthttp.HostClient{Addr: "127.0.0.1:1", Dial: func(string) (net.Conn, error) {
		dials.Add(1)
		return nil, errDialTest{}
	}, MaxIdemponentCallAttempts: 3, RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, true }}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://127.0.0.1:1/")
	err := hc.Do(req, resp)
	var de errDialTest
	if !errors.As(err, &de) {
		broken(t, lbd, "Do returned %T %v for a failed dial", err, err)
	}
	if n := dials.Load(); n != 1 {
		broken(t, lbd, "fasthttp dialled %d times for one request", n)
	}
}

// TestFasthttpClientClosedKeepAlive: a keep-alive connection the backend
// closed while idle fails before any answer byte; lbd's RetryIfErr sends
// an idempotent request again, which it recognises by a bare io.EOF
// (ErrConnectionClosed only comes out of Do, after the last attempt).
func TestFasthttpClientClosedKeepAlive(t *testing.T) {
	const lbd = "Server.client's RetryIfErr (proxy.go); backendConn (fuse.go)"
	closed := make(chan struct{}, 4)
	var conns atomic.Int32
	be := listenRaw(t, func(c rawConn) {
		conns.Add(1)
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		c.Close() // idle, then closed by the backend
		closed <- struct{}{}
	})
	for _, retry := range []bool{true, false} {
		var seen []error
		hc := &fasthttp.HostClient{Addr: be.String(), MaxIdemponentCallAttempts: 3,
			RetryIfErr: func(_ *fasthttp.Request, _ int, err error) (bool, bool) {
				seen = append(seen, err)
				return false, retry
			}}
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + be.String() + "/")
		if err := hc.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		within(t, closed, "the backend to close")
		err := hc.Do(req, resp)
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		if len(seen) != 1 || seen[0] != io.EOF {
			broken(t, lbd, "RetryIfErr saw %v for a keep-alive connection the backend closed, want one bare io.EOF", seen)
		}
		if retry {
			within(t, closed, "the backend to close")
			if err != nil {
				broken(t, lbd, "the request sent again failed: %v", err)
			}
		} else if !errors.Is(err, fasthttp.ErrConnectionClosed) {
			broken(t, lbd, "Do returned %v when RetryIfErr declined, want ErrConnectionClosed", err)
		}
	}
}

// errWriteTest is the write failure of a connection the test cut, as
// backendConn's errCut is.
var errWriteTest = errors.New("contract test: cut")

// fhCutConn fails every write once cut.
type fhCutConn struct {
	net.Conn
	cut    *atomic.Bool
	closed chan struct{}
}

func (c *fhCutConn) Write(p []byte) (int, error) {
	if c.cut.Load() {
		return 0, errWriteTest
	}
	return c.Conn.Write(p)
}

func (c *fhCutConn) Close() error {
	select {
	case c.closed <- struct{}{}:
	default:
	}
	return c.Conn.Close()
}

// TestFasthttpClientRetriesWriteError: a backend connection the watchdog
// cut says errCut to the next request's write; lbd's RetryIfErr sends the
// request again on another connection whatever its method, since it never
// left. That rests on the write error reaching RetryIfErr as it is, the
// connection being closed, and the request going again on a new one, at
// most MaxIdemponentCallAttempts times in all; a request whose body is a
// stream is never sent again (which is why lbd reads small bodies whole).
func TestFasthttpClientRetriesWriteError(t *testing.T) {
	const lbd = "errCut and backendConn.Write (fuse.go); Server.client's RetryIfErr (proxy.go); exchange.takeSmallBody (proxy.go)"
	be := listenRaw(t, func(c rawConn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	var cutAll atomic.Bool
	var dials atomic.Int32
	var last *atomic.Bool
	closed := make(chan struct{}, 8)
	var seen []error
	hc := &fasthttp.HostClient{Addr: be.String(), MaxIdemponentCallAttempts: 3,
		Dial: func(addr string) (net.Conn, error) {
			dials.Add(1)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			cut := new(atomic.Bool)
			cut.Store(cutAll.Load())
			last = cut
			return &fhCutConn{Conn: c, cut: cut, closed: closed}, nil
		},
		RetryIfErr: func(_ *fasthttp.Request, _ int, err error) (bool, bool) {
			seen = append(seen, err)
			return false, errors.Is(err, errWriteTest)
		}}
	t.Cleanup(hc.CloseIdleConnections)
	do := func(body io.Reader) error {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + be.String() + "/")
		req.Header.SetMethod("POST")
		if body != nil {
			req.SetBodyStream(body, 2)
		} else {
			req.SetBodyString("hi")
		}
		return hc.Do(req, resp)
	}
	if err := do(nil); err != nil {
		t.Fatal(err)
	}
	last.Store(true) // cut after its answer, idle in the pool
	if err := do(nil); err != nil || len(seen) != 1 || !errors.Is(seen[0], errWriteTest) {
		broken(t, lbd, "a POST on a cut connection: %v, RetryIfErr saw %v", err, seen)
	}
	within(t, closed, "the cut connection to close")
	if n := dials.Load(); n != 2 {
		broken(t, lbd, "%d dials, want the first and one for the request sent again", n)
	}

	cutAll.Store(true)
	last.Store(true)
	seen, dials = nil, atomic.Int32{}
	if err := do(nil); !errors.Is(err, errWriteTest) || len(seen) != 2 {
		broken(t, lbd, "every connection cut: %v after %d RetryIfErr calls, want the write error after MaxIdemponentCallAttempts-1", err, len(seen))
	}
	seen = nil
	if err := do(strings.NewReader("hi")); !errors.Is(err, errWriteTest) || len(seen) != 0 {
		broken(t, lbd, "a streamed body on a cut connection: %v, RetryIfErr saw %v: it must never be sent again", err, seen)
	}
}

// TestFasthttpClientStreamBody: lbd never holds a backend's response body
// whole beyond a small bound: with StreamBody, Do returns once the header
// is in, and the body is a stream, a ReadCloserWithError. Read to its end
// and replaced with SetBody it gives its connection back to the pool;
// closed with an error it closes the connection.
func TestFasthttpClientStreamBody(t *testing.T) {
	const lbd = "proxyStage.serve, proxyStage.checkResponse, bufferSmall, bufferWhole and streamTail (proxy.go)"
	more := make(chan struct{}, 1)
	var conns atomic.Int32
	gone := make(chan struct{}, 4)
	be := listenRaw(t, func(c rawConn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				gone <- struct{}{}
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
			<-more
			if _, err := io.WriteString(c, "56789"); err != nil {
				gone <- struct{}{}
				return
			}
		}
	})
	hc := &fasthttp.HostClient{Addr: be.String()}
	t.Cleanup(hc.CloseIdleConnections)
	get := func() (*fasthttp.Response, error) {
		req := fasthttp.AcquireRequest()
		defer fasthttp.ReleaseRequest(req)
		req.SetRequestURI("http://" + be.String() + "/")
		resp := fasthttp.AcquireResponse()
		resp.StreamBody = true
		done := make(chan error, 1)
		go func() { done <- hc.Do(req, resp) }()
		return resp, within(t, done, "Do to return before the body is all in")
	}
	resp, err := get()
	if err != nil || !resp.IsBodyStream() {
		broken(t, lbd, "Do with StreamBody: %v, stream %v", err, resp.IsBodyStream())
	}
	if _, ok := resp.BodyStream().(fasthttp.ReadCloserWithError); !ok {
		broken(t, lbd, "the body stream %T is no ReadCloserWithError", resp.BodyStream())
	}
	more <- struct{}{}
	b, err := io.ReadAll(resp.BodyStream())
	if err != nil || string(b) != "0123456789" {
		t.Fatalf("body %q, %v", b, err)
	}
	resp.SetBody(b)
	fasthttp.ReleaseResponse(resp)
	resp, err = get()
	if err != nil || conns.Load() != 1 {
		broken(t, lbd, "after a body read whole and SetBody, the next request took a new connection (%d, %v)", conns.Load(), err)
	}
	resp.BodyStream().(fasthttp.ReadCloserWithError).CloseWithError(errors.New("client gone"))
	fasthttp.ReleaseResponse(resp)
	more <- struct{}{} // the backend ends its answer, then finds the connection closed
	within(t, gone, "the connection closed with an error to close")
	resp, err = get()
	if err != nil || conns.Load() != 2 {
		broken(t, lbd, "after CloseWithError the connection went back to the pool (%d connections, %v)", conns.Load(), err)
	}
	more <- struct{}{}
	io.ReadAll(resp.BodyStream())
	fasthttp.ReleaseResponse(resp)
}
