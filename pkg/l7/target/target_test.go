package target

import (
	"errors"
	"strings"
	"testing"
)

func TestParseMode(t *testing.T) {
	for _, r := range []struct {
		desc string
		in   string
		want Mode
		err  error
	}{
		{desc: "unset is the default", in: "", want: Strict},
		{desc: "strict", in: "strict", want: Strict},
		{desc: "merge_slashes", in: "merge_slashes", want: MergeSlashes},
		{desc: "off", in: "off", want: Off},
		{desc: "names are case-sensitive, like every config key", in: "Strict", err: ErrMode},
		{desc: "unknown", in: "merge-slashes", err: ErrMode},
	} {
		got, err := ParseMode(r.in)
		if !errors.Is(err, r.err) || err == nil && got != r.want {
			t.Errorf("%s: ParseMode(%q) = %v, %v; want %v, %v", r.desc, r.in, got, err, r.want, r.err)
		}
		if err == nil && r.in != "" && got.String() != r.in {
			t.Errorf("%s: String() = %q, want %q", r.desc, got.String(), r.in)
		}
	}
	if s := Mode(9).String(); s != "Mode(9)" {
		t.Errorf("Mode(9).String() = %q", s)
	}
}

// normalizeRows pin each rule of Normalize. A row with no err must also be a
// fixpoint (rule 6), which TestNormalize checks.
var normalizeRows = []struct {
	desc string
	in   string
	m    Mode
	want string
	err  error
}{
	{desc: "plain path", in: "/api/v1/users", want: "/api/v1/users"},
	{desc: "root", in: "/", want: "/"},
	{desc: "RFC 9112 3.2.1: query kept", in: "/x?a=1&b=2", want: "/x?a=1&b=2"},
	{desc: "empty query drops its ?", in: "/x?", want: "/x"},
	{desc: "query is not normalised or decoded", in: "/x?a=%2F&b=..%2f", want: "/x?a=%2F&b=..%2f"},
	{desc: "query may hold ? / and .", in: "/x?/../?%41", want: "/x?/../?%41"},
	{desc: "only the first ? splits", in: "/x??", want: "/x??"},
	{desc: "trailing slash kept", in: "/a/b/", want: "/a/b/"},
	{desc: "dot inside a segment is no dot segment", in: "/a/.well-known/...", want: "/a/.well-known/..."},

	// Rule 1: percent-encoding.
	{desc: "RFC 3986 6.2.2.2: unreserved decoded", in: "/%41%7e", want: "/A~"},
	{desc: "RFC 3986 2.3: every unreserved class", in: "/%61%5A%30%2D%2e%5F%7E", want: "/aZ0-._~"},
	{desc: "UTF-8 kept as written", in: "/caf%c3%a9", want: "/caf%c3%a9"},
	{desc: "reserved kept, case preserved", in: "/a%3fb%3Dc%23d", want: "/a%3fb%3Dc%23d"},
	{desc: "%25 kept, never decoded twice", in: "/%252F", want: "/%252F"},
	{desc: "encoded space is no control", in: "/a%20b", want: "/a%20b"},
	{desc: "truncated triplet", in: "/a%4", err: ErrInvalid},
	{desc: "triplet cut by a slash", in: "/a%4/1", err: ErrInvalid},
	{desc: "non-hex triplet", in: "/a%zz", err: ErrInvalid},
	{desc: "lone percent", in: "/100%", err: ErrInvalid},

	// Rule 2: MergeSlashes.
	{desc: "strict keeps inner empty segments", in: "/a//b", want: "/a//b"},
	{desc: "merge_slashes merges", in: "/a//b///c", m: MergeSlashes, want: "/a/b/c"},
	{desc: "merge_slashes merges a trailing run", in: "/a//", m: MergeSlashes, want: "/a/"},
	{desc: "merge_slashes merges before dot removal", in: "/a//..", m: MergeSlashes, want: "/"},
	{desc: "strict pops the empty segment", in: "/a//..", want: "/a/"},
	{desc: "merge_slashes root run", in: "///", m: MergeSlashes, want: "/"},

	// Rule 3: dot segments.
	{desc: "RFC 3986 5.2.4: . and ..", in: "/a/b/../c/./d", want: "/a/c/d"},
	{desc: "RFC 3986 5.2.4: .. at the root stays there", in: "/../../a", want: "/a"},
	{desc: "RFC 3986 5.2.4: trailing . leaves /", in: "/a/.", want: "/a/"},
	{desc: "RFC 3986 5.2.4: trailing .. leaves /", in: "/a/b/..", want: "/a/"},
	{desc: "RFC 3986 5.2.4: only ..", in: "/..", want: "/"},
	{desc: "RFC 3986 5.2.4: only .", in: "/.", want: "/"},
	{desc: "RFC 3986 5.2.4: ./ before an empty segment", in: "/a/.//", want: "/a//"},
	{desc: "encoded dots are dots", in: "/public/%2e%2e/admin/x", want: "/admin/x"},
	{desc: "mixed encoded dots", in: "/a/.%2E/b/%2e", want: "/b/"},
	{desc: "query after dot removal", in: "/a/..?x=1", want: "/?x=1"},

	// Rule 4 and the syntax refusals.
	{desc: "attack: encoded slash", in: "/admin/..%2Fpublic", err: ErrEncodedSlash},
	{desc: "encoded slash, lower case", in: "/a%2fb", err: ErrEncodedSlash},
	{desc: "encoded backslash", in: "/a%5cb", err: ErrEncodedSlash},
	{desc: "attack: dot segment with parameter", in: "/public/..;/admin", err: ErrPathParam},
	{desc: "single dot with parameter", in: "/a/.;x/b", err: ErrPathParam},
	{desc: "encoded dots with parameter", in: "/a/%2e%2e;/b", err: ErrPathParam},
	{desc: "dot segment with encoded ;", in: "/a/..%3b/b", err: ErrPathParam},
	{desc: "attack: parameter hides a route prefix (servlet containers)", in: "/admin;x/secret", err: ErrPathParam},
	{desc: "parameter on a normal segment", in: "/a;v=1/b", err: ErrPathParam},
	{desc: "encoded parameter", in: "/admin%3Bx/secret", err: ErrPathParam},
	{desc: "three dots with parameter", in: "/...;x", err: ErrPathParam},
	{desc: "attack: backslash", in: "/public/..\\admin", err: ErrBackslash},
	{desc: "encoded NUL", in: "/a%00", err: ErrEncodedControl},
	{desc: "encoded LF", in: "/a%0A", err: ErrEncodedControl},
	{desc: "encoded DEL", in: "/a%7f", err: ErrEncodedControl},
	{desc: "RFC 9112 3.2: space", in: "/a b", err: ErrInvalid},
	{desc: "control byte", in: "/a\tb", err: ErrInvalid},
	{desc: "non-ASCII byte", in: "/caf\xc3\xa9", err: ErrInvalid},
	{desc: "RFC 9112 3.2: fragment", in: "/a#b", err: ErrInvalid},
	{desc: "fragment in query", in: "/a?b#c", err: ErrInvalid},
	{desc: "space in query", in: "/a?b c", err: ErrInvalid},
	{desc: "bad query wins over off's ErrChanged", in: "/.? ", m: Off, err: ErrInvalid},
	{desc: "bad query wins over ErrLeadingSlashes", in: "//? ", err: ErrInvalid},
	{desc: "RFC 9112 3.2.1: origin-form starts with /", in: "a/b", err: ErrInvalid},
	{desc: "empty", in: "", err: ErrInvalid},
	{desc: "empty path with query", in: "?a", err: ErrInvalid},

	// Leading "//".
	{desc: "attack: authority-like path", in: "//admin.internal/x", err: ErrLeadingSlashes},
	{desc: "merge_slashes removes the authority look", in: "//admin.internal/x", m: MergeSlashes, want: "/admin.internal/x"},
	{desc: "leading // made by dot removal", in: "/..//x", err: ErrLeadingSlashes},
	{desc: "leading // made by popping", in: "/a/..//x", err: ErrLeadingSlashes},
	{desc: "bare //", in: "//", err: ErrLeadingSlashes},

	// Rule 5: Off never rewrites.
	{desc: "off passes a normal path", in: "/a/b?q=%41", m: Off, want: "/a/b?q=%41"},
	{desc: "off keeps inner empty segments", in: "/a//b", m: Off, want: "/a//b"},
	{desc: "off keeps reserved triplets", in: "/caf%C3%A9", m: Off, want: "/caf%C3%A9"},
	{desc: "off drops an empty query", in: "/x?", m: Off, want: "/x"},
	{desc: "off refuses a dot segment", in: "/a/../b", m: Off, err: ErrChanged},
	{desc: "off refuses an encoded unreserved", in: "/%41", m: Off, err: ErrChanged},
	{desc: "off refuses a leading //", in: "//a", m: Off, err: ErrLeadingSlashes},
	{desc: "off still refuses encoded slashes", in: "/a%2Fb", m: Off, err: ErrEncodedSlash},

	{desc: "unknown mode", in: "/", m: 3, err: ErrMode},
}

