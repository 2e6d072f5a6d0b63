package l4

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/lbd-lb/lbd/internal/nettest"
)

// headerBackend accepts connections, parses the PROXY header the proxy
// sends, reports it, then echoes.
func headerBackend(t testing.TB, network, addr string, greet string) (netip.AddrPort, chan *proxyproto.Header) {
	got := make(chan *proxyproto.Header, 16)
	ap := listen(t, network, addr, func(c net.Conn) {
		r := bufio.NewReader(c)
		if greet == "" {
			// Wait for the client's first byte so the header is known
			// to precede it.
			r.Peek(1)
		}
		h, err := proxyproto.Read(r)
		if err != nil {
			got <- nil
			return
		}
		got <- h
		if greet != "" {
			c.Write([]byte(greet))
		}
		io.Copy(c, r)
	})
	return ap, got
}

func TestOutboundProxyHeader(t *testing.T) {
	cases := []struct {
		desc    string
		network string
		addr    string
		version ProxyVersion
	}{
		{"v1 over IPv4", "tcp4", "127.0.0.1:0", ProxyV1},
		{"v2 over IPv4", "tcp4", "127.0.0.1:0", ProxyV2},
		{"v1 over IPv6", "tcp6", "[::1]:0", ProxyV1},
		{"v2 over IPv6", "tcp6", "[::1]:0", ProxyV2},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			if tc.network == "tcp6" {
				if l, err := net.Listen("tcp6", "[::1]:0"); err != nil {
					t.Skip("no IPv6 loopback")
				} else {
					l.Close()
				}
			}
			backend, headers := headerBackend(t, tc.network, tc.addr, "")
			e := testEngine(t, Options{})
			ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", backend), func(c *ListenerConfig) {
				c.ProxyProtocol = tc.version
				c.Bind = netip.AddrPortFrom(backend.Addr(), 0)
			})
			c := dial(t, ln.Addr())
			if got, err := roundTrip(c, "payload"); err != nil || got != "payload" {
				t.Fatalf("echo %q, %v", got, err)
			}
			h := <-headers
			if h == nil {
				t.Fatal("backend could not parse a PROXY header")
			}
			if int(h.Version) != int(tc.version) {
				t.Fatalf("version %d, want %d", h.Version, tc.version)
			}
			src, dst, ok := h.TCPAddrs()
			if !ok {
				t.Fatalf("header carries no TCP addresses: %+v", h)
			}
			if want := c.LocalAddr().(*net.TCPAddr).AddrPort(); tcpAddrPort(src) != netip.AddrPortFrom(want.Addr().Unmap(), want.Port()) {
				t.Fatalf("source %v, want the client's %v", src, want)
			}
			if tcpAddrPort(dst) != ln.Addr() {
				t.Fatalf("destination %v, want the listener's %v", dst, ln.Addr())
			}
		})
	}
}

// TestServerSpeaksFirst: the header must reach a backend that talks first
// even though the client has sent nothing.
func TestServerSpeaksFirst(t *testing.T) {
	backend, headers := headerBackend(t, "tcp", "127.0.0.1:0", "220 ready\r\n")
	e := testEngine(t, Options{})
	ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", backend), func(c *ListenerConfig) { c.ProxyProtocol = ProxyV2 })
	c := dial(t, ln.Addr())
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "220 ready\r\n" {
		t.Fatalf("greeting %q, %v", line, err)
	}
	if h := <-headers; h == nil || h.Version != 2 {
		t.Fatalf("header %+v", h)
	}
}

func v2Header(t testing.TB, src, dst string) []byte {
	h := &proxyproto.Header{Version: 2, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
		SourceAddr:      net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)),
		DestinationAddr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst))}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// inboundSetup runs a listener that accepts PROXY headers from 127.0.0.1
