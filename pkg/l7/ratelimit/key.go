package ratelimit

import (
	"errors"
	"fmt"
	"strings"
)

// ErrKey is returned, wrapped, by ParseKey for a key it does not know.
var ErrKey = errors.New("ratelimit: bad key")

// KeyKind says which part of a request names its bucket.
type KeyKind uint8

// The kinds of key a rate_limit may use (SPEC.md, [[listener.route]]).
const (
	KeyClientIP KeyKind = iota + 1 // the client's address, after trusted_proxies
	KeyRoute                       // the route itself: one bucket for everyone, under any constant key
	KeyHeader                      // the value of a request header
	KeyClaim                       // the value of a verified JWT claim
)

// KeySource is a parsed rate_limit key. Name is the header or claim name
// for KeyHeader and KeyClaim, and empty otherwise.
type KeySource struct {
	Kind KeyKind
	Name string
}

// ParseKey parses the key of a rate_limit: "client_ip", "route",
// "header:NAME" or "claim:NAME". A header name must be an HTTP token; a
// claim name may be any non-empty string, as JSON allows. The words are
// case-sensitive, like every other keyword of the config.
func ParseKey(s string) (KeySource, error) {
	switch s {
	case "client_ip":
		return KeySource{Kind: KeyClientIP}, nil
	case "route":
		return KeySource{Kind: KeyRoute}, nil
	}
	if name, ok := strings.CutPrefix(s, "header:"); ok {
		if !isToken(name) {
			return KeySource{}, fmt.Errorf("%w: %q: the header name is not an HTTP token", ErrKey, s)
		}
		return KeySource{Kind: KeyHeader, Name: name}, nil
	}
	if name, ok := strings.CutPrefix(s, "claim:"); ok {
		if name == "" {
			return KeySource{}, fmt.Errorf("%w: %q: empty claim name", ErrKey, s)
		}
		return KeySource{Kind: KeyClaim, Name: name}, nil
	}
	return KeySource{}, fmt.Errorf("%w: %q: want client_ip, route, header:NAME or claim:NAME", ErrKey, s)
}

// String returns k in the form ParseKey reads.
func (k KeySource) String() string {
	switch k.Kind {
	case KeyClientIP:
		return "client_ip"
	case KeyRoute:
		return "route"
	case KeyHeader:
		return "header:" + k.Name
	case KeyClaim:
		return "claim:" + k.Name
	}
	return fmt.Sprintf("KeyKind(%d)", k.Kind)
}

// isToken reports whether s is a non-empty HTTP token (RFC 9110, section
// 5.6.2), the syntax of a header name.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}