func TestNormalize(t *testing.T) {
	for _, r := range normalizeRows {
		out, n, err := Normalize(nil, []byte(r.in), r.m)
		if !errors.Is(err, r.err) {
			t.Errorf("%s: Normalize(%q, %v) error %v, want %v", r.desc, r.in, r.m, err, r.err)
			continue
		}
		if err != nil {
			if len(out) != 0 || n != 0 {
				t.Errorf("%s: error with output %q, %d", r.desc, out, n)
			}
			continue
		}
		if string(out) != r.want {
			t.Errorf("%s: Normalize(%q, %v) = %q, want %q", r.desc, r.in, r.m, out, r.want)
		}
		if path, _, _ := strings.Cut(r.want, "?"); n != len(path) {
			t.Errorf("%s: pathLen %d, want %d", r.desc, n, len(path))
		}
		if again, _, err := Normalize(nil, out, r.m); err != nil || string(again) != string(out) {
			t.Errorf("%s: not a fixpoint: %q gives %q, %v", r.desc, out, again, err)
		}
		if again, _, err := Normalize(nil, out, Off); err != nil || string(again) != string(out) {
			t.Errorf("%s: off refuses output %q: %q, %v", r.desc, out, again, err)
		}
	}
}

// TestNormalizeOffFromStrict derives Off's answer for every Strict row
// (rule 5): the same refusal, the same target if Strict left the path as
// it was, and ErrChanged otherwise.
func TestNormalizeOffFromStrict(t *testing.T) {
	for _, r := range normalizeRows {
		if r.m != Strict {
			continue
		}
		want, wantErr := r.want, r.err
		inPath, _, _ := strings.Cut(r.in, "?")
		if wantPath, _, _ := strings.Cut(r.want, "?"); wantErr == nil && wantPath != inPath {
			want, wantErr = "", ErrChanged
		}
		out, _, err := Normalize(nil, []byte(r.in), Off)
		if !errors.Is(err, wantErr) || string(out) != want {
			t.Errorf("%s: Normalize(%q, off) = %q, %v; want %q, %v", r.desc, r.in, out, err, want, wantErr)
		}
	}
}

