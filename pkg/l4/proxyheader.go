package l4

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"
)

// Limits on an inbound PROXY header, from the protocol's spec: a v1 line is
// at most 107 bytes including CRLF; a v2 header is 16 bytes plus a length
// that we cap at go-proxyproto's MaxV2HeaderSize.
const (
	proxyV1Max     = 107
	proxyV2Fixed   = 16
	proxyHeaderMax = proxyV2Fixed + 4096
)

var (
	sigV1 = []byte("PROXY ")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// Errors from inbound PROXY header parsing.
var (
	ErrProxyHeaderIncomplete = errors.New("l4: PROXY header incomplete")
	ErrProxyHeaderMalformed  = errors.New("l4: malformed PROXY header")
)

// proxyHeaderLen looks at the first bytes a client sent and returns the
// length of the PROXY header they begin with. It returns
// ErrProxyHeaderIncomplete while more bytes could still make a valid
// header, and ErrProxyHeaderMalformed once none can.
func proxyHeaderLen(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, ErrProxyHeaderIncomplete
	}
	switch b[0] {
	case sigV1[0]:
		n := min(len(b), len(sigV1))
		if !bytes.Equal(b[:n], sigV1[:n]) {
			return 0, ErrProxyHeaderMalformed
		}
		lim := min(len(b), proxyV1Max)
		if i := bytes.IndexByte(b[:lim], '\n'); i >= 0 {
			if b[i-1] != '\r' {
				return 0, ErrProxyHeaderMalformed // a bare LF never ends a header
			}
			return i + 1, nil
		}
		if len(b) >= proxyV1Max {
			return 0, ErrProxyHeaderMalformed
		}
		return 0, ErrProxyHeaderIncomplete
	case sigV2[0]:
		n := min(len(b), len(sigV2))
		if !bytes.Equal(b[:n], sigV2[:n]) {
			return 0, ErrProxyHeaderMalformed
		}
		if len(b) < proxyV2Fixed {
			return 0, ErrProxyHeaderIncomplete
		}
		total := proxyV2Fixed + int(binary.BigEndian.Uint16(b[14:16]))
		if total > proxyHeaderMax {
			return 0, ErrProxyHeaderMalformed
		}
		if len(b) < total {
			return 0, ErrProxyHeaderIncomplete
		}
		return total, nil
	}
	return 0, ErrProxyHeaderMalformed
}

// proxyInfo is what an inbound header says about the client.
type proxyInfo struct {
	local  bool // LOCAL command, or UNKNOWN/UNSPEC: keep the real peer
	source netip.AddrPort
	dest   netip.AddrPort
}

// parseProxyHeader parses exactly one complete header, as delimited by
// proxyHeaderLen.
func parseProxyHeader(b []byte) (proxyInfo, error) {
	h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(b), max(len(b), 16)))
	if err != nil {
		return proxyInfo{}, fmt.Errorf("%w: %v", ErrProxyHeaderMalformed, err)
	}
	if h.Command.IsLocal() || h.TransportProtocol.IsUnspec() {
		return proxyInfo{local: true}, nil
	}
	if !h.TransportProtocol.IsStream() || h.TransportProtocol.IsUnix() {
		return proxyInfo{}, fmt.Errorf("%w: transport %#x is not TCP over IP", ErrProxyHeaderMalformed, byte(h.TransportProtocol))
	}
	src, dst, ok := h.TCPAddrs()
	if !ok {
		return proxyInfo{}, fmt.Errorf("%w: no TCP addresses", ErrProxyHeaderMalformed)
	}
	return proxyInfo{source: tcpAddrPort(src), dest: tcpAddrPort(dst)}, nil
}

func tcpAddrPort(a *net.TCPAddr) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port))
}

// readHeader reads the inbound PROXY header of c as far as it has arrived.
// It peeks rather than reads, so nothing is consumed until the whole header
// is there; then exactly the header's bytes are taken and the client's
// first payload byte is left for the backend.
//
// rdhup says the client has sent its FIN: a header still incomplete then
// can never complete.
func (l *loop) readHeader(c *conn, rdhup bool) {
	fd := c.fd[sideClient]
	n, err := rawPeek(fd, l.scratch)
	if err != nil {
		if err == unix.EAGAIN {
			c.rd[sideClient] = false
			return
		}
		l.reject(c, RejectProxyHeader)
		return
	}
	if n == 0 {
		l.reject(c, RejectProxyHeader) // closed before the header ended
		return
	}
	hlen, err := proxyHeaderLen(l.scratch[:n])
	if err == ErrProxyHeaderIncomplete && !rdhup {
		c.rd[sideClient] = false
		return
	}
	if err != nil {
		l.log.Debug("bad PROXY header", "listener", c.cfg.Name, "client", c.client, "err", err)
		l.reject(c, RejectProxyHeader)
		return
	}
	info, err := parseProxyHeader(l.scratch[:hlen])
	if err != nil {
		l.log.Debug("bad PROXY header", "listener", c.cfg.Name, "client", c.client, "err", err)
		l.reject(c, RejectProxyHeader)
		return
	}
	if got, err := rawRead(fd, l.scratch[:hlen]); err != nil || got != hlen {
		l.reject(c, RejectProxyHeader)
		return
	}
	if !info.local {
		c.client, c.local, c.viaHeader = info.source, info.dest, true
	}
	c.state = stConnecting
	c.rd[sideClient] = true
	l.connect(c)
}

// formatProxyHeader renders the header announcing client to the backend.
// It allocates, once per connection; nothing here runs per packet.
func formatProxyHeader(v ProxyVersion, client, local netip.AddrPort) ([]byte, error) {
	src, dst := client.Addr().Unmap(), local.Addr().Unmap()
	h := &proxyproto.Header{Version: byte(v), Command: proxyproto.PROXY}
	switch {
	case !src.IsValid() || !dst.IsValid():
		h.Command = proxyproto.LOCAL
		h.TransportProtocol = proxyproto.UNSPEC
	case src.Is4() && dst.Is4():
		h.TransportProtocol = proxyproto.TCPv4
	default:
		// Mixed families are sent as IPv6, the IPv4 side mapped.
		src, dst = netip.AddrFrom16(src.As16()), netip.AddrFrom16(dst.As16())
		h.TransportProtocol = proxyproto.TCPv6
	}
	if h.Command == proxyproto.PROXY {
		h.SourceAddr = &net.TCPAddr{IP: src.AsSlice(), Port: int(client.Port())}
		h.DestinationAddr = &net.TCPAddr{IP: dst.AsSlice(), Port: int(local.Port())}
	}
	return h.Format()
}
