package config

import (
	"testing"

	"github.com/BurntSushi/toml"
)

func TestPositions(t *testing.T) {
	tests := []struct {
		desc string
		src  string
		want map[string]int // path → line
	}{
		{
			desc: "arrays of tables are indexed",
			src: `[[listener]]
name = "a"
[[listener]]
name = "b"
[[pool]]
[[pool.backend]]
address = "x"
[[pool]]
[[pool.backend]]
[[pool.backend]]
address = "y"
[pool.health_check]
type = "http"
`,
			want: map[string]int{
				"listener": 1, "listener[0]": 1, "listener[0].name": 2, "listener[1]": 3, "listener[1].name": 4,
				"pool[0].backend[0].address": 7, "pool[1]": 8, "pool[1].backend[1]": 10,
				"pool[1].backend[1].address": 11, "pool[1].health_check": 12, "pool[1].health_check.type": 13,
			},
		},
		{
			desc: "strings that look like keys and headers",
			src: `a = """
[[listener]]
b = 1
"""
c = '''
x = 'y'
'''
d = "[[x]] \" e = 1"
f = 'g # h'
i = """ends with quotes"""""
j = 1
`,
			want: map[string]int{"a": 1, "c": 5, "d": 8, "f": 9, "i": 10, "j": 11, "listener": 0, "b": 0, "x": 0},
		},
		{
			desc: "inline tables and arrays",
			src: `[t]
arr = [
  1, # a comment
  [2, 3],
  { k = "v" },
]
inl = { a = 1, b = { c = 2 } }
multi = {
  m = 1,
}
after = true
`,
			want: map[string]int{"t": 1, "t.arr": 2, "t.arr[2]": 5, "t.arr[2].k": 5, "t.inl": 7, "t.inl.b.c": 7, "t.multi.m": 9, "t.after": 11},
		},
		{
			desc: "dotted and quoted keys",
			src: `[ "quoted table" . sub ]
"a.b" = 1
x.y.z = 2
'lit' = 3
  spaced . key = 4
`,
			want: map[string]int{`"quoted table".sub`: 1, `"quoted table".sub."a.b"`: 2, `"quoted table".sub.x`: 3, `"quoted table".sub.x.y.z`: 3, `"quoted table".sub.lit`: 4, `"quoted table".sub.spaced.key`: 5},
		},
		{
			desc: "CRLF line ends and dates",
			src:  "a = 1979-05-27 07:32:00Z\r\nb = 1979-05-27T00:32:00.999999-07:00 # c\r\n[t]\r\nd = 1\r\n",
			want: map[string]int{"a": 1, "b": 2, "t": 3, "t.d": 4},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			var tree map[string]any
			if _, err := toml.Decode(tt.src, &tree); err != nil {
				t.Fatalf("test input is not valid TOML: %v", err)
			}
			p := scanPositions([]byte(tt.src))
			for path, want := range tt.want {
				got, ok := p.lines[path]
				if want == 0 && ok {
					t.Errorf("%s recorded at line %d; it is inside a string", path, got)
				}
				if want != 0 && got != want {
					t.Errorf("line of %s = %d, want %d", path, got, want)
				}
			}
		})
	}
}

func TestPositionsLineFallsBackToParent(t *testing.T) {
	p := scanPositions([]byte("[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"x\"\n"))
	tests := []struct {
		path string
		want int
	}{
		{"pool[0].backend[0].address", 4},
		{"pool[0].backend[0].weight", 3}, // absent: its table
		{"pool[0].health_check.type", 1}, // absent, and so is its table
		{"listener[0].name", 0},
	}
	for _, tt := range tests {
		if got := p.line(tt.path); got != tt.want {
			t.Errorf("line(%s) = %d, want %d", tt.path, got, tt.want)
		}
	}
}

// checkPositionsCover fails when the scanner missed a key that the decoder
// saw in valid TOML, or saw it a different number of times.
func checkPositionsCover(t *testing.T, src []byte) {
	var tree map[string]any
	md, err := toml.Decode(string(src), &tree)
	if err != nil {
		return
	}
	p := scanPositions(src)
	want := map[string]int{}
	for _, k := range md.Keys() {
		want[k.String()]++
	}
	for k, n := range want {
		if got := len(p.byPlain[k]); got != n {
			t.Fatalf("key %s: scanner found %d occurrences, decoder %d\ninput:\n%s", k, got, n, numbered(string(src)))
		}
	}
}

func TestPositionsCoverTricky(t *testing.T) {
	docs := []string{
		`"" = 1`,
		"[a]\n[a.b]\nc = 1\n[[x]]\n[[x.y]]\n[x.y.z]\nw = 2\n[[x]]\n[[x.y]]\n",
		"a = '''x''''\nb = \"\"\"\\\"\"\"\"\"\"\nc = 1\n",
		"a = \"\"\"\\\n  continued\"\"\"\nb = 2\n",
		"n = [1_000, 0xff, 0o7, 0b1, +1, -2, inf, -nan, 1e10, 6.02e+23]\nd = 07:32:00\nt=true#c\n",
		"t = { a.b = 1, 'c' = { \"d\" = [ { e = 1 } ] } }\n",
		"a = [[1, 2], [\"]\", ']'], [{ x = \"}\" }]]\nb = 1\n",
		"[ x . \"y z\" ]\n'k' . \"l\" = 3\n",
	}
	for _, d := range docs {
		var tree map[string]any
		if _, err := toml.Decode(d, &tree); err != nil {
			t.Errorf("test input is not valid TOML: %v\n%s", err, d)
			continue
		}
		checkPositionsCover(t, []byte(d))
	}
}
