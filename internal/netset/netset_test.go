package netset

import (
	"net/netip"
	"testing"
)

func TestContains(t *testing.T) {
	s := Set{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("192.0.2.7/32")}
	for _, tc := range []struct {
		desc string
		addr string
		want bool
	}{
		{"inside v4", "10.1.2.3", true},
		{"outside v4", "11.0.0.1", false},
		{"v4-mapped inside", "::ffff:10.9.9.9", true},
		{"v4-mapped outside", "::ffff:11.9.9.9", false},
		{"host route", "192.0.2.7", true},
		{"next to host route", "192.0.2.8", false},
		{"inside v6", "2001:db8::1", true},
		{"outside v6", "2001:db9::1", false},
		{"zone", "fe80::1%eth0", false},
	} {
		if got := s.Contains(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("%s: Contains(%s) = %v, want %v", tc.desc, tc.addr, got, tc.want)
		}
	}
	if (Set(nil)).Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Error("the empty set holds an address")
	}
}
