package route

import (
	"net"
	"strings"
	"testing"
)

// refMatch is a deliberately naive reading of Spec's doc comments, built
// from the standard library and sharing no code with the compiled matcher.
// It works on the raw specs and reports the first one that accepts the
// request.
func refMatch(specs []Spec, host, path string, hdr headers) int {
	for i, s := range specs {
		if refHost(s.Host, host) && strings.HasPrefix(path, s.PathPrefix) && refHeaders(s.Headers, hdr) {
			return i
		}
	}
	return -1
}

func refHost(spec, host string) bool {
	if spec == "" {
		return true
	}
	// Request side: brackets mean an IPv6 literal, possibly with a port;
	// otherwise a port follows the only colon.
	switch {
	case strings.HasPrefix(host, "["):
		end := strings.Index(host, "]")
		if end < 0 {
			break
		}
		host = host[1:end]
	case strings.Count(host, ":") == 1:
		host, _, _ = strings.Cut(host, ":")
		host = strings.TrimSuffix(host, ".")
	case strings.Count(host, ":") == 0:
		host = strings.TrimSuffix(host, ".")
	}
	host = strings.ToLower(host)

	spec = strings.ToLower(spec)
	if strings.HasPrefix(spec, "[") {
		return host == strings.Trim(spec, "[]")
	}
	spec = strings.TrimSuffix(spec, ".")
	if suffix, ok := strings.CutPrefix(spec, "*."); ok {
		labels, ok := strings.CutSuffix(host, "."+suffix)
		return ok && labels != ""
	}
	return host == spec
}

func refHeaders(want map[string]string, hdr headers) bool {
	for name, value := range want {
		found := false
		for _, kv := range hdr {
			if strings.EqualFold(kv[0], name) {
				found = kv[1] == value // the first occurrence decides
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// FuzzMatch checks that Compile and Match never panic and that Match picks
// the first spec the reference matcher accepts. One fuzzed spec is placed
// among fixed ones at a fuzzed position, so the fuzzer also explores order.
func FuzzMatch(f *testing.F) {
	f.Add("api.example.com", "/v1/", "X-Tenant", "acme", uint8(0), "API.example.com:80", "/v1/x", "x-tenant", "acme")
	f.Add("*.example.com", "", "", "", uint8(2), "a.b.example.com.", "/", "", "")
	f.Add("[::1]", "/", "A", "b", uint8(5), "[::1]:8080", "/a", "a", "b")
	f.Add("*.com", "/v10", "X", "y", uint8(1), "example.com", "/v1", "X", "y")
	f.Add("a.*.com", "v1", "", "x", uint8(3), "a..com", "", "", "")
	f.Add("EXAMPLE.COM.", "/", "Content-Type", "a", uint8(4), "example.com:", "/", "content-type", "a")
	f.Fuzz(func(t *testing.T, sHost, sPath, sHdrName, sHdrValue string, pos uint8, host, path, hdrName, hdrValue string) {
		fuzzed := Spec{Name: "fuzzed", Host: sHost, PathPrefix: sPath}
		if sHdrName != "" || sHdrValue != "" {
			fuzzed.Headers = map[string]string{sHdrName: sHdrValue}
		}
		specs := []Spec{
			{Name: "exact", Host: "api.example.com", PathPrefix: "/v1/"},
			{Name: "wild", Host: "*.example.com", Headers: map[string]string{"X-Tenant": "acme"}},
			{Name: "v6", Host: "[::1]", PathPrefix: "/a"},
			{Name: "hdr", Headers: map[string]string{"x-a": "b", "X-Tenant": "acme"}},
			{Name: "path", PathPrefix: "/v1"},
		}
		i := int(pos) % (len(specs) + 1)
		specs = append(specs[:i], append([]Spec{fuzzed}, specs[i:]...)...)

		tab, err := Compile(specs)
		if err != nil {
			// Only the fuzzed spec can be wrong; the fixed ones must still
			// compile without it.
			if _, err := Compile([]Spec{fuzzed}); err == nil {
				t.Fatalf("table fails but the fuzzed spec alone compiles: %+v", fuzzed)
			}
			return
		}

		hdr := headers{{hdrName, hdrValue}, {"X-Tenant", "acme"}}
		want := refMatch(specs, host, path, hdr)
		if got := tab.Match([]byte(host), []byte(path), hdr.toBytes().lookup); got != want {
			t.Fatalf("Match(%q, %q, %q) = %d, reference %d; specs %+v", host, path, hdr, got, want, specs)
		}
		if got := tab.MatchString(host, path, hdr.string); got != want {
			t.Fatalf("MatchString(%q, %q, %q) = %d, reference %d; specs %+v", host, path, hdr, got, want, specs)
		}
	})
}

// TestRefHostAgreesOnIPv6 guards the reference itself: a bracketed host the
// standard library can split must reduce to the same address.
func TestRefHostAgreesOnIPv6(t *testing.T) {
	for _, hp := range []string{"[::1]:80", "[2001:db8::1]:443"} {
		h, _, err := net.SplitHostPort(hp)
		if err != nil {
			t.Fatal(err)
		}
		if !refHost("["+h+"]", hp) {
			t.Errorf("refHost rejects %q", hp)
		}
	}
}
