package main

import (
	"flag"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden Markdown in testdata")

// Each directory under testdata is a case: run/ is a run directory as
// bench/run.sh writes it (results.tsv, meta.tsv, <workload>/conf/), and
// <workload>.md is the report expected from it, for each workload with one.
func TestGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*/run")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no cases in testdata: %v", err)
	}
	for _, in := range cases {
		dir := filepath.Dir(in)
		golden, _ := filepath.Glob(filepath.Join(dir, "*.md"))
		if len(golden) == 0 {
			t.Fatalf("%s: no golden .md", dir)
		}
		for _, g := range golden {
			w := strings.TrimSuffix(filepath.Base(g), ".md")
			t.Run(filepath.Base(dir)+"/"+w, func(t *testing.T) {
				out := t.TempDir()
				if err := write(in, out, w, true); err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(filepath.Join(out, w+".md"))
				if err != nil {
					t.Fatal(err)
				}
				if *update {
					if err := os.WriteFile(g, got, 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(g)
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != string(want) {
					t.Errorf("%s differs from %s (go test ./bench/report -update rewrites it):\n%s", w+".md", g, diff(string(want), string(got)))
				}
				if f, err := os.Open(filepath.Join(out, w+".png")); err == nil {
					defer f.Close()
					if _, err := png.Decode(f); err != nil {
						t.Errorf("%s.png: %v", w, err)
					}
				}
			})
		}
	}
}

// diff shows the first lines that differ.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 5; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n- %s\n+ %s\n", i+1, wl, gl)
			shown++
		}
	}
	return b.String()
}

func TestMedianAndRatio(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m == nil || *m != 2 {
		t.Errorf("median of 3 values: %v", m)
	}
	if m := median([]float64{38748, 38749}); m == nil || *m != 38748.5 {
		t.Errorf("median of 2 values: %v", m)
	}
	if m := median([]float64{1.0000001, 1.0000003}); m == nil || *m != 1 {
		t.Errorf("median is not rounded to six digits: %v", *m)
	}
	if median(nil) != nil {
		t.Error("median of nothing")
	}
	a, b, zero := 3.0, 2.0, 0.0
	if got := ratio(&a, &b); got != "1.50" {
		t.Errorf("ratio %q", got)
	}
	if ratio(&a, &zero) != "" || ratio(nil, &b) != "" {
		t.Error("ratio without a figure")
	}
	if met("1.00", ">=", 1) != "met" || met("0.99", ">=", 1) != "**not met**" || met("0", "<=", 0) != "met" {
		t.Error("met")
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "meta.tsv"), []byte("tcp\tdate\t2026-01-01 00:00 UTC\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "results.tsv"), []byte("tcp\tbulk1\tlbd\tone\tgbps\t1\n"), 0o644)
	if _, err := load(dir, "tcp"); err == nil || !strings.Contains(err.Error(), "round") {
		t.Errorf("a bad round: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "results.tsv"), []byte("tcp\tbulk1\tlbd\t1\tgbps\n"), 0o644)
	if _, err := load(dir, "tcp"); err == nil {
		t.Error("a short line loads")
	}
	if _, err := load(dir, "udp"); err == nil {
		t.Error("a workload with nothing recorded loads")
	}
}
