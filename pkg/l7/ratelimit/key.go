package ratelimit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"net/netip"
	"strings"

	"github.com/lbd-lb/lbd/internal/ascii"
)

// ErrKey is returned, wrapped, by ParseKey for a key it does not know.
var ErrKey = errors.New("ratelimit: bad key")

// KeyKind says which part of a request names its bucket.
type KeyKind uint8

// The kinds of key a rate_limit may use ([[listener.route]] in configs/lbd.example.toml).
const (
	KeyClientIP KeyKind = iota + 1 // the client's address, after trusted_proxies
	KeyRoute                       // the route itself: one bucket for everyone, under RouteKey
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
		if !ascii.IsToken(name) {
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

// Key names a bucket: a 128-bit hash of what identifies the client. It is
// fixed-size, so a Limiter keeps 16 bytes per key whatever the size of the
// header or claim it came from, and 128 bits make a collision between two
// clients negligible (about 2^-125 for one pair, 2^-92 that any two of
// a full default table collide).
//
// Keys are made by RouteKey, HeaderKey, ClaimKey and AddrKey. Each puts its
// own tag in the top bits, so keys of different kinds are never equal: a
// header value cannot impersonate a client address however it is chosen.
// The hash is keyed by seeds drawn at random when the process starts, so a
// client can neither aim two values at one bucket nor aim many at one shard
// of a Limiter, and Keys mean nothing outside the process that made them.
// The zero Key is none of these.
type Key struct{ hi, lo uint64 }

// The tags of Key kinds live in the top kindBits bits of Key.hi. They start
// at 1 so the zero Key is no constructor's.
const (
	kindRoute = iota + 1
	kindHeader
	kindClaim
	kindIPv4
	kindIPv6
	kindNoAddr

	kindBits  = 3
	kindShift = 64 - kindBits
	hashMask  = 1<<kindShift - 1
)

// seedHi and seedLo make the two halves of a Key independent 64-bit hashes:
// maphash gives 64 bits a pass, and one pass spread to 128 bits would still
// collide like 64.
var seedHi, seedLo = maphash.MakeSeed(), maphash.MakeSeed()

// RouteKey returns the one Key of a rate_limit keyed on the route, which all
// of the route's clients share.
func RouteKey() Key { return Key{hi: kindRoute << kindShift} }

// HeaderKey returns the Key of a request header's value. v is only read:
// the caller may reuse it (fasthttp's Peek) once HeaderKey returns.
func HeaderKey(v []byte) Key {
	return Key{
		hi: kindHeader<<kindShift | maphash.Bytes(seedHi, v)&hashMask,
		lo: maphash.Bytes(seedLo, v),
	}
}

// ClaimKey returns the Key of a JWT claim's value. Its key space is not
// HeaderKey's: a header and a claim with equal bytes name different
// buckets.
func ClaimKey(v string) Key {
	return Key{
		hi: kindClaim<<kindShift | maphash.String(seedHi, v)&hashMask,
		lo: maphash.String(seedLo, v),
	}
}

// AddrKey returns the Key of a client address. An IPv4 address, or an
// IPv4-mapped IPv6 one (which is the same client seen through a dual-stack
// socket), is its own bucket. An IPv6 address is cut to its first v6Prefix
// bits, so every address of one network shares a bucket; the zone is
// ignored. IPv4 and IPv6 keys never collide. The invalid Addr, a client
// whose address is unknown, gets one Key of its own.
//
// v6Prefix must be between 1 and 128 (64 is the usual value);
// the config is validated before a request is served, so AddrKey panics
// otherwise rather than silently pick a prefix.
func AddrKey(a netip.Addr, v6Prefix int) Key {
	if v6Prefix < 1 || v6Prefix > 128 {
		panic(fmt.Sprintf("ratelimit: IPv6 prefix /%d is not between 1 and 128", v6Prefix))
	}
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return Key{
			hi: kindIPv4<<kindShift | maphash.Bytes(seedHi, b[:])&hashMask,
			lo: maphash.Bytes(seedLo, b[:]),
		}
	}
	if !a.Is6() {
		return Key{hi: kindNoAddr << kindShift}
	}
	b := a.As16()
	net := binary.BigEndian.Uint64(b[:8])
	host := binary.BigEndian.Uint64(b[8:])
	if v6Prefix <= 64 {
		net &= ^uint64(0) << (64 - v6Prefix)
		host = 0
	} else {
		host &= ^uint64(0) << (128 - v6Prefix)
	}
	binary.BigEndian.PutUint64(b[:8], net)
	binary.BigEndian.PutUint64(b[8:], host)
	return Key{
		hi: kindIPv6<<kindShift | maphash.Bytes(seedHi, b[:])&hashMask,
		lo: maphash.Bytes(seedLo, b[:]),
	}
}
