// Package target turns a raw HTTP/1.1 request-target (RFC 9112 section 3.2)
// into the one origin-form target that the proxy both routes on and forwards,
// or refuses it.
//
// Routing, JWT auth and rate limiting all decide on the path, and the backend
// must receive exactly the path they decided on. Any spelling that the proxy
// and a backend could read differently ("/public/..%2Fadmin", "/a/..;/b",
// "//host/x", "/a\b") is therefore either rewritten here into a form with a
// single reading or refused. The caller forwards the bytes Normalize returns,
// never the original ones.
//
// The package runs on every request: nothing allocates when dst has room
// (len(rest) bytes suffice), and a target that needs no change is copied in
// one pass.
package target

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/lbd-lb/lbd/internal/ascii"
)

// Sentinel errors. Normalize and Split return them unwrapped, so a caller can
// count refusals by kind; ParseMode wraps ErrMode with the offending value.
var (
	ErrMode           = errors.New("target: unknown path_normalization mode")
	ErrInvalid        = errors.New("target: invalid request-target")
	ErrEncodedSlash   = errors.New("target: encoded slash or backslash in path")
	ErrBackslash      = errors.New("target: backslash in path")
	ErrPathParam      = errors.New("target: path parameter (';') in the path")
	ErrEncodedControl = errors.New("target: encoded control character in path")
	ErrLeadingSlashes = errors.New("target: path starts with //")
	ErrChanged        = errors.New("target: path is not in normal form")
	ErrUserinfo       = errors.New("target: userinfo in authority")
)

// Mode is a listener's path_normalization setting. Whatever the mode, the
// refusals that guard against backends reading a path differently
// (ErrEncodedSlash, ErrBackslash, ErrPathParam, ErrEncodedControl) apply.
type Mode uint8

const (
	// Strict ("strict", the default) decodes percent-encoded unreserved
	// characters and removes dot segments, keeps empty segments, and refuses
	// a result that starts with "//".
	Strict Mode = iota
	// MergeSlashes ("merge_slashes") is Strict, but first collapses every
	// run of "/" into one, so no result contains "//".
	MergeSlashes
	// Off ("off") never rewrites a path: it refuses any path that Strict
	// would change, so what the client sent is what the backend gets.
	Off
)

var modeNames = [...]string{Strict: "strict", MergeSlashes: "merge_slashes", Off: "off"}

// ParseMode reads a path_normalization value. The empty string is Strict, so
// that an unset key gets the default.
func ParseMode(s string) (Mode, error) {
	if s == "" {
		return Strict, nil
	}
	for m, name := range modeNames {
		if s == name {
			return Mode(m), nil
		}
	}
	return Strict, fmt.Errorf("%w %q (want strict, merge_slashes or off)", ErrMode, s)
}

// String returns the config spelling of m.
func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Form is the form of a request-target (RFC 9112 section 3.2).
type Form uint8

const (
	// OriginForm is "/path?query" (section 3.2.1).
	OriginForm Form = iota
	// AbsoluteForm is "http://authority/path?query" (section 3.2.2).
	AbsoluteForm
	// AsteriskForm is "*", for a server-wide OPTIONS (section 3.2.4).
	AsteriskForm
)

// slash is the rest of an absolute-form target with neither path nor query.
// Its capacity is capped so that an append by the caller copies it.
var slash = []byte{'/'}