// and forwards with a v1 header, so the test sees which client address the
// proxy believed.
func inboundSetup(t *testing.T, trustedNet string, timeout time.Duration) (*Listener, chan *proxyproto.Header) {
	backend, headers := headerBackend(t, "tcp", "127.0.0.1:0", "")
	e := testEngine(t, Options{})
	ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", backend), func(c *ListenerConfig) {
		c.AcceptProxy = true
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(trustedNet)}
		c.ProxyProtocol = ProxyV1
		c.ProxyHeaderTimeout = timeout
	})
	return ln, headers
}

func TestInboundProxyHeader(t *testing.T) {
	cases := []struct {
		desc   string
		header []byte
		src    string
	}{
		{"v1 TCP4", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 40000 443\r\n"), "192.0.2.10:40000"},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::10 2001:db8::1 40000 443\r\n"), "[2001:db8::10]:40000"},
		{"v2 TCP4", v2Header(t, "203.0.113.7:5555", "198.51.100.1:443"), "203.0.113.7:5555"},
	}
	for _, tc := range cases {
		for _, trickle := range []bool{false, true} {
			name := tc.desc
			if trickle {
				name += " one byte at a time"
			}
			t.Run(name, func(t *testing.T) {
				ln, headers := inboundSetup(t, "127.0.0.0/8", 5*time.Second)
				c := dial(t, ln.Addr())
				c.SetNoDelay(true)
				if trickle {
					for _, b := range tc.header {
						if _, err := c.Write([]byte{b}); err != nil {
							t.Fatal(err)
						}
						time.Sleep(time.Millisecond) // let each byte arrive as its own segment
					}
				} else {
					c.Write(tc.header)
				}
				if got, err := roundTrip(c, "after header"); err != nil || got != "after header" {
					t.Fatalf("echo %q, %v", got, err)
				}
				h := <-headers
				src, _, ok := h.TCPAddrs()
				if !ok || src.String() != tc.src {
					t.Fatalf("backend saw client %v, want %s", src, tc.src)
				}
			})
		}
	}
}

func TestInboundProxyHeaderRejected(t *testing.T) {
	good := v2Header(t, "203.0.113.7:5555", "198.51.100.1:443")
	badLen := bytes.Clone(good)
	binary.BigEndian.PutUint16(badLen[14:], 5000)
	badVer := bytes.Clone(good)
	badVer[12] = 0x31 // version 3
	cases := []struct {
		desc string
		in   []byte
	}{
		{"no header at all", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"v1 without CRLF past 107 bytes", append([]byte("PROXY TCP4 "), bytes.Repeat([]byte("1"), 120)...)},
		{"v1 unknown protocol", []byte("PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n")},
		{"v1 bad address", []byte("PROXY TCP4 192.0.2.300 192.0.2.2 1 2\r\n")},
		{"v1 IPv6 address in TCP4", []byte("PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n")},
		{"v1 port out of range", []byte("PROXY TCP4 192.0.2.1 192.0.2.2 70000 2\r\n")},
		{"v1 missing field", []byte("PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n")},
		{"v1 bare LF", []byte("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n")},
		{"v2 length over the limit", badLen},
		{"v2 bad version", badVer},
		{"v2 bad signature", append([]byte("\r\n\r\n\x00\r\nQUIX\n"), good[12:]...)},
		{"closed mid-header", good[:10]},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			ln, _ := inboundSetup(t, "127.0.0.0/8", 5*time.Second)
			c := dial(t, ln.Addr())
			c.Write(tc.in)
			if tc.desc == "closed mid-header" {
				c.CloseWrite()
			}
			expectClosed(t, c)
			nettest.Eventually(t, "proxy_header rejection counted", func() bool {
				_, rej := ln.Totals()
				return rej[RejectProxyHeader] == 1
			})
			// The listener still serves well-formed clients.
			ok := dial(t, ln.Addr())
			ok.Write(good)
			if got, err := roundTrip(ok, "still fine"); err != nil || got != "still fine" {
				t.Fatalf("next client: %q, %v", got, err)
			}
		})
	}
}

