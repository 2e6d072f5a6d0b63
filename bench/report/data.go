package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// The input is a run directory written by bench/run.sh:
//
//	results.tsv   one measured value a line:
//	              workload  step  system  round  metric  value
//	meta.tsv      everything else a report shows, one item a line:
//	              workload  key  field...
//	              (workload "*" is every workload's)
//	<workload>/conf/<file>   the configurations named by "conf" lines
//
// Lines starting with "#" are comments. Values are kept as written, so the
// tables of every round show them as the workload printed them; medians and
// ratios parse them.

// run is what one workload of a run recorded.
type run struct {
	dir, workload string
	units         []unit // (step, system, round) in the order first measured
	vals          map[string]string
	meta          [][]string // key, fields... of this workload and of "*"
}

type unit struct {
	step, system string
	round        int
}

func vkey(step, system string, round int, metric string) string {
	return fmt.Sprintf("%s\x00%s\x00%d\x00%s", step, system, round, metric)
}

func readTSV(path string, fn func(fields []string, line int) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(strings.Split(line, "\t"), n); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
	return sc.Err()
}

// load reads what workload recorded in the run directory dir.
func load(dir, workload string) (*run, error) {
	r := &run{dir: dir, workload: workload, vals: map[string]string{}}
	seen := map[unit]bool{}
	err := readTSV(filepath.Join(dir, "results.tsv"), func(f []string, _ int) error {
		if len(f) != 6 {
			return fmt.Errorf("%d fields, want 6", len(f))
		}
		if f[0] != workload {
			return nil
		}
		round, err := strconv.Atoi(f[3])
		if err != nil {
			return fmt.Errorf("round %q", f[3])
		}
		u := unit{f[1], f[2], round}
		if !seen[u] {
			seen[u] = true
			r.units = append(r.units, u)
		}
		r.vals[vkey(f[1], f[2], round, f[4])] = f[5]
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	err = readTSV(filepath.Join(dir, "meta.tsv"), func(f []string, _ int) error {
		if len(f) < 2 {
			return fmt.Errorf("%d fields, want at least 2", len(f))
		}
		if f[0] == workload || f[0] == "*" {
			r.meta = append(r.meta, f[1:])
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if r.get("date") == "" {
		return nil, fmt.Errorf("%s: nothing recorded for %s", dir, workload)
	}
	return r, nil
}

// all is every meta line with key, without the key.
func (r *run) all(key string) [][]string {
	var out [][]string
	for _, m := range r.meta {
		if m[0] == key {
			out = append(out, m[1:])
		}
	}
	return out
}

// get is the first field of the last meta line with key, or "".
func (r *run) get(key string) string {
	a := r.all(key)
	if len(a) == 0 || len(a[len(a)-1]) == 0 {
		return ""
	}
	return a[len(a)-1][0]
}

// set is the value of a workload setting ("set NAME VALUE").
func (r *run) set(name string) string {
	v := ""
	for _, s := range r.all("set") {
		if len(s) >= 2 && s[0] == name {
			v = s[1]
		}
	}
	return v
}

func (r *run) setInt(name string) int {
	n, _ := strconv.Atoi(r.set(name))
	return n
}

// list is a meta line's first field split at spaces.
func (r *run) list(key string) []string { return strings.Fields(r.get(key)) }

func (r *run) version(tool string) string {
	v := "?"
	for _, s := range r.all("version") {
		if len(s) >= 2 && s[0] == tool && s[1] != "" {
			v = s[1]
		}
	}
	return v
}

func (r *run) value(step, system string, round int, metric string) (string, bool) {
	v, ok := r.vals[vkey(step, system, round, metric)]
	return v, ok
}

// cell is a value for a table of every round, "–" when there is none.
func (r *run) cell(u unit, metric string) string {
	if v, ok := r.value(u.step, u.system, u.round, metric); ok && v != "" {
		return v
	}
	return "–"
}

// rounds is the values of metric in step for system, in round order.
func (r *run) rounds(step, system, metric string) []string {
	var rs []int
	for _, u := range r.units {
		if u.step == step && u.system == system {
			if _, ok := r.value(step, system, u.round, metric); ok {
				rs = append(rs, u.round)
			}
		}
	}
	sort.Ints(rs)
	out := make([]string, len(rs))
	for i, n := range rs {
		out[i], _ = r.value(step, system, n, metric)
	}
	return out
}

func floats(vs []string) []float64 {
	var out []float64
	for _, v := range vs {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out = append(out, f)
		}
	}
	return out
}

// med is the median of metric over the rounds, or nil without any.
func (r *run) med(step, system, metric string) *float64 {
	return median(floats(r.rounds(step, system, metric)))
}

// sum is the sum of an integer metric over the rounds.
func (r *run) sum(step, system, metric string) int64 {
	var s int64
	for _, v := range floats(r.rounds(step, system, metric)) {
		s += int64(v)
	}
	return s
}

// median of vs, rounded to six significant digits, or nil if vs is empty.
func median(vs []float64) *float64 {
	if len(vs) == 0 {
		return nil
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	m, _ = strconv.ParseFloat(strconv.FormatFloat(m, 'g', 6, 64), 64)
	return &m
}

// minmax of vs.
func minmax(vs []float64) (lo, hi float64) {
	return slices.Min(vs), slices.Max(vs)
}

// ratio a/b with two decimals, "" when either is missing or b is 0.
func ratio(a, b *float64) string {
	if a == nil || b == nil || *b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", *a / *b)
}

func ratioF(a, b *float64) *float64 {
	if a == nil || b == nil || *b == 0 {
		return nil
	}
	v := *a / *b
	return &v
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// num formats v, "–" when it is missing.
func num(format string, v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf(format, *v)
}

// kilo formats v in thousands, "12.3k".
func kilo(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.1fk", *v/1000)
}

// met says whether v op limit holds, v as shown in the report (a ratio
// that shows as 1.00 meets "≥ 1").
func met(shown string, op string, limit float64) string {
	v, _ := strconv.ParseFloat(shown, 64)
	ok := v <= limit
	if op == ">=" {
		ok = v >= limit
	}
	if ok {
		return "met"
	}
	return "**not met**"
}

var systemOrder = []string{"direct", "haproxy", "nginx", "lbd"}

func sysname(s string) string {
	switch s {
	case "haproxy":
		return "HAProxy"
	default:
		return s
	}
}

// cols is the systems with a column in the tables: those measured, lbd
// when it was skipped (so that its absence shows) and those the workload
// lists as absent from all of it (HAProxy, which has no UDP).
func (r *run) cols() []string {
	in := map[string]bool{}
	for _, s := range r.list("systems_run") {
		in[s] = true
	}
	if r.get("lbd_skip") != "" {
		in["lbd"] = true
	}
	for _, a := range r.all("absent") {
		if len(a) >= 2 && a[0] == "*" {
			in[a[1]] = true
		}
	}
	var out []string
	for _, s := range systemOrder {
		if in[s] {
			out = append(out, s)
		}
	}
	return out
}

// absent is why system was not run in step ("*" for every step), or "".
func (r *run) absent(step, system string) string {
	for _, a := range r.all("absent") {
		if len(a) >= 3 && (a[0] == step || a[0] == "*") && a[1] == system {
			return a[2]
		}
	}
	return ""
}

// clean makes text from the run fit for the report: secrets masked and
// the run's directories dropped from paths, the longest first.
func (r *run) clean(s string) string {
	for _, m := range r.all("mask") {
		if len(m) >= 2 && m[0] != "" {
			s = strings.ReplaceAll(s, m[0], m[1])
		}
	}
	var strip []string
	for _, p := range r.all("strip") {
		if len(p) >= 1 && p[0] != "" {
			strip = append(strip, p[0])
		}
	}
	sort.Slice(strip, func(i, j int) bool { return len(strip[i]) > len(strip[j]) })
	for _, p := range strip {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}

// md collects a report's Markdown.
type md struct{ strings.Builder }

func (b *md) line(format string, a ...any) {
	fmt.Fprintf(b, format, a...)
	b.WriteByte('\n')
}

// host is the "- Host:" bullet.
func (r *run) host() string { return "- Host: " + r.get("host") }

// lbdVersion is lbd's version, or "not built".
func (r *run) lbdVersion() string {
	if v := r.version("lbd"); v != "?" {
		return v
	}
	if r.get("lbd_built") == "0" {
		return "not built"
	}
	return "?"
}

// skipped is the bullet saying why lbd was skipped, if it was.
func (r *run) skipped(b *md) {
	if why := r.get("lbd_skip"); why != "" {
		b.line("- **lbd was skipped:** %s.", r.clean(why))
	}
}

// problems is the section listing the warnings of the run.
func (r *run) problems(b *md) {
	notes := r.all("note")
	if len(notes) == 0 {
		return
	}
	b.line("")
	b.line("## Problems during the run")
	b.line("")
	for _, n := range notes {
		b.line("- %s", r.clean(strings.Join(n, " ")))
	}
}

// proxies writes the command starting each proxy with a column.
func (r *run) proxies(b *md, cols []string) {
	for _, s := range cols {
		for _, p := range r.all("proxy") {
			if len(p) >= 2 && p[0] == s {
				b.line("%s   # %s", r.clean(p[1]), sysname(s))
			}
		}
	}
}

// clients writes the client command of each step and system, with what
// suffix returns after the system's name.
func (r *run) clients(b *md, steps, cols []string, suffix func(step string) string) {
	for _, st := range steps {
		for _, s := range cols {
			for _, c := range r.all("client") {
				if len(c) >= 3 && c[0] == st && c[1] == s {
					b.line("%s   # %s%s", r.clean(c[2]), sysname(s), suffix(st))
				}
			}
		}
	}
}

// backends is the backend commands, in the order started.
func (r *run) backends(b *md) {
	for _, c := range r.all("backend") {
		if len(c) >= 2 {
			b.line("%s", r.clean(c[1]))
		}
	}
}

// configs writes every configuration the run lists for a system with a
// column ("*": always), in the order listed.
func (r *run) configs(b *md, cols []string) error {
	for _, c := range r.all("conf") {
		if len(c) < 2 || (c[0] != "*" && !slices.Contains(cols, c[0])) {
			continue
		}
		text, err := os.ReadFile(filepath.Join(r.dir, r.workload, "conf", c[1]))
		if err != nil {
			return err
		}
		b.line("")
		b.line("`%s`:", c[1])
		b.line("")
		b.line("```")
		b.WriteString(r.clean(strings.TrimRight(string(text), "\n")))
		b.line("")
		b.line("```")
	}
	return nil
}

// day is the date of the run without the time.
func (r *run) day() string { return strings.Fields(r.get("date") + " ?")[0] }