// Split classifies a request-target and, for absolute-form, separates the
// authority from the path and query.
//
// Origin-form (it starts with "/") returns a nil authority and rest = target.
// "*" is AsteriskForm with rest = target; it has no path to normalise.
// Absolute-form needs the scheme http or https (in any case) and a non-empty
// authority that ValidHost accepts; authority is then the bytes between "//"
// and the first "/" or "?", and rest is what follows, with an empty path
// written as "/" (RFC 9110 section 4.2.3), ready for Normalize. An authority
// holding '@' is ErrUserinfo (RFC 9110 section 4.2.4); authority-form
// ("host:443", which only CONNECT uses), other schemes and an empty target
// are ErrInvalid.
//
// authority and rest alias target, except that rest is a shared read-only
// "/" when the path and query are both empty, and a new slice when only the
// path is: "http://h?q" is the one input for which Split allocates, and only
// forward-proxy clients send absolute-form at all.
func Split(target []byte) (form Form, authority, rest []byte, err error) {
	switch {
	case len(target) == 0:
		return OriginForm, nil, nil, ErrInvalid
	case target[0] == '/':
		return OriginForm, nil, target, nil
	case len(target) == 1 && target[0] == '*':
		return AsteriskForm, nil, target, nil
	}
	var n int
	switch {
	case hasPrefixFold(target, "http://"):
		n = len("http://")
	case hasPrefixFold(target, "https://"):
		n = len("https://")
	default:
		return OriginForm, nil, nil, ErrInvalid
	}
	authority = target[n:]
	if i := bytes.IndexAny(authority, "/?"); i >= 0 {
		authority, rest = authority[:i], authority[i:]
	}
	if bytes.IndexByte(authority, '@') >= 0 {
		return OriginForm, nil, nil, ErrUserinfo
	}
	if !ValidHost(authority) {
		return OriginForm, nil, nil, ErrInvalid
	}
	switch {
	case len(rest) == 0:
		rest = slash[:1:1]
	case rest[0] == '?':
		rest = append(append(make([]byte, 0, 1+len(rest)), '/'), rest...)
	}
	return AbsoluteForm, authority, rest, nil
}

// hasPrefixFold reports whether b starts with prefix, ignoring ASCII case.
// prefix must be lower case.
func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := range len(prefix) {
		if ascii.Lower(b[i]) != prefix[i] {
			return false
		}
	}
	return true
}

// Normalize appends to dst the normalised origin-form target for rest, the
// origin-form part of a request-target as Split returns it, and returns the
// extended slice and the length of the path it appended: the path is
// out[len(dst):len(dst)+pathLen], and it is followed by "?query" when the
// query is non-empty. On error out is dst, unchanged in length.
//
// The path must start with "/" and hold only visible ASCII (0x21-0x7E)
// without '#'. Then, in this order:
//
//  1. Each "%" starts a triplet with two hex digits. A triplet for an
//     unreserved character is decoded (RFC 3986 sections 2.3 and 6.2.2.2);
//     %2F and %5C are ErrEncodedSlash and %00-%1F and %7F are
//     ErrEncodedControl, since backends disagree on what they mean; every
//     other triplet is kept as written, so that no byte is decoded twice.
//  2. In MergeSlashes mode, each run of "/" becomes one "/".
//  3. Dot segments are removed (RFC 3986 section 5.2.4), so "%2e%2e" counts
//     as ".."; ".." at the root stays at the root, and a final "." or ".."
//     leaves a trailing "/".
//
// A raw '\' is ErrBackslash, because some backends read it as '/'. A ';'
// (or %3B) anywhere in the path is ErrPathParam: servlet containers strip
// path parameters from each segment before they dispatch, so
// "/admin;x/secret" would be routed as something other than /admin/ and
// served as /admin/secret, and "/a/..;/b" would hide a dot segment. In Strict and Off modes, a result that starts with "//" is
// ErrLeadingSlashes, because some parsers take what follows for an
// authority. In Off mode, a path that the Strict rules would change is
// ErrChanged, and the path is otherwise appended as it came.
//
// The query is checked for the same byte range and for '#', and appended
// unchanged; an empty query drops its "?".
//
// Invariant: for Strict and MergeSlashes, Normalize of an output returns
// that output, and Off accepts every output of the other two modes.
func Normalize(dst, rest []byte, m Mode) (out []byte, pathLen int, err error) {
	if m > Off {
		return dst, 0, ErrMode
	}
	path, query, _ := bytes.Cut(rest, []byte{'?'})
	// The query is checked first so that a malformed target is ErrInvalid
	// in every mode, whatever its path.
	for _, c := range query {
		if c < 0x21 || c > 0x7e || c == '#' {
			return dst, 0, ErrInvalid
		}
	}
	// The output is never longer than rest, so this is the only place that
	// can allocate.
	out = slices.Grow(dst, len(rest))
	base := len(out)
	if plain(path, m) {
		out = append(out, path...)
	} else if out, err = normalizePath(out, path, m); err != nil {
		return dst, 0, err
	}
	if m == Off && !bytes.Equal(out[base:], path) {
		return dst, 0, ErrChanged
	}
	pathLen = len(out) - base
	if len(query) > 0 {
		out = append(append(out, '?'), query...)
	}
	return out, pathLen, nil
}

