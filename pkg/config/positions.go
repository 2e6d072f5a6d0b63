package config

import (
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// The TOML decoder knows where each key was written but does not export it,
// and it keys what it knows by dotted name without array indices, so the
// second [[listener]]'s name would overwrite the first's. positions
// re-scans the source, which the decoder has already accepted as valid TOML,
// and records the line of every key under a path that includes array
// indices, such as "pool[1].backend[0].address".
//
// The scanner never fails: on input it does not understand it stops
// recording, and lookups fall back to the nearest recorded parent or to 0.

// positions maps key paths to the lines where the keys are written.
type positions struct {
	// lines is indexed by path with array indices; it also holds the
	// implicit parents of dotted keys, so a lookup of the table a dotted key
	// creates finds the line of its first key.
	lines map[string]int
	// byPlain holds, for each dotted key as toml.Key.String() prints it, the
	// lines where it occurs, in document order: the order of MetaData.Keys.
	byPlain map[string][]int
}

// line returns the line of the key at path, or of its nearest recorded
// parent, or 0.
func (p *positions) line(path string) int {
	for path != "" {
		if n, ok := p.lines[path]; ok {
			return n
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// nextPlain returns the line of the next occurrence of the plain dotted key
// k. Called once per occurrence in document order, it walks the occurrences
// in the same order as MetaData.Keys lists them.
func (p *positions) nextPlain(k string) int {
	ls := p.byPlain[k]
	if len(ls) == 0 {
		return 0
	}
	p.byPlain[k] = ls[1:]
	return ls[0]
}

// scanPositions records the line of every key, table header and
// array-of-tables element in src.
func scanPositions(src []byte) *positions {
	s := &scanner{
		src:    src,
		line:   1,
		arrays: map[string]int{},
		pos:    &positions{lines: map[string]int{}, byPlain: map[string][]int{}},
	}
	s.document()
	return s.pos
}

// scanner is a TOML lexer just good enough to find keys: it skips values
// without interpreting them.
type scanner struct {
	src  []byte
	i    int
	line int
	bad  bool // set on anything unexpected; recording stops

	// table and plainTable describe the table that key/value lines belong
	// to, with and without array indices.
	table      string
	plainTable []string
	// arrays counts the elements of each array of tables seen so far,
	// keyed by its indexed path.
	arrays map[string]int

	pos *positions
}

func (s *scanner) eof() bool { return s.bad || s.i >= len(s.src) }

func (s *scanner) peek() byte {
	if s.eof() {
		return 0
	}
	return s.src[s.i]
}

func (s *scanner) peekAt(off int) byte {
	if s.bad || s.i+off >= len(s.src) {
		return 0
	}
	return s.src[s.i+off]
}

func (s *scanner) advance() {
	if s.eof() {
		return
	}
	if s.src[s.i] == '\n' {
		s.line++
	}
	s.i++
}

func (s *scanner) hasPrefix(p string) bool {
	return !s.bad && strings.HasPrefix(string(s.src[s.i:min(len(s.src), s.i+len(p))]), p)
}

// skipSpace skips blanks, and newlines and comments too when nl is set.
func (s *scanner) skipSpace(nl bool) {
	for !s.eof() {
		switch c := s.peek(); {
		case c == ' ' || c == '\t':
			s.advance()
		case nl && (c == '\n' || c == '\r'):
			s.advance()
		case nl && c == '#':
			for !s.eof() && s.peek() != '\n' {
				s.advance()
			}
		default:
			return
		}
	}
}

func (s *scanner) record(indexed string, plain []string, line int) {
	s.pos.lines[indexed] = line
	k := toml.Key(plain).String()
	s.pos.byPlain[k] = append(s.pos.byPlain[k], line)
}

// recordParents records the implicit tables that a dotted key creates,
// unless they are already known.
func (s *scanner) recordParents(base string, segs []string, line int) {
	p := base
	for _, seg := range segs[:len(segs)-1] {
		p = joinPath(p, seg)
		if _, ok := s.pos.lines[p]; !ok {
			s.pos.lines[p] = line
		}
	}
}

func (s *scanner) document() {
	for {
		s.skipSpace(true)
		if s.eof() {
			return
		}
		if s.peek() == '[' {
			s.header()
		} else {
			s.keyValue(s.table, s.plainTable)
		}
		// The rest of the line can only be blanks and a comment.
		s.skipSpace(false)
		if c := s.peek(); c == '#' || c == '\r' || c == '\n' || s.eof() {
			continue
		}
		s.bad = true
	}
}

// header reads "[a.b]" or "[[a.b]]" and makes it the current table.
func (s *scanner) header() {
	line := s.line
	array := s.peekAt(1) == '['
	s.advance()
	if array {
		s.advance()
	}
	s.skipSpace(false)
	segs := s.key()
	s.skipSpace(false)
	if s.eof() || len(segs) == 0 || s.peek() != ']' || (array && s.peekAt(1) != ']') {
		s.bad = true
		return
	}
	s.advance()
	if array {
		s.advance()
	}

	path := ""
	for n, seg := range segs {
		path = joinPath(path, seg)
		count, isArray := s.arrays[path]
		switch {
		case array && n == len(segs)-1:
			if _, ok := s.pos.lines[path]; !ok {
				s.pos.lines[path] = line // the array starts with its first element
			}
			s.arrays[path] = count + 1
			path += "[" + strconv.Itoa(count) + "]"
		case isArray:
			path += "[" + strconv.Itoa(count-1) + "]"
		}
	}
	s.record(path, segs, line)
	s.table = path
	s.plainTable = segs
}

// keyValue reads "key = value" in the table at base.
func (s *scanner) keyValue(base string, plainBase []string) {
	line := s.line
	segs := s.key()
	if len(segs) == 0 {
		s.bad = true
		return
	}
	s.skipSpace(false)
	if s.peek() != '=' {
		s.bad = true
		return
	}
	s.advance()
	s.skipSpace(false)

	plain := append(append([]string(nil), plainBase...), segs...)
	path := base
	for _, seg := range segs {
		path = joinPath(path, seg)
	}
	s.recordParents(base, segs, line)
	s.record(path, plain, line)
	s.value(path, plain)
}

// key reads a dotted key of bare and quoted parts.
func (s *scanner) key() []string {
	var segs []string
	for {
		s.skipSpace(false)
		seg, ok := s.keyPart()
		if !ok {
			s.bad = true
			return nil
		}
		segs = append(segs, seg)
		s.skipSpace(false)
		if s.peek() != '.' {
			return segs
		}
		s.advance()
	}
}

func (s *scanner) keyPart() (string, bool) {
	switch c := s.peek(); {
	case c == '"':
		start := s.i
		s.basicString()
		if s.bad {
			return "", false
		}
		raw := string(s.src[start:s.i])
		if u, err := strconv.Unquote(raw); err == nil {
			return u, true
		}
		// An escape that TOML knows and Go does not (\e): the exact key
		// text only matters for line lookups, so keep it as written.
		return raw[1 : len(raw)-1], true
	case c == '\'':
		start := s.i
		s.literalString()
		if s.bad {
			return "", false
		}
		return string(s.src[start+1 : s.i-1]), true
	case isBareKeyByte(c):
		start := s.i
		for !s.eof() && isBareKeyByte(s.peek()) {
			s.advance()
		}
		return string(s.src[start:s.i]), true
	}
	return "", false
}

func isBareKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// value skips one value. Inline tables and arrays are entered so that the
// keys inside them are recorded too.
func (s *scanner) value(path string, plain []string) {
	switch {
	case s.hasPrefix(`"""`):
		s.multiLineString(`"""`, true)
	case s.hasPrefix(`'''`):
		s.multiLineString(`'''`, false)
	case s.peek() == '"':
		s.basicString()
	case s.peek() == '\'':
		s.literalString()
	case s.peek() == '[':
		s.array(path, plain)
	case s.peek() == '{':
		s.inlineTable(path, plain)
	default:
		// Numbers, booleans and dates (which may hold one space).
		start := s.i
		for !s.eof() {
			c := s.peek()
			if c == ',' || c == ']' || c == '}' || c == '#' || c == '\n' || c == '\r' {
				break
			}
			s.advance()
		}
		if s.i == start {
			s.bad = true
		}
	}
}

func (s *scanner) basicString() {
	s.advance() // opening quote
	for !s.eof() {
		switch s.peek() {
		case '\\':
			s.advance()
			s.advance()
		case '"':
			s.advance()
			return
		case '\n':
			s.bad = true
			return
		default:
			s.advance()
		}
	}
	s.bad = true
}

func (s *scanner) literalString() {
	s.advance()
	for !s.eof() {
		switch s.peek() {
		case '\'':
			s.advance()
			return
		case '\n':
			s.bad = true
			return
		default:
			s.advance()
		}
	}
	s.bad = true
}

func (s *scanner) multiLineString(delim string, escapes bool) {
	for range 3 {
		s.advance()
	}
	for !s.eof() {
		switch {
		case escapes && s.peek() == '\\':
			s.advance()
			s.advance()
		case s.hasPrefix(delim):
			for range 3 {
				s.advance()
			}
			// Up to two quotes may end the content right before the
			// closing delimiter: """a""""" is the string `a""`.
			for n := 0; n < 2 && s.peek() == delim[0]; n++ {
				s.advance()
			}
			return
		default:
			s.advance()
		}
	}
	s.bad = true
}

// array skips an array. Inline tables in it are recorded as its elements,
// path[0], path[1], and so on: an array of tables written inline.
func (s *scanner) array(path string, plain []string) {
	s.advance()
	for n := 0; ; n++ {
		s.skipSpace(true)
		if s.eof() {
			s.bad = true
			return
		}
		if s.peek() == ']' {
			s.advance()
			return
		}
		elem := path + "[" + strconv.Itoa(n) + "]"
		s.pos.lines[elem] = s.line
		s.value(elem, plain)
		s.skipSpace(true)
		switch s.peek() {
		case ',':
			s.advance()
		case ']':
			s.advance()
			return
		default:
			s.bad = true
			return
		}
	}
}

// inlineTable reads "{ k = v, ... }", newlines included (TOML 1.1).
func (s *scanner) inlineTable(path string, plain []string) {
	s.advance()
	for {
		s.skipSpace(true)
		if s.eof() {
			s.bad = true
			return
		}
		if s.peek() == '}' {
			s.advance()
			return
		}
		s.keyValue(path, plain)
		s.skipSpace(true)
		switch s.peek() {
		case ',':
			s.advance()
		case '}':
			s.advance()
			return
		default:
			s.bad = true
			return
		}
	}
}

// joinPath appends one key to a path, quoting it as TOML would when it is
// not a bare key, so that "a.b" as one quoted key stays distinct from a.b.
func joinPath(base, key string) string {
	seg := toml.Key{key}.String()
	if base == "" {
		return seg
	}
	return base + "." + seg
}
