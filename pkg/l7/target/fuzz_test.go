package target

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// refPath is a deliberately naive reading of Normalize's rules 1 to 3 for a
// path that Normalize accepted, sharing no code with it: string decoding,
// strings.ReplaceAll for merging, and RFC 3986 section 5.2.4 step by step.
func refPath(path string, m Mode) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		if path[i] == '%' {
			v := path[i+1 : i+3]
			if c := refUnhex(v); strings.IndexByte("-._~", c) >= 0 || 'a' <= c|0x20 && c|0x20 <= 'z' || '0' <= c && c <= '9' {
				b.WriteByte(c)
			} else {
				b.WriteString(path[i : i+3])
			}
			i += 2
			continue
		}
		b.WriteByte(path[i])
	}
	in := b.String()
	for m == MergeSlashes && strings.Contains(in, "//") {
		in = strings.ReplaceAll(in, "//", "/")
	}
	pop := func(out string) string { return out[:max(0, strings.LastIndex(out, "/"))] }
	out := ""
	for in != "" {
		switch {
		case strings.HasPrefix(in, "../"):
			in = in[3:]
		case strings.HasPrefix(in, "./"):
			in = in[2:]
		case strings.HasPrefix(in, "/./"):
			in = in[2:]
		case in == "/.":
			in = "/"
		case strings.HasPrefix(in, "/../"):
			in, out = in[3:], pop(out)
		case in == "/..":
			in, out = "/", pop(out)
		case in == "." || in == "..":
			in = ""
		default:
			n := strings.IndexByte(in[1:], '/') + 1
			if n == 0 {
				n = len(in)
			}
			out, in = out+in[:n], in[n:]
		}
	}
	return out
}

func refUnhex(s string) byte {
	var v byte
	for _, c := range []byte(strings.ToLower(s)) {
		v <<= 4
		if c <= '9' {
			v |= c - '0'
		} else {
			v |= c - 'a' + 10
		}
	}
	return v
}

// FuzzNormalize checks the invariants of Normalize's doc comment on
// arbitrary input, and compares accepted paths with refPath.
func FuzzNormalize(f *testing.F) {
	for _, r := range normalizeRows {
		f.Add(r.in)
	}
	for _, s := range []string{"/a/%2E%2e/", "/./..//.%2E/", "/%7E/../~", "/a/..;", "/;/../x", "///..//a//"} {
		f.Add(s)
	}
	modes := []Mode{Strict, MergeSlashes, Off}
	f.Fuzz(func(t *testing.T, in string) {
		var outs [3][]byte
		var errs [3]error
		for _, m := range modes {
			outs[m], _, errs[m] = Normalize(nil, []byte(in), m)
		}
		inPath, _, _ := strings.Cut(in, "?")
		for _, m := range modes {
			if !plain([]byte(inPath), m) {
				continue
			}
			if slow, err := normalizePath(nil, []byte(inPath), m); err != nil || string(slow) != inPath {
				t.Fatalf("%v: fast path would copy %q, slow path gives %q, %v", m, inPath, slow, err)
			}
		}
		for _, m := range modes {
			out, err := outs[m], errs[m]
			if err != nil {
				if len(out) != 0 {
					t.Fatalf("%v: error %v with output %q", m, err, out)
				}
				continue
			}
			path, _, _ := bytes.Cut(out, []byte{'?'})
			for _, c := range out {
				if c < 0x21 || c > 0x7e || c == '#' {
					t.Fatalf("%v: %q -> %q holds byte %#x", m, in, out, c)
				}
			}
			if len(path) == 0 || path[0] != '/' || m != Off && bytes.HasPrefix(path, []byte("//")) {
				t.Fatalf("%v: %q -> %q: bad start", m, in, out)
			}
			if m == Off {
				if string(path) != inPath || !bytes.Equal(outs[Strict], out) {
					t.Fatalf("off accepted %q as %q, strict gave %q, %v", in, out, outs[Strict], errs[Strict])
				}
				continue
			}
			if m == MergeSlashes && bytes.Contains(path, []byte("//")) {
				t.Fatalf("merge_slashes: %q -> %q keeps //", in, out)
			}
			upper := bytes.ToUpper(path)
			if bytes.Contains(upper, []byte("%2F")) || bytes.Contains(upper, []byte("%5C")) {
				t.Fatalf("%v: %q -> %q keeps an encoded slash", m, in, out)
			}
			for _, seg := range bytes.Split(path, []byte{'/'}) {
				if s := string(seg); s == "." || s == ".." {
					t.Fatalf("%v: %q -> %q keeps a dot segment", m, in, out)
				}
			}
			if ref := refPath(inPath, m); ref != string(path) {
				t.Fatalf("%v: %q -> %q, reference gives %q", m, in, path, ref)
			}
			if again, _, err := Normalize(nil, out, m); err != nil || !bytes.Equal(again, out) {
				t.Fatalf("%v: %q -> %q is no fixpoint: %q, %v", m, in, out, again, err)
			}
			if again, _, err := Normalize(nil, out, Off); err != nil || !bytes.Equal(again, out) {
				t.Fatalf("off refuses %v output %q: %q, %v", m, out, again, err)
			}
		}
		// Merging only removes empty segments, which can fail no check, so
		// merge_slashes refuses what strict refuses, except a leading "//";
		// off refuses what strict refuses, and more only with ErrChanged.
		if errors.Is(errs[Strict], ErrLeadingSlashes) {
			if errs[MergeSlashes] != nil {
				t.Fatalf("%q: strict %v, merge_slashes %v", in, errs[Strict], errs[MergeSlashes])
			}
		} else if !errors.Is(errs[MergeSlashes], errs[Strict]) {
			t.Fatalf("%q: strict %v, merge_slashes %v", in, errs[Strict], errs[MergeSlashes])
		}
		if !errors.Is(errs[Off], errs[Strict]) && (errs[Strict] != nil || !errors.Is(errs[Off], ErrChanged)) {
			t.Fatalf("%q: strict %v, off %v", in, errs[Strict], errs[Off])
		}
	})
}