// TestNormalizeAppends checks the dst contract: the result is appended, the
// path length does not count dst, and an error leaves dst as it was.
func TestNormalizeAppends(t *testing.T) {
	dst := []byte("GET ")
	out, n, err := Normalize(dst, []byte("/a/../b?q"), Strict)
	if err != nil || string(out) != "GET /b?q" || string(out[len(dst):len(dst)+n]) != "/b" {
		t.Errorf("got %q, %d, %v", out, n, err)
	}
	out, n, err = Normalize(dst, []byte("/a%2Fb"), Strict)
	if err == nil || string(out) != "GET " || n != 0 {
		t.Errorf("error case: got %q, %d, %v", out, n, err)
	}
}

// TestPlain proves that ordinary paths take the copying fast path, and that
// the paths it must not handle do not.
func TestPlain(t *testing.T) {
	for _, r := range []struct {
		desc string
		in   string
		m    Mode
		want bool
	}{
		{desc: "plain", in: "/api/v1/users", want: true},
		{desc: "root", in: "/", want: true},
		{desc: "inner // in strict", in: "/a//b", want: true},
		{desc: "inner // in merge_slashes", in: "/a//b", m: MergeSlashes, want: false},
		{desc: "leading //", in: "//a", want: false},
		{desc: "dotted segment", in: "/a/.well-known", want: false},
		{desc: "dot inside a segment", in: "/index.html", want: true},
		{desc: "percent", in: "/a%41", want: false},
		{desc: "backslash", in: "/a\\b", want: false},
		{desc: "empty", in: "", want: false},
	} {
		if got := plain([]byte(r.in), r.m); got != r.want {
			t.Errorf("%s: plain(%q, %v) = %v, want %v", r.desc, r.in, r.m, got, r.want)
		}
	}
}