func TestInboundProxyUntrusted(t *testing.T) {
	ln, _ := inboundSetup(t, "127.0.0.99/32", 5*time.Second)
	c := dial(t, ln.Addr()) // from 127.0.0.1, not trusted
	c.Write(v2Header(t, "203.0.113.7:5555", "198.51.100.1:443"))
	expectClosed(t, c)
	_, rej := ln.Totals()
	if rej[RejectProxyHeader] != 1 {
		t.Fatalf("rejections %v", rej)
	}
	// A trusted source is served.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.99")}, Timeout: 5 * time.Second}
	ok, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Close()
	ok.SetDeadline(time.Now().Add(10 * time.Second))
	ok.Write(v2Header(t, "203.0.113.7:5555", "198.51.100.1:443"))
	if got, err := roundTrip(ok, "trusted"); err != nil || got != "trusted" {
		t.Fatalf("%q, %v", got, err)
	}
}

// TestInboundProxyHeaderTimeout: a header that never comes is closed at its
// deadline, and other connections are unaffected meanwhile.
func TestInboundProxyHeaderTimeout(t *testing.T) {
	timeout := 300 * time.Millisecond
	ln, _ := inboundSetup(t, "127.0.0.0/8", timeout)
	start := time.Now()
	silent := dial(t, ln.Addr())
	silent.Write([]byte("PROX")) // a prefix, then nothing
	other := dial(t, ln.Addr())
	other.Write(v2Header(t, "203.0.113.7:5555", "198.51.100.1:443"))
	if got, err := roundTrip(other, "meanwhile"); err != nil || got != "meanwhile" {
		t.Fatalf("%q, %v", got, err)
	}
	expectClosed(t, silent)
	if el := time.Since(start); el < timeout {
		t.Fatalf("closed after %v, before the %v deadline", el, timeout)
	}
	_, rej := ln.Totals()
	if rej[RejectProxyHeader] != 1 {
		t.Fatalf("rejections %v", rej)
	}
	if got, err := roundTrip(other, "still"); err != nil || got != "still" {
		t.Fatalf("%q, %v", got, err)
	}
}

// FuzzProxyHeader drives the inbound header path (delimiting, then
// parsing) with arbitrary bytes: it must never panic, and whatever it
// accepts must be a header that go-proxyproto formats back.
func FuzzProxyHeader(f *testing.F) {
	// Seeds: the edge cases of haproxy's proxy-protocol.txt, written here.
	seeds := [][]byte{
		[]byte("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"),
		[]byte("PROXY TCP6 ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"),
		[]byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		[]byte("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"),
		[]byte("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n"),
		[]byte("PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"),
		[]byte("PROXY TCP4 01.02.03.04 1.2.3.4 1 2\r\n"),
		[]byte("PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n"),
		[]byte("PROXY  TCP4 1.2.3.4 1.2.3.4 1 2\r\n"),
		[]byte("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r"),
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"),                                                             // LOCAL, no address
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02"),             // TCP4
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0b\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00"),                 // short
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x24" + string(make([]byte, 36))),                                  // TCP6
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x31\x00\xd8" + string(make([]byte, 216))),                                 // UNIX
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x12\x00\x0c\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02"),             // UDP4
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0f\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02\x04\x00\x00"), // TLV NOOP
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x22\x11\x00\x0c\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02"),             // bad command
		[]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff"),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := proxyHeaderLen(b)
		if err != nil {
			if err != ErrProxyHeaderIncomplete && err != ErrProxyHeaderMalformed {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if n <= 0 || n > len(b) || n > proxyHeaderMax {
			t.Fatalf("header length %d of %d bytes", n, len(b))
		}
		info, err := parseProxyHeader(b[:n])
		if err != nil || info.local {
			return
		}
		if !info.source.IsValid() || !info.dest.IsValid() {
			t.Fatalf("accepted header without addresses: %+v", info)
		}
		if _, err := formatProxyHeader(ProxyV2, info.source, info.dest); err != nil {
			t.Fatalf("cannot re-format accepted header: %v", err)
		}
	})
}
