package ratelimit

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want KeySource
		err  bool
	}{
		{in: "client_ip", want: KeySource{Kind: KeyClientIP}},
		{in: "route", want: KeySource{Kind: KeyRoute}},
		{in: "header:X-Api-Key", want: KeySource{Kind: KeyHeader, Name: "X-Api-Key"}},
		{in: "claim:sub", want: KeySource{Kind: KeyClaim, Name: "sub"}},
		{in: "claim:https://example.com/tenant", want: KeySource{Kind: KeyClaim, Name: "https://example.com/tenant"}},
		{in: "", err: true},
		{in: "Client_IP", err: true},
		{in: "ip", err: true},
		{in: "header:", err: true},
		{in: "header:X Key", err: true},
		{in: "header:X-Key:", err: true},
		{in: "claim:", err: true},
	} {
		got, err := ParseKey(tc.in)
		if tc.err {
			if !errors.Is(err, ErrKey) {
				t.Errorf("ParseKey(%q) = %v, %v; want ErrKey", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseKey(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if got.String() != tc.in {
			t.Errorf("ParseKey(%q).String() = %q", tc.in, got.String())
		}
	}
}

// TestAddrKey pins which addresses share a bucket.
func TestAddrKey(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		a, b   string // "" is the invalid Addr
		prefix int
		same   bool
	}{
		{"one /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", 64, true},
		{"next /64", "2001:db8:1:2::1", "2001:db8:1:3::1", 64, false},
		{"/128 separates addresses", "2001:db8::1", "2001:db8::2", 128, false},
		{"/128 same address", "2001:db8::1", "2001:db8::1", 128, true},
		{"one /56", "2001:db8:0:100::1", "2001:db8:0:1ff::1", 56, true},
		{"next /56", "2001:db8:0:100::1", "2001:db8:0:200::1", 56, false},
		{"/65, same half", "2001:db8::1", "2001:db8::7fff:0:0:0", 65, true},
		{"/65, other half", "2001:db8::1", "2001:db8::8000:0:0:1", 65, false},
		{"/1, same half", "2001:db8::1", "7fff::", 1, true},
		{"/1, other half", "2001:db8::1", "8000::", 1, false},
		{"zone ignored", "fe80::1%eth0", "fe80::1", 128, true},
		{"IPv4-mapped is IPv4", "::ffff:192.0.2.1", "192.0.2.1", 64, true},
		{"IPv4-mapped is IPv4 at /128", "::ffff:192.0.2.1", "192.0.2.1", 128, true},
		{"IPv4 is a whole /32 whatever the prefix", "192.0.2.1", "192.0.2.2", 1, false},
		{"IPv4 is not IPv4-compatible IPv6", "192.0.2.1", "::192.0.2.1", 128, false},
		{"IPv4 zero is not IPv6 zero", "0.0.0.0", "::", 128, false},
		{"IPv4 zero is not a masked IPv6 network", "0.0.0.0", "::1", 64, false},
		{"IPv4-mapped zero is not a masked IPv6 network", "::ffff:0.0.0.0", "0:0:0:0:0:ffff:1:2", 88, false},
		{"unknown address", "", "", 64, true},
		{"unknown is not IPv4 zero", "", "0.0.0.0", 64, false},
		{"unknown is not IPv6 zero", "", "::", 64, false},
	} {
		a, b := addr(t, tc.a), addr(t, tc.b)
		if got := AddrKey(a, tc.prefix) == AddrKey(b, tc.prefix); got != tc.same {
			t.Errorf("%s: AddrKey(%v, %d) == AddrKey(%v, %d) is %v", tc.desc, a, tc.prefix, b, tc.prefix, got)
		}
	}
}

func addr(t *testing.T, s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAddrKeyMatchesPrefix checks AddrKey against netip's own masking: two
// IPv6 addresses share a key exactly when they share the prefix.
func TestAddrKeyMatchesPrefix(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	random := func() netip.Addr {
		var a [16]byte
		for i := range a {
			a[i] = byte(r.Uint32())
		}
		a[0] |= 0x20 // never IPv4-mapped
		return netip.AddrFrom16(a)
	}
	for range 20_000 {
		bits := 1 + r.IntN(128)
		a := random()
		// b shares a's first n bits, n within 4 of bits, so that both
		// answers come up.
		n := max(0, min(128, bits+r.IntN(9)-4))
		b := blend(a, random(), n)
		wa, _ := a.Prefix(bits)
		wb, _ := b.Prefix(bits)
		if got, want := AddrKey(a, bits) == AddrKey(b, bits), wa == wb; got != want {
			t.Fatalf("AddrKey(%v, %d) == AddrKey(%v, %d) is %v, but the /%d prefixes are %v and %v", a, bits, b, bits, got, bits, wa, wb)
		}
	}
}

// blend returns the first n bits of a followed by the rest of b.
func blend(a, b netip.Addr, n int) netip.Addr {
	x, y := a.As16(), b.As16()
	for i := range 128 {
		if i < n {
			continue
		}
		m := byte(0x80 >> (i % 8))
		x[i/8] = x[i/8]&^m | y[i/8]&m
	}
	return netip.AddrFrom16(x)
}

// TestKeySpaces: the kinds of key never share a bucket, even for the same
// bytes.
func TestKeySpaces(t *testing.T) {
	for _, v := range []string{"", "a", "192.0.2.1", "::1", string(bytes.Repeat([]byte("x"), 8000))} {
		h, c := HeaderKey([]byte(v)), ClaimKey(v)
		if h == c {
			t.Errorf("HeaderKey(%.20q) == ClaimKey(%.20q)", v, v)
		}
		if h != HeaderKey([]byte(v)) || c != ClaimKey(v) {
			t.Errorf("the keys of %.20q change from one call to the next", v)
		}
		for _, k := range []Key{h, c} {
			if k == RouteKey() || k == (Key{}) {
				t.Errorf("%.20q: %v is the route key or the zero key", v, k)
			}
			if a, err := netip.ParseAddr(v); err == nil && (k == AddrKey(a, 128) || k == AddrKey(a, v6Prefix)) {
				t.Errorf("%.20q: a header or claim key is an address key", v)
			}
		}
	}
	if RouteKey() != RouteKey() || RouteKey() == (Key{}) {
		t.Error("RouteKey is not one non-zero key")
	}
	// The tag, not the luck of the hash, keeps the kinds apart.
	for _, tc := range []struct {
		key  Key
		kind uint64
	}{
		{RouteKey(), kindRoute},
		{HeaderKey([]byte("a")), kindHeader},
		{ClaimKey("a"), kindClaim},
		{AddrKey(netip.MustParseAddr("192.0.2.1"), 64), kindIPv4},
		{AddrKey(netip.MustParseAddr("::ffff:192.0.2.1"), 64), kindIPv4},
		{AddrKey(netip.MustParseAddr("2001:db8::1"), 64), kindIPv6},
		{AddrKey(netip.Addr{}, 64), kindNoAddr},
	} {
		if got := tc.key.hi >> kindShift; got != tc.kind {
			t.Errorf("%v: tag %d, want %d", tc.key, got, tc.kind)
		}
	}
}

// TestKeysSpread: distinct values give distinct keys, spread evenly over
// the shards (which take the low bits).
func TestKeysSpread(t *testing.T) {
	const n = 64_000
	seen := make(map[Key]bool, 3*n)
	var shards [maxShards]int
	value := make([]byte, 8)
	for i := range n {
		value[0], value[1], value[2] = byte(i), byte(i>>8), byte(i>>16)
		for _, k := range []Key{HeaderKey(value), AddrKey(v6(i), v6Prefix), v4(i)} {
			if seen[k] {
				t.Fatalf("value %d: key %v made twice", i, k)
			}
			seen[k] = true
			shards[k.lo%maxShards]++
		}
	}
	for i, c := range shards {
		// 3,000 a shard on average; 6 standard deviations is about 330.
		if c < 2_600 || c > 3_400 {
			t.Errorf("shard %d gets %d of %d keys", i, c, 3*n)
		}
	}
}

func TestAddrKeyPanics(t *testing.T) {
	for _, bits := range []int{-1, 0, 129} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("AddrKey(_, %d) did not panic", bits)
				}
			}()
			AddrKey(netip.MustParseAddr("2001:db8::1"), bits)
		}()
	}
}