func TestNormalizeAllocs(t *testing.T) {
	dst := make([]byte, 0, 256)
	for _, in := range []string{"/api/v1/users?id=7", "/a/./b/../%7Ec%41//d?q=1"} {
		for _, m := range []Mode{Strict, MergeSlashes} {
			rest := []byte(in)
			n := testing.AllocsPerRun(100, func() {
				if _, _, err := Normalize(dst[:0], rest, m); err != nil {
					t.Fatal(err)
				}
			})
			if n != 0 {
				t.Errorf("Normalize(%q, %v): %v allocations, want 0", in, m, n)
			}
		}
	}
}

func TestSplit(t *testing.T) {
	for _, r := range []struct {
		desc      string
		in        string
		form      Form
		authority string
		rest      string
		err       error
	}{
		{desc: "RFC 9112 3.2.1: origin-form", in: "/a?b", form: OriginForm, rest: "/a?b"},
		{desc: "origin-form is not validated here", in: "/a b", form: OriginForm, rest: "/a b"},
		{desc: "RFC 9112 3.2.2: absolute-form", in: "http://example.com/a/b?c", form: AbsoluteForm, authority: "example.com", rest: "/a/b?c"},
		{desc: "https", in: "https://example.com/", form: AbsoluteForm, authority: "example.com", rest: "/"},
		{desc: "RFC 9110 4.2.3: empty path is /", in: "http://example.com", form: AbsoluteForm, authority: "example.com", rest: "/"},
		{desc: "empty path with query", in: "http://example.com?q=1", form: AbsoluteForm, authority: "example.com", rest: "/?q=1"},
		{desc: "port", in: "http://example.com:8080/x", form: AbsoluteForm, authority: "example.com:8080", rest: "/x"},
		{desc: "IPv6 with port", in: "http://[::1]:8080/x", form: AbsoluteForm, authority: "[::1]:8080", rest: "/x"},
		{desc: "RFC 3986 3.1: scheme is case-insensitive", in: "HTTP://Example.com/x", form: AbsoluteForm, authority: "Example.com", rest: "/x"},
		{desc: "mixed-case https", in: "hTtPs://h/", form: AbsoluteForm, authority: "h", rest: "/"},
		{desc: "RFC 9110 4.2.4: userinfo", in: "http://u:p@example.com/", err: ErrUserinfo},
		{desc: "userinfo without password", in: "http://u@example.com", err: ErrUserinfo},
		{desc: "RFC 9110 4.2.1: empty host", in: "http:///x", err: ErrInvalid},
		{desc: "empty port", in: "http://h:/x", err: ErrInvalid},
		{desc: "fragment in authority", in: "http://h#f", err: ErrInvalid},
		{desc: "other scheme", in: "ftp://x/", err: ErrInvalid},
		{desc: "scheme without //", in: "http:/x", err: ErrInvalid},
		{desc: "RFC 9112 3.2.3: authority-form is for CONNECT", in: "host:443", err: ErrInvalid},
		{desc: "RFC 9112 3.2.4: asterisk-form", in: "*", form: AsteriskForm, rest: "*"},
		{desc: "asterisk with more", in: "*x", err: ErrInvalid},
		{desc: "empty", in: "", err: ErrInvalid},
		{desc: "relative path", in: "a/b", err: ErrInvalid},
	} {
		form, authority, rest, err := Split([]byte(r.in))
		if !errors.Is(err, r.err) {
			t.Errorf("%s: Split(%q) error %v, want %v", r.desc, r.in, err, r.err)
			continue
		}
		if err == nil && (form != r.form || string(authority) != r.authority || string(rest) != r.rest) {
			t.Errorf("%s: Split(%q) = %d, %q, %q; want %d, %q, %q", r.desc, r.in, form, authority, rest, r.form, r.authority, r.rest)
		}
	}
}

