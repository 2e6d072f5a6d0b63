package ascii

import (
	"net/textproto"
	"strings"
	"testing"
)

// TestIsToken checks IsToken against the RFC 9110 grammar, byte by byte.
func TestIsToken(t *testing.T) {
	const special = "!#$%&'*+-.^_`|~"
	for c := 0; c < 256; c++ {
		b := byte(c)
		want := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || strings.IndexByte(special, b) >= 0
		if got := IsToken(string([]byte{b})); got != want {
			t.Errorf("IsToken(%q) = %v, want %v", b, got, want)
		}
		if got := IsTokenByte(b); got != want {
			t.Errorf("IsTokenByte(%q) = %v, want %v", b, got, want)
		}
	}
	for _, tc := range []struct {
		desc string
		in   string
		want bool
	}{
		{"empty", "", false},
		{"header name", "X-Forwarded-For", true},
		{"space", "X Forwarded", false},
		{"colon", "Host:", false},
		{"non-ASCII", "Caf\xc3\xa9", false},
	} {
		if got := IsToken(tc.in); got != tc.want {
			t.Errorf("%s: IsToken(%q) = %v", tc.desc, tc.in, got)
		}
		if got := IsToken([]byte(tc.in)); got != tc.want {
			t.Errorf("%s: IsToken([]byte(%q)) = %v", tc.desc, tc.in, got)
		}
	}
}

// TestLower: only the 26 capitals change, as textproto's folding of
// header names has it.
func TestLower(t *testing.T) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		want := b
		if 'A' <= b && b <= 'Z' {
			want = b + 32
		}
		if got := Lower(b); got != want {
			t.Errorf("Lower(%q) = %q, want %q", b, got, want)
		}
	}
	if got := textproto.CanonicalMIMEHeaderKey("x-a"); got != "X-A" {
		t.Fatalf("sanity: %q", got)
	}
}

func FuzzIsToken(f *testing.F) {
	f.Add("Content-Type")
	f.Add("a b")
	f.Fuzz(func(t *testing.T, s string) {
		if IsToken(s) != IsToken([]byte(s)) {
			t.Fatalf("string and bytes disagree on %q", s)
		}
		if IsToken(s) && strings.ContainsAny(s, " \t\r\n:\"(),/;<=>?@[\\]{}") {
			t.Fatalf("token %q holds a delimiter", s)
		}
	})
}

func TestEqualFold(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"X-Forwarded-For", "x-forwarded-for", true},
		{"", "", true},
		{"a", "", false},
		{"K", "\u212a"[:1], false}, // the Kelvin sign is not an ASCII K
		{"[", "{", false},          // 0x5b and 0x7b differ by 32 but are not letters
		{"@", "`", false},
	} {
		if got := EqualFold(tc.a, tc.b); got != tc.want {
			t.Errorf("EqualFold(%q, %q) = %v", tc.a, tc.b, got)
		}
		if got := EqualFold([]byte(tc.a), tc.b); got != tc.want {
			t.Errorf("EqualFold([]byte(%q), %q) = %v", tc.a, tc.b, got)
		}
	}
}