func TestKeyAllocs(t *testing.T) {
	value := bytes.Repeat([]byte("v"), 8000)
	claim := string(value)
	a4, a6, mapped := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1%eth0"), netip.MustParseAddr("::ffff:192.0.2.1")
	for _, tc := range []struct {
		desc string
		f    func() Key
	}{
		{"RouteKey", RouteKey},
		{"HeaderKey", func() Key { return HeaderKey(value) }},
		{"ClaimKey", func() Key { return ClaimKey(claim) }},
		{"AddrKey IPv4", func() Key { return AddrKey(a4, v6Prefix) }},
		{"AddrKey IPv6", func() Key { return AddrKey(a6, v6Prefix) }},
		{"AddrKey IPv4-mapped", func() Key { return AddrKey(mapped, 128) }},
	} {
		if n := testing.AllocsPerRun(100, func() { sinkKey = tc.f() }); n != 0 {
			t.Errorf("%s allocates %v times", tc.desc, n)
		}
	}
}

var sinkKey Key

func BenchmarkKey(b *testing.B) {
	short, long := []byte("0123456789abcdef0123456789abcdef"), bytes.Repeat([]byte("v"), 8000)
	a4, a6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	for _, bc := range []struct {
		desc string
		f    func() Key
	}{
		{"header 32 B", func() Key { return HeaderKey(short) }},
		{"header 8 KB", func() Key { return HeaderKey(long) }},
		{"claim 32 B", func() Key { return ClaimKey(string(short)) }},
		{"IPv4", func() Key { return AddrKey(a4, v6Prefix) }},
		{"IPv6", func() Key { return AddrKey(a6, v6Prefix) }},
	} {
		b.Run(bc.desc, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkKey = bc.f()
			}
		})
	}
}