func TestValidHost(t *testing.T) {
	for _, r := range []struct {
		desc string
		in   string
		want bool
	}{
		{desc: "name", in: "example.com", want: true},
		{desc: "trailing dot", in: "example.com.", want: true},
		{desc: "RFC 3986 3.2.3: port", in: "host:80", want: true},
		{desc: "largest port", in: "host:65535", want: true},
		{desc: "port too large", in: "host:65536", want: false},
		{desc: "port too long", in: "host:000080", want: false},
		{desc: "empty port", in: "host:", want: false},
		{desc: "letters in port", in: "host:8o", want: false},
		{desc: "two colons", in: "a:1:2", want: false},
		{desc: "IPv4", in: "192.0.2.1:443", want: true},
		{desc: "sub-delims are refused (a second spelling of a host)", in: "a!$&'()*+,;=b", want: false},
		{desc: "attack: comma list", in: "other.example,api.example.com", want: false},
		{desc: "empty label", in: "api.example.com..", want: false},
		{desc: "leading dot", in: ".example.com", want: false},
		{desc: "one trailing dot", in: "api.example.com.", want: true},
		{desc: "trailing dot and port", in: "api.example.com.:8080", want: true},
		{desc: "underscore label", in: "svc_a.internal", want: true},
		{desc: "only a dot", in: ".", want: false},
		{desc: "RFC 3986 3.2.2: IPv6 with port", in: "[::1]:8080", want: true},
		{desc: "full IPv6", in: "[2001:db8:0:0:0:0:0:1]", want: true},
		{desc: "IPv6 with IPv4 tail", in: "[::ffff:192.0.2.1]", want: true},
		{desc: "IPv6 with eight groups and ::", in: "[1:2:3:4:5:6:7::8]", want: false},
		{desc: "IPv6 trailing ::", in: "[1:2:3:4:5:6:7::]", want: true},
		{desc: "IPv6 two ::", in: "[1::2::3]", want: false},
		{desc: "IPv6 five hex digits", in: "[12345::]", want: false},
		{desc: "IPv6 trailing :", in: "[1:2:3:4:5:6:7:]", want: false},
		{desc: "IPv6 short", in: "[1:2]", want: false},
		{desc: "IPv6 bad IPv4 tail", in: "[::ffff:192.0.2.256]", want: false},
		{desc: "IPv6 IPv4 leading zero", in: "[::ffff:192.0.2.01]", want: false},
		{desc: "RFC 6874 zone refused", in: "[fe80::1%25eth0]", want: false},
		{desc: "IPvFuture refused", in: "[v1.x]", want: false},
		{desc: "unclosed bracket", in: "[::1", want: false},
		{desc: "junk after bracket", in: "[::1]x", want: false},
		{desc: "bare IPv6", in: "::1", want: false},
		{desc: "RFC 9110 4.2.4: userinfo", in: "u:p@host", want: false},
		{desc: "empty", in: "", want: false},
		{desc: "port only", in: ":80", want: false},
		{desc: "space", in: "a b", want: false},
		{desc: "control", in: "a\x00b", want: false},
		{desc: "slash", in: "a/b", want: false},
		{desc: "backslash", in: "a\\b", want: false},
		{desc: "query", in: "a?b", want: false},
		{desc: "fragment", in: "a#b", want: false},
		{desc: "percent-encoding refused, see ValidHost", in: "exa%41mple", want: false},
		{desc: "non-ASCII", in: "caf\xc3\xa9", want: false},
	} {
		if got := ValidHost([]byte(r.in)); got != r.want {
			t.Errorf("%s: ValidHost(%q) = %v, want %v", r.desc, r.in, got, r.want)
		}
	}
}

func BenchmarkNormalize(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"plain", "/api/v1/users/12345/orders?limit=10&offset=20"},
		{"dirty", "/api/v1/./users/%31%32345/../12345//orders?limit=10&offset=20"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rest, dst := []byte(bc.in), make([]byte, 0, 256)
			b.SetBytes(int64(len(rest)))
			for b.Loop() {
				if _, _, err := Normalize(dst[:0], rest, Strict); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
