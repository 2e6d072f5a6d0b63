package l7

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type rawConn = *net.TCPConn

// listenRaw serves each connection of a loopback listener with handle.
func listenRaw(t testing.TB, handle func(rawConn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// rawBackend records every byte it receives and answers each read with one
// small response; it stands in for a backend that would accept anything.
type rawBackend struct {
	mu   sync.Mutex
	seen strings.Builder
	n    atomic.Int64
}

func newRawBackend(t testing.TB) (*rawBackend, netip.AddrPort) {
	rb := &rawBackend{}
	addr := listenRaw(t, func(c rawConn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, _ := io.ReadAll(req.Body)
			rb.n.Add(1)
			rb.mu.Lock()
			rb.seen.WriteString(req.Method + " " + req.RequestURI + " " + string(body) + "\n")
			rb.mu.Unlock()
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	return rb, addr
}

// TestHostileRequests pins the refusals of hostile HTTP/1.1 framing
// and RFC 9112 sections 6.1 and 6.3: each is answered with an error, the
// connection is closed, and nothing reaches the backend.
func TestHostileRequests(t *testing.T) {
	rb, baddr := newRawBackend(t)
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", baddr)),
		MaxHeaderBytes: 4096, MaxBodyBytes: 1024})
	for _, tc := range []struct {
		desc, req string
		code      int
	}{
		{"CL and TE", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400},
		{"duplicate CL differing", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"duplicate CL same", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab", 400},
		{"TE chunked, chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE identity", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\nContent-Length: 1\r\n\r\na", 400},
		{"two TE lines", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"bare LF in chunk line", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\na\r\n0\r\n\r\n", 400},
		{"bare LF header line", "GET / HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n c\r\n\r\n", 400},
		{"obs-fold tab", "GET / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n\tc\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost: h\r\nX-A : b\r\n\r\n", 400},
		{"oversized header", "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("a", 8000) + "\r\n\r\n", 431},
		{"oversized body", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n" + strings.Repeat("a", 2000), 413},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			resp, _, c := rawExchange(t, addr, tc.req)
			if resp.StatusCode != tc.code {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.code)
			}
			if !closedAfter(c) {
				t.Errorf("connection left open")
			}
		})
	}
	// lbd answered each request itself and closed: had it forwarded one,
	// it would have waited for the backend's answer first.
	if n := rb.n.Load(); n != 0 {
		rb.mu.Lock()
		t.Errorf("backend saw %d requests:\n%s", n, rb.seen.String())
		rb.mu.Unlock()
	}
	// A well-formed chunked request still goes through, as Content-Length.
	resp, _, _ := rawExchange(t, addr, "POST /ok HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	if resp.StatusCode != 200 || !strings.Contains(rb.seen.String(), "POST /ok abc") {
		t.Errorf("chunked request: %d, backend saw %q", resp.StatusCode, rb.seen.String())
	}
}

func TestBadFraming(t *testing.T) {
	for _, tc := range []struct {
		desc, raw, want string
	}{
		{"empty", "", ""},
		{"plain", "Host: h\r\nX: y\r\n\r\n", ""},
		{"chunked", "Transfer-Encoding: Chunked\r\n\r\n", ""},
		{"cl+te", "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "content-length with transfer-encoding"},
		{"dup cl", "content-length: 1\r\nContent-Length: 1\r\n\r\n", "duplicate content-length"},
		{"dup te", "Transfer-Encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n", "duplicate transfer-encoding"},
		{"te list", "Transfer-Encoding: chunked, chunked\r\n\r\n", "unsupported transfer-encoding"},
		{"fold", "X: a\r\n b\r\n\r\n", "obs-fold"},
		{"bare lf", "X: a\n\r\n", "bare LF"},
		{"bare cr", "X: a\rb\r\n\r\n", "bare CR"},
		{"no colon", "Xa\r\n\r\n", "malformed header line"},
		{"unterminated", "X: a", "unterminated header line"},
		{"space before colon", "X-Forwarded-For : 1.2.3.4\r\n\r\n", "malformed header name"},
		{"tab before colon", "Connection\t: x\r\n\r\n", "malformed header name"},
		{"empty name", ": x\r\n\r\n", "malformed header name"},
		{"non-token name", "X(y): z\r\n\r\n", "malformed header name"},
	} {
		if got := scanHeader([]byte(tc.raw)).reason; got != tc.want {
			t.Errorf("%s: %q, want %q", tc.desc, got, tc.want)
		}
	}
}

func TestHeaderSet(t *testing.T) {
	raw := "Host: h\r\nx-forwarded-for: 1\r\nKEEP-ALIVE: 2\r\nConnection: x\r\nTe: t\r\nX-Forwarded-Hosts: no\r\nForwarded: f\r\n\r\n"
	sc := scanHeader([]byte(raw))
	if want := hdrXForwardedFor | hdrKeepAlive | hdrConnection | hdrTE | hdrForwarded | hdrXForwardedOther; sc.reason != "" || sc.seen != want {
		t.Errorf("scanHeader = %q, %b; want %b", sc.reason, sc.seen, want)
	}
	for i, name := range headerNames {
		bit := headerSet(1) << i
		if bit.name() != name || headerBit([]byte(name)) != bit || headerBit([]byte(strings.ToLower(name))) != bit {
			t.Errorf("%s: bit %b, name %q", name, headerBit([]byte(name)), bit.name())
		}
	}
	if hdrAll != 1<<len(headerNames)-1 {
		t.Errorf("hdrAll %b for %d names", hdrAll, len(headerNames))
	}
	for _, n := range []string{"", "X", "Host", "Connections", "X-Forwarded-"} {
		if b := headerBit([]byte(n)); b != 0 {
			t.Errorf("%q: bit %b", n, b)
		}
	}
}

// FuzzRequest writes raw bytes to a running server over a socket. The server
// must never panic, and the backend must never see a request that carried
// both Content-Length and Transfer-Encoding (it sees only what lbd forwards,
// and lbd forwards bodies with Content-Length only).
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\nGET / HTTP/1.1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	var bad atomic.Int64
	baddr := listenRaw(f, func(c rawConn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if len(req.TransferEncoding) > 0 && req.Header.Get("Content-Length") != "" {
				bad.Add(1)
			}
			if len(req.Header.Values("Content-Length")) > 1 {
				bad.Add(1)
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	_, addr := startServer(f, Config{Routes: simpleRoutes(testPool(f, "wrr", baddr)), HeaderTimeout: time.Second, ReadTimeout: time.Second})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		if bad.Load() != 0 {
			t.Fatalf("backend got a request with both Content-Length and Transfer-Encoding")
		}
	})
}
