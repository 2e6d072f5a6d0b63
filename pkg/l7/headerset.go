package l7

import "math/bits"

// headerSet is a set of the request headers the proxy removes or replaces,
// one bit each. The framing stage fills it while it scans the raw header
// block anyway, so a request that carries none of them (nearly all of
// them) costs no Del calls at all.
type headerSet uint16

const (
	hdrConnection headerSet = 1 << iota
	hdrKeepAlive
	hdrProxyConnection
	hdrTE
	hdrTrailer
	hdrTransferEncoding
	hdrUpgrade
	hdrProxyAuthenticate
	hdrProxyAuthorization
	hdrXForwardedFor
	hdrXForwardedProto
	hdrXForwardedHost
	hdrForwarded
	hdrContentLength

	// hdrHop are the hop-by-hop headers of RFC 9110 section 7.6.1, plus
	// the legacy ones, removed in both directions (Connection itself is
	// handled apart, with the headers it names).
	hdrHop = hdrKeepAlive | hdrProxyConnection | hdrTE | hdrTrailer | hdrTransferEncoding |
		hdrUpgrade | hdrProxyAuthenticate | hdrProxyAuthorization
	// hdrAll is every header of the set: what a request whose header
	// block was not scanned is assumed to carry.
	hdrAll = hdrContentLength<<1 - 1

	// hdrUnderscore is no header: it marks a request with an underscore in
	// some header name (see authStage).
	hdrUnderscore headerSet = 1 << 15
)

// headerNames are the names of the bits, in bit order.
var headerNames = [...]string{
	"Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer",
	"Transfer-Encoding", "Upgrade", "Proxy-Authenticate", "Proxy-Authorization",
	"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded",
	"Content-Length",
}

// headerBit is the bit of name (any case), or 0 for a header outside the
// set.
func headerBit(name []byte) headerSet {
	var cands []headerSet
	switch len(name) {
	case 2:
		cands = []headerSet{hdrTE}
	case 7:
		cands = []headerSet{hdrTrailer, hdrUpgrade}
	case 9:
		cands = []headerSet{hdrForwarded}
	case 10:
		cands = []headerSet{hdrConnection, hdrKeepAlive}
	case 14:
		cands = []headerSet{hdrContentLength}
	case 15:
		cands = []headerSet{hdrXForwardedFor}
	case 16:
		cands = []headerSet{hdrProxyConnection, hdrXForwardedHost}
	case 17:
		cands = []headerSet{hdrTransferEncoding, hdrXForwardedProto}
	case 18:
		cands = []headerSet{hdrProxyAuthenticate}
	case 19:
		cands = []headerSet{hdrProxyAuthorization}
	default:
		return 0
	}
	for _, b := range cands {
		if asciiEqualFold(name, b.name()) {
			return b
		}
	}
	return 0
}

// dashedBit is headerBit of name with its underscores read as dashes, the
// way CGI-style servers fold them (X_Forwarded_For is X-Forwarded-For to
// them).
func dashedBit(name []byte) headerSet {
	var buf [24]byte
	if len(name) > len(buf) {
		return 0
	}
	d := buf[:len(name)]
	for i, c := range name {
		if c == '_' {
			c = '-'
		}
		d[i] = c
	}
	return headerBit(d)
}

// dashedEqualFold reports whether name is s, ignoring ASCII case and
// reading underscores in name as dashes.
func dashedEqualFold(name []byte, s string) bool { return equalFold(name, s, true) }

// name is the header name of a single bit.
func (s headerSet) name() string {
	return headerNames[bits.TrailingZeros16(uint16(s))]
}