// FuzzSplit checks that Split never panics, that an absolute-form rest is
// ready for Normalize and an accepted authority holds no userinfo, and that
// origin-form comes back untouched.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{
		"/a?b", "*", "http://example.com/a?b", "HTTPS://h", "http://h?q", "http://[::1]:80/",
		"http://u@h/", "ftp://x/", "host:443", "http:///", "http://h:/", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		form, authority, rest, err := Split([]byte(in))
		if err != nil {
			return
		}
		switch form {
		case OriginForm:
			if authority != nil || string(rest) != in {
				t.Fatalf("origin-form %q: %q, %q", in, authority, rest)
			}
		case AsteriskForm:
			if in != "*" {
				t.Fatalf("asterisk-form %q", in)
			}
		case AbsoluteForm:
			if len(rest) == 0 || rest[0] != '/' {
				t.Fatalf("absolute-form %q: rest %q", in, rest)
			}
			if !ValidHost(authority) || bytes.IndexByte(authority, '@') >= 0 {
				t.Fatalf("absolute-form %q: authority %q", in, authority)
			}
			if !strings.HasSuffix(in, string(rest)) && !strings.HasSuffix(in, string(rest[1:])) {
				t.Fatalf("absolute-form %q: rest %q is not its tail", in, rest)
			}
		default:
			t.Fatalf("%q: form %d", in, form)
		}
	})
}

// FuzzValidHost compares the hand-written IPv6 check with net/netip, which
// knows no brackets and allows zones, and checks that an accepted host holds
// none of the bytes ValidHost promises to refuse.
func FuzzValidHost(f *testing.F) {
	for _, s := range []string{
		"example.com", "host:80", "[::1]:8080", "[::ffff:192.0.2.1]", "[1:2:3:4:5:6:7::]", "[1::2::3]",
		"[1:2:3:4:5:6:1.2.3.4]", "[::1.2.3.4]", "[::01.2.3.4]", "u:p@host", "host:", "a b", "exa%41mple",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		ok := ValidHost([]byte(h))
		if ok && (h == "" || strings.ContainsAny(h, "@/\\?#% ") || strings.HasSuffix(h, ":")) {
			t.Fatalf("ValidHost(%q) = true", h)
		}
		for i := range len(h) {
			if ok && (h[i] < 0x21 || h[i] > 0x7e) {
				t.Fatalf("ValidHost(%q) = true with byte %#x", h, h[i])
			}
		}
		if inner, found := strings.CutPrefix(h, "["); found && strings.HasSuffix(inner, "]") && !strings.Contains(inner, "%") {
			a, err := netip.ParseAddr(strings.TrimSuffix(inner, "]"))
			if want := err == nil && a.Is6(); ok != want {
				t.Fatalf("ValidHost(%q) = %v, netip says %v (%v)", h, ok, want, err)
			}
		}
	})
}
