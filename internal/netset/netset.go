// Package netset holds a set of IP networks and answers whether an address
// belongs to one of them. An IPv4 address mapped into IPv6 (::ffff:a.b.c.d,
// as a dual-stack socket reports IPv4 peers) is tested as the IPv4 address
// it is.
package netset

import "net/netip"

// Set is a set of networks. The zero Set holds none.
type Set []netip.Prefix

// Contains reports whether a is in one of the networks of s.
func (s Set) Contains(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
