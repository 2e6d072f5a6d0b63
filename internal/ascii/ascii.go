// Package ascii holds the byte-level tests HTTP text needs, on strings and
// byte slices alike and without allocating: tokens (RFC 9110, section
// 5.6.2, the syntax of header names and methods) and case folding of ASCII
// letters, leaving every other byte as it is.
package ascii

// tchar marks the bytes a token may hold.
var tchar = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// IsTokenByte reports whether c may appear in a token.
func IsTokenByte(c byte) bool { return tchar[c] }

// IsToken reports whether s is a token: one or more token bytes.
func IsToken[T ~string | ~[]byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tchar[s[i]] {
			return false
		}
	}
	return true
}

// Lower returns c in lower case if it is an ASCII capital letter, and c
// otherwise.
func Lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// EqualFold reports whether a and b are equal ignoring the case of ASCII
// letters.
func EqualFold[A, B ~string | ~[]byte](a A, b B) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if Lower(a[i]) != Lower(b[i]) {
			return false
		}
	}
	return true
}