// plain reports whether normalizePath would return path unchanged and
// without error, judged conservatively in one cheap pass: it refuses
// anything with '%', '\', a byte outside 0x21-0x7E, '#', a segment that
// starts with '.', a leading "//", or (MergeSlashes) any "//".
func plain(path []byte, m Mode) bool {
	if len(path) == 0 || path[0] != '/' {
		return false
	}
	for i := 1; i < len(path); i++ {
		switch c := path[i]; {
		case c == '/':
			if path[i-1] == '/' && (i == 1 || m == MergeSlashes) {
				return false
			}
		case c == '.':
			if path[i-1] == '/' {
				return false
			}
		case c < 0x21 || c > 0x7e || c == '%' || c == '\\' || c == '#' || c == ';':
			return false
		}
	}
	return true
}

// normalizePath appends the normal form of path under m (Off uses the
// Strict rules) to out. It works one segment at a time; before each
// iteration out[base:] is empty or a path whose segments are all final, so a
// ".." only has to cut back to the last '/'.
func normalizePath(out, path []byte, m Mode) ([]byte, error) {
	if len(path) == 0 || path[0] != '/' {
		return out, ErrInvalid
	}
	base := len(out)
	trailing := false // the last segment was "." or "..", so the path must end in "/"
	for path = path[1:]; ; {
		seg, next, more := bytes.Cut(path, []byte{'/'})
		path = next
		if len(seg) == 0 && more && m == MergeSlashes {
			continue // a run of "/" keeps only its last one
		}
		out = append(out, '/')
		start := len(out)
		var err error
		if out, err = decodeSegment(out, seg); err != nil {
			return out, err
		}
		switch s := out[start:]; {
		case string(s) == ".":
			out, trailing = out[:start-1], true
		case string(s) == "..":
			out = out[:start-1]
			out, trailing = out[:base+max(0, bytes.LastIndexByte(out[base:], '/'))], true
		case hasParam(s):
			return out, ErrPathParam
		default:
			trailing = false
		}
		if !more {
			break
		}
	}
	if trailing {
		out = append(out, '/')
	}
	if m != MergeSlashes && len(out)-base >= 2 && out[base+1] == '/' {
		return out, ErrLeadingSlashes
	}
	return out, nil
}

// decodeSegment appends one path segment to out, applying rule 1 of
// Normalize and refusing bytes that have no place in a path.
func decodeSegment(out, seg []byte) ([]byte, error) {
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c == '%':
			if i+2 >= len(seg) || !isHex(seg[i+1]) || !isHex(seg[i+2]) {
				return out, ErrInvalid
			}
			switch v := unhex(seg[i+1])<<4 | unhex(seg[i+2]); {
			case v == '/' || v == '\\':
				return out, ErrEncodedSlash
			case v < 0x20 || v == 0x7f:
				return out, ErrEncodedControl
			case unreserved(v):
				out = append(out, v)
			default:
				out = append(out, seg[i:i+3]...)
			}
			i += 2
		case c == '\\':
			return out, ErrBackslash
		case c < 0x21 || c > 0x7e || c == '#':
			return out, ErrInvalid
		default:
			out = append(out, c)
		}
	}
	return out, nil
}

// hasParam reports a path parameter in a decoded segment: a ';', or %3B,
// which is no unreserved character and so survives decoding.
func hasParam(s []byte) bool {
	for i, c := range s {
		if c == ';' || c == '%' && i+2 < len(s) && s[i+1] == '3' && ascii.Lower(s[i+2]) == 'b' {
			return true
		}
	}
	return false
}

