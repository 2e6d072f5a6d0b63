package config

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/lbd-lb/lbd/balancer"
)

// Value parsers: names, addresses, prefixes and status ranges, each
// returning an error that says what is wrong in the user's words.

// checkName checks a listener or pool name. Names appear in metric labels
// and admin API paths, so they are kept plain.
func checkName(name string) error {
	if name == "" {
		return errString("must not be empty")
	}
	for _, c := range []byte(name) {
		if !isNameByte(c) {
			return errString("may hold only letters, digits, '-' and '_'")
		}
	}
	return nil
}

// checkBackendName checks an explicit backend name. It may also hold '.' and
// ':', so that host-like names such as "gw-1.dc2" fit.
func checkBackendName(name string) error {
	if name == "" {
		return errString("must not be empty: leave name out to use the address")
	}
	for _, c := range []byte(name) {
		if !isNameByte(c) && c != '.' && c != ':' {
			return errString("may hold only letters, digits, '-', '_', '.' and ':'")
		}
	}
	return nil
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

// errString is an error that is only ever printed after a value.
type errString string

func (e errString) Error() string { return string(e) }

// parseHostPort parses "IP:port" and "[IPv6]:port" with a port in 0..65535;
// port 0 binds a port the kernel chooses, and is refused for a backend.
// lbd resolves no names: a load balancer's data plane must not depend on
// DNS, and a name resolved once at load time would go stale silently.
func parseHostPort(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err == nil {
		return ap, nil
	}
	host, port, splitErr := splitHostPort(s)
	switch {
	case strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"):
		return netip.AddrPort{}, errString(`needs a port, as in "[2001:db8::1]:443"`)
	case isAddr(s):
		return netip.AddrPort{}, errString(`needs a port, as in "10.0.0.1:443" or "[2001:db8::1]:443"`)
	case splitErr != nil:
		return netip.AddrPort{}, errString(`is not an IP address and port such as "10.0.0.1:443" or "[2001:db8::1]:443"`)
	case strings.Contains(host, ":") && !strings.HasPrefix(s, "["):
		return netip.AddrPort{}, errString(`is not an IP address and port: write an IPv6 address in brackets, as in "[2001:db8::1]:443"`)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return netip.AddrPort{}, errString("has a bad port: it must be a number in 1..65535")
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return netip.AddrPort{}, errString(`has no IP address: host names are not resolved, so give an address such as "10.0.0.1:443" or "[2001:db8::1]:443"`)
	}
	return netip.AddrPort{}, errString(`is not an IP address and port such as "10.0.0.1:443" or "[2001:db8::1]:443"`)
}

func isAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// splitHostPort splits at the last colon, removing brackets.
func splitHostPort(s string) (host, port string, err error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", errString("missing port")
	}
	host, port = s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	return host, port, nil
}

// parsePrefix parses a CIDR prefix or a single address, which stands for
// itself alone. Host bits are masked off.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parseStatusRange parses "200" or "200-399".
func parseStatusRange(s string) (lo, hi int, err error) {
	loText, hiText, isRange := strings.Cut(s, "-")
	if !isRange {
		hiText = loText
	}
	lo, okLo := parseDigits(loText)
	hi, okHi := parseDigits(hiText)
	switch {
	case !okLo || !okHi:
		return 0, 0, errString(`must be a status code or a range, such as "200" or "200-399"`)
	case lo < 100 || hi > 599:
		return 0, 0, errString("holds a status outside 100..599")
	case lo > hi:
		return 0, 0, errString("is an empty range")
	}
	return lo, hi, nil
}

// parseDigits parses 1 to 3 decimal digits: no sign, no spaces.
func parseDigits(s string) (int, bool) {
	if s == "" || len(s) > 3 {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func nextPrime(n int) int {
	for !balancer.IsPrime(n) {
		n++
	}
	return n
}
