package healthcheck

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func probeOnce(t *testing.T, cfg Config, addr netip.AddrPort, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return newProber(cfg.withDefaults()).Probe(ctx, addr)
}

// The http probe's request, byte for byte.
func TestHTTPRequest(t *testing.T) {
	for _, tc := range []struct {
		desc string
		cfg  Config
		host string // "" = the probed address
	}{
		{"defaults", Config{Type: TypeHTTP}, ""},
		{"host and path", Config{Type: TypeHTTP, Host: "api.example.com", Path: "/v1/health?deep=1"}, "api.example.com"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got := make(chan string, 1)
			addr := rawServer(t, func(c net.Conn) {
				req, _ := readRequest(c)
				got <- req
				c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
			})
			if err := probeOnce(t, tc.cfg, addr, wait); err != nil {
				t.Fatal(err)
			}
			host := tc.host
			if host == "" {
				host = addr.String()
			}
			want := "GET " + tc.cfg.withDefaults().Path + " HTTP/1.1\r\nHost: " + host +
				"\r\nUser-Agent: lbd-healthcheck\r\nAccept: */*\r\nConnection: close\r\n\r\n"
			if req := <-got; req != want {
				t.Errorf("request\n%q\nwant\n%q", req, want)
			}
		})
	}
}

// The http probe against well-formed, odd and broken backends: every
// answer is a verdict, never a panic, and a delimited response does not
// wait for the timeout even if the backend keeps the connection open.
func TestHTTPResponses(t *testing.T) {
	const timeout = 2 * time.Second
	var (
		ok        error
		malformed = ErrMalformedResponse
		status    = &StatusError{}
		timedOut  = os.ErrDeadlineExceeded
	)
	big := "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n" + strings.Repeat("x", 1<<20)
	cases := []struct {
		desc     string
		response string
		keepOpen bool // the backend holds the connection after answering
		want     error
	}{
		{"200 with a length, kept open", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true, ok},
		{"204 without reason phrase, kept open", "HTTP/1.1 204\r\n\r\n", true, ok},
		{"HTTP/1.0 body until close", "HTTP/1.0 200 OK\r\n\r\nall good", false, ok},
		{"chunked, kept open", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", true, ok},
		{"bare LF line ends", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", true, ok},
		{"1 MiB body: read 4 KiB and drop", big, true, ok},
		{"100 Continue then 200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true, ok},
		{"unknown header ignored", "HTTP/1.1 200 OK\r\nX-Thing: a:b\r\n folded\r\nContent-Length: 0\r\n\r\n", true, ok},
		{"500", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\n\r\nbad", false, status},
		{"404", "HTTP/1.1 404 Not Found\r\n\r\n", false, status},
		{"unknown status 999", "HTTP/1.1 999 What\r\n\r\n", false, status},
		{"not HTTP", "SSH-2.0-OpenSSH_9.6\r\n", false, malformed},
		{"not HTTP, with a blank line", "hello\r\n\r\n", false, malformed},
		{"HTTP/2 status line", "HTTP/2 200\r\n\r\n", false, malformed},
		{"two-digit status", "HTTP/1.1 20 OK\r\n\r\n", false, malformed},
		{"status without space", "HTTP/1.1 200OK\r\n\r\n", false, malformed},
		{"closed at once", "", false, malformed},
		{"closed mid-head", "HTTP/1.1 200 OK\r\nContent-Le", false, malformed},
		{"head over 8 KiB", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 9000) + "\r\n\r\n", true, malformed},
		{"bad Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, malformed},
		{"conflicting Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", false, malformed},
		{"header without colon", "HTTP/1.1 200 OK\r\nbroken\r\n\r\n", false, malformed},
		{"binary garbage", "\x00\xff\r\n\r\n\x16\x03\x01", false, malformed},
		{"head never ends", "HTTP/1.1 200 OK\r\n", true, timedOut},
		{"nothing at all", "", true, timedOut},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			addr := rawServer(t, func(c net.Conn) {
				readRequest(c)
				c.Write([]byte(tc.response))
				if tc.keepOpen {
					hold(c)
				}
			})
			start := time.Now()
			err := probeOnce(t, Config{Type: TypeHTTP}, addr, timeout)
			elapsed := time.Since(start)
			var se *StatusError
			switch {
			case tc.want == nil && err != nil,
				tc.want == status && !errors.As(err, &se),
				tc.want != nil && tc.want != status && !errors.Is(err, tc.want):
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.want != timedOut && elapsed > timeout/2 {
				t.Errorf("took %v: waited for the timeout", elapsed)
			}
		})
	}
}

// The probes close with an RST, so that the checker keeps no TIME_WAIT
// sockets (see closeReset): the backend's read sees ECONNRESET, not EOF.
func TestProbesCloseWithReset(t *testing.T) {
	for _, tc := range []struct {
		desc     string
		cfg      Config
		response string
	}{
		{"tcp", Config{Type: TypeTCP}, ""},
		{"http, response delimited, backend still open", Config{Type: TypeHTTP}, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			readErr := make(chan error, 1)
			addr := rawServer(t, func(c net.Conn) {
				if tc.response != "" {
					readRequest(c)
					c.Write([]byte(tc.response))
				}
				_, err := c.Read(make([]byte, 1))
				readErr <- err
			})
			if err := probeOnce(t, tc.cfg, addr, wait); err != nil {
				t.Fatal(err)
			}
			if err := <-readErr; !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("backend read %v, want ECONNRESET", err)
			}
		})
	}
}

// The tcp probe fails fast on a refused port and within its timeout on
// an address that drops SYNs.
func TestTCPProbeFailures(t *testing.T) {
	b := newTCPBackend(t)
	b.stop()
	err := probeOnce(t, Config{Type: TypeTCP}, b.addr, wait)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("refused port: err = %v", err)
	}

	// A listener whose accept queue is full drops further SYNs. Backlog
	// 0 lets one connection wait; fill it, then the probe's SYN goes
	// unanswered.
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sa.(*syscall.SockaddrInet4).Port))
	const timeout = 200 * time.Millisecond
	for i := 0; ; i++ {
		if i == 100 {
			t.Skip("could not fill the accept queue")
		}
		c, err := net.DialTimeout("tcp", addr.String(), timeout)
		if err != nil {
			break
		}
		defer c.Close()
	}
	start := time.Now()
	err = probeOnce(t, Config{Type: TypeTCP}, addr, timeout)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("probe of a full accept queue: err = %v, want a timeout", err)
	}
	if d := time.Since(start); d < timeout*9/10 || d > wait/2 {
		t.Errorf("probe failed after %v, want about %v", d, timeout)
	}
}