// ValidHost reports whether h is an acceptable Host header value or
// absolute-form authority (RFC 9110 section 7.2, RFC 3986 section 3.2): a
// host name (see hostName), which covers IPv4 addresses, or an IPv6 address
// in brackets, optionally followed by ":" and a port of 1 to 5 digits no
// greater than 65535.
//
// It is much stricter than RFC 3986's reg-name on purpose. The route table
// compares hosts as text, so a host with a second spelling could miss its
// route and still reach the backend that serves it: percent-encoding
// ("exa%6Dple.com"), empty labels ("api.example.com..") and sub-delims
// (a comma, which frameworks read as a list separator in X-Forwarded-Host:
// "other.example,api.example.com") are all refused, as are userinfo ('@'),
// an empty port, IPvFuture and IPv6 zones.
func ValidHost(h []byte) bool {
	host, port, hasPort := h, []byte(nil), false
	if len(h) > 0 && h[0] == '[' {
		end := bytes.IndexByte(h, ']')
		if end < 0 || !validIPv6(h[1:end]) {
			return false
		}
		if after := h[end+1:]; len(after) > 0 {
			if after[0] != ':' {
				return false
			}
			port, hasPort = after[1:], true
		}
	} else {
		host, port, hasPort = bytes.Cut(h, []byte{':'})
		if !hostName(host) {
			return false
		}
	}
	if !hasPort {
		return true
	}
	if len(port) == 0 || len(port) > 5 {
		return false
	}
	n := 0
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}

// hostName reports whether h is a sequence of non-empty labels of letters,
// digits, '-' and '_', separated by single dots, with at most one dot at the
// end (the root, which routing ignores).
func hostName(h []byte) bool {
	h = bytes.TrimSuffix(h, []byte{'.'})
	if len(h) == 0 {
		return false
	}
	label := 0
	for _, c := range h {
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case 'a' <= ascii.Lower(c) && ascii.Lower(c) <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			label++
		default:
			return false
		}
	}
	return label > 0
}

// validIPv6 reports whether s is an IPv6address of RFC 3986 section 3.2.2:
// eight 16-bit groups of 1 to 4 hex digits, the last two of which may be
// written as an IPv4 address, and at most one "::" standing for at least one
// zero group.
func validIPv6(s []byte) bool {
	groups, gap := 0, false
	if bytes.HasPrefix(s, []byte("::")) {
		gap, s = true, s[2:]
	}
	for len(s) > 0 {
		n := 0
		for n < len(s) && isHex(s[n]) {
			n++
		}
		if n < len(s) && s[n] == '.' {
			return validIPv4(s) && (!gap && groups+2 == 8 || gap && groups+2 < 8)
		}
		if n == 0 || n > 4 {
			return false
		}
		groups++
		s = s[n:]
		if len(s) == 0 {
			break
		}
		if s[0] != ':' || len(s) == 1 {
			return false // a stray byte, or a single ':' at the end
		}
		if s = s[1:]; s[0] == ':' {
			if gap {
				return false
			}
			gap, s = true, s[1:]
		}
	}
	return !gap && groups == 8 || gap && groups < 8
}

// validIPv4 reports whether s is four dec-octets (RFC 3986 section 3.2.2:
// 0 to 255, no leading zeros) separated by dots.
func validIPv4(s []byte) bool {
	for i := range 4 {
		n, v := 0, 0
		for n < len(s) && n < 4 && s[n] >= '0' && s[n] <= '9' {
			v = v*10 + int(s[n]-'0')
			n++
		}
		if n == 0 || n > 3 || v > 255 || n > 1 && s[0] == '0' {
			return false
		}
		s = s[n:]
		if i < 3 {
			if len(s) == 0 || s[0] != '.' {
				return false
			}
			s = s[1:]
		}
	}
	return len(s) == 0
}

// unreserved reports whether c is ALPHA / DIGIT / "-" / "." / "_" / "~"
// (RFC 3986 section 2.3).
func unreserved(c byte) bool {
	return 'a' <= ascii.Lower(c) && ascii.Lower(c) <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= ascii.Lower(c) && ascii.Lower(c) <= 'f'
}

// unhex returns the value of the hex digit c, which isHex has accepted.
func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return ascii.Lower(c) - 'a' + 10
}
