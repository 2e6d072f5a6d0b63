package l7

import (
	"math/bits"

	"github.com/lbd-lb/lbd/internal/ascii"
)

// headerSet is a set of the request headers the proxy removes, replaces or
// counts, one bit each. The framing stage fills it while it scans the raw
// header block anyway, so a request that carries none of them (nearly all
// of them) costs no Del calls at all.
type headerSet uint32

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
	hdrAuthorization
	hdrXRealIP
	hdrTrueClientIP
	hdrXForwardedPort
	hdrXOriginalURL
	hdrXRewriteURL
	hdrXClientIP
	hdrCFConnectingIP
	hdrFastlyClientIP
	hdrXClusterClientIP
	hdrXForwarded
	hdrXHost
	hdrXOriginalHost

	// hdrHop are the hop-by-hop headers of RFC 9110 section 7.6.1, plus
	// the legacy ones, removed in both directions (Connection itself is
	// handled apart, with the headers it names).
	hdrHop = hdrKeepAlive | hdrProxyConnection | hdrTE | hdrTrailer | hdrTransferEncoding |
		hdrUpgrade | hdrProxyAuthenticate | hdrProxyAuthorization
	// hdrSpoofable are headers through which a client could pass for
	// another address or have a backend serve another URL than the one
	// routed; only a trusted proxy may send them.
	hdrSpoofable = hdrXRealIP | hdrTrueClientIP | hdrXForwardedPort | hdrXOriginalURL | hdrXRewriteURL |
		hdrXClientIP | hdrCFConnectingIP | hdrFastlyClientIP | hdrXClusterClientIP | hdrXForwarded | hdrXHost | hdrXOriginalHost
	// hdrAll is every named header of the set: what a header block that
	// was not scanned is assumed to carry.
	hdrAll = hdrXOriginalHost<<1 - 1

	// hdrXForwardedOther is no single header: it marks a request with an
	// X-Forwarded-* header other than For, Proto, Host and Port (Prefix,
	// Server, Ssl...), which only a trusted proxy may send either.
	hdrXForwardedOther headerSet = 1 << 30
	// hdrUnderscore is no header: it marks a request with an underscore in
	// some header name (see authStage).
	hdrUnderscore headerSet = 1 << 31
)

// headerNames are the names of the bits, in bit order.
var headerNames = [...]string{
	"Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer",
	"Transfer-Encoding", "Upgrade", "Proxy-Authenticate", "Proxy-Authorization",
	"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded",
	"Content-Length", "Authorization", "X-Real-Ip", "True-Client-Ip",
	"X-Forwarded-Port", "X-Original-Url", "X-Rewrite-Url", "X-Client-Ip",
	"Cf-Connecting-Ip", "Fastly-Client-Ip", "X-Cluster-Client-Ip", "X-Forwarded",
	"X-Host", "X-Original-Host",
}

// xForwardedPrefix starts the names hdrXForwardedOther stands for.
const xForwardedPrefix = "X-Forwarded-"

// headerBit is the bit of name (any case), or 0 for a header outside the
// set; an X-Forwarded-* name outside it gets hdrXForwardedOther.
func headerBit(name []byte) headerSet {
	var cands []headerSet
	switch len(name) {
	case 6:
		cands = []headerSet{hdrXHost}
	case 11:
		cands = []headerSet{hdrXClientIP, hdrXForwarded}
	case 2:
		cands = []headerSet{hdrTE}
	case 7:
		cands = []headerSet{hdrTrailer, hdrUpgrade}
	case 9:
		cands = []headerSet{hdrForwarded, hdrXRealIP}
	case 10:
		cands = []headerSet{hdrConnection, hdrKeepAlive}
	case 13:
		cands = []headerSet{hdrAuthorization, hdrXRewriteURL}
	case 14:
		cands = []headerSet{hdrContentLength, hdrTrueClientIP, hdrXOriginalURL}
	case 15:
		cands = []headerSet{hdrXForwardedFor, hdrXOriginalHost}
	case 16:
		cands = []headerSet{hdrProxyConnection, hdrXForwardedHost, hdrXForwardedPort, hdrCFConnectingIP, hdrFastlyClientIP}
	case 17:
		cands = []headerSet{hdrTransferEncoding, hdrXForwardedProto}
	case 18:
		cands = []headerSet{hdrProxyAuthenticate}
	case 19:
		cands = []headerSet{hdrProxyAuthorization, hdrXClusterClientIP}
	}
	for _, b := range cands {
		if ascii.EqualFold(name, b.name()) {
			return b
		}
	}
	if len(name) > len(xForwardedPrefix) && ascii.EqualFold(name[:len(xForwardedPrefix)], xForwardedPrefix) {
		return hdrXForwardedOther
	}
	return 0
}

// dashedBit is headerBit of name with its underscores read as dashes, the
// way CGI-style servers fold them (X_Forwarded_For is X-Forwarded-For to
// them).
func dashedBit(name []byte) headerSet {
	var buf [64]byte
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
	return headerNames[bits.TrailingZeros32(uint32(s))]
}
