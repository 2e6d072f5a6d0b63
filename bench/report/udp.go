package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/lbd-lb/lbd/bench/internal/plot"
)

// udpRow is one row of the UDP table: a median (or a sum, for lost
// queries) of one pass's metric.
type udpRow struct {
	step, metric, label string
	lost                bool // a sum of lost queries, without ratios
}

func udpRows(r *run) []udpRow {
	latQPS, capPct := r.set("LAT_QPS"), r.set("CAP_PCT")
	q := ""
	if l := r.set("QPS_LIMIT"); l != "" {
		q = " -Q " + l
	}
	rows := []udpRow{
		{"qps", "qps", fmt.Sprintf("queries/s, dnsperf -c %s -q %s%s, %s s", r.set("DNS_CLIENTS"), r.set("DNS_OUTSTANDING"), q, r.set("DNS_SECS")), false},
		{"qps", "lost", "queries lost in that pass, all rounds", true},
		{"qps", "avg", "average latency in that pass (ms)", false},
	}
	if r.setInt("LAT_QPS") > 0 {
		rows = append(rows,
			udpRow{"lat", "p50", "p50 latency at " + latQPS + " queries/s (ms)", false},
			udpRow{"lat", "p99", "p99 latency at " + latQPS + " queries/s (ms)", false},
			udpRow{"lat", "p999", "p99.9 latency at " + latQPS + " queries/s (ms)", false},
			udpRow{"lat", "lost", "queries lost at " + latQPS + " queries/s, all rounds", true})
	}
	if r.setInt("CAP_PCT") > 0 {
		rows = append(rows,
			udpRow{"cap", "qps", "queries/s, the proxy held to " + capPct + "% of a core (capped pass)", false},
			udpRow{"cap", "lost", "queries lost in the capped pass, all rounds", true})
	}
	return rows
}

func (u udpRow) format(v *float64) string {
	switch {
	case u.lost:
		return num("%.0f", v)
	case u.metric == "qps":
		return kilo(v)
	}
	return num("%.3f", v)
}

func udpReport(r *run) (string, error) {
	var b md
	cols := r.cols()
	pc, cc := r.get("proxy_cpu"), r.get("client_cpu")
	latQPS, capPct := r.set("LAT_QPS"), r.set("CAP_PCT")
	capped := r.setInt("CAP_PCT") > 0
	zone, names := r.set("ZONE"), r.set("NAMES")
	b.line("# lbd UDP benchmark: DNS through the proxy")
	b.line("")
	b.line("Written by `bench/run.sh udp` (`bench/udp.sh`, part of `make bench`) on %s.", r.get("date"))
	b.line("")
	b.line("%s", r.host())
	b.line("- Versions: nginx %s, lbd %s, dnsperf %s, dnsmasq %s", r.version("nginx"), r.lbdVersion(), r.version("dnsperf"), r.version("dnsmasq"))
	b.line("- Backend: dnsmasq on 127.0.0.1:%s, answering every name under `%s` with %s itself (`--address`); no resolv.conf, no hosts file, no upstream server, so nothing leaves 127.0.0.1. Client: dnsperf, A queries for h1..h%s.%s in turn.",
		r.set("DNS_PORT"), zone, r.set("ANSWER"), names, zone)
	b.line("- Each proxy runs alone on CPU %s (`taskset -c %s`), freshly started for every round; dnsperf and dnsmasq share CPU %s. HAProxy's open-source edition has no UDP.", pc, pc, cc)
	b.line("- Systems in run order: %s; %s round(s), systems interleaved within each round; the table shows the median (lost queries: the sum).", r.get("systems_run"), r.get("rounds"))
	lat := ": skipped (LAT_QPS=0)."
	if r.setInt("LAT_QPS") > 0 {
		lat = fmt.Sprintf(": dnsperf held at %s queries/s for %s s with `-v`, percentiles over every answered query.", latQPS, r.set("LAT_SECS"))
	}
	b.line("- Throughput pass: dnsperf as fast as it goes for %s s. Latency pass%s", r.set("DNS_SECS"), lat)
	b.line("- Run-to-run spread on this kind of machine is 10–20%%: compare only within one run.")
	r.skipped(&b)
	b.line("")
	hdr, sep := "| metric |", "|---|"
	for _, s := range cols {
		hdr += " " + sysname(s) + " |"
		sep += "---:|"
	}
	b.line("%s nginx/direct | lbd/nginx | lbd/direct |", hdr)
	b.line("%s---:|---:|---:|", sep)
	val := func(u udpRow, s string) *float64 {
		if u.lost {
			v := float64(r.sum(u.step, s, u.metric))
			return &v
		}
		return r.med(u.step, s, u.metric)
	}
	for _, u := range udpRows(r) {
		line := "| " + u.label + " |"
		for _, s := range cols {
			switch {
			case r.absent(u.step, s) != "":
				line += " " + r.absent(u.step, s) + " |"
			case len(r.rounds("qps", s, "qps")) == 0:
				line += " – |"
			default:
				line += " " + u.format(val(u, s)) + " |"
			}
		}
		if u.lost {
			line += " | | |"
		} else {
			d, n, l := val(u, "direct"), val(u, "nginx"), val(u, "lbd")
			line += fmt.Sprintf(" %s | %s | %s |", orDash(ratio(n, d)), orDash(ratio(l, n)), orDash(ratio(l, d)))
		}
		b.line("%s", line)
	}
	b.line("")
	capNote := ""
	if capped {
		capNote = fmt.Sprintf(" In the capped pass each proxy runs under a cgroup CPU quota of %s%% of one core (10 ms periods); CPU %s then has room to spare, so that pass compares the proxies' own work per unit of CPU.", capPct, cc)
	}
	b.line("Higher is better for queries/s, lower for the rest. Through a proxy dnsperf and dnsmasq keep CPU %s and the proxy adds CPU %s; the direct path has CPU %s alone, so in the throughput pass no proxy can beat the direct figure, and CPU %s, not the proxy, may be what stops it.%s",
		cc, pc, cc, cc, capNote)
	b.line("")
	b.line("## Targets")
	b.line("")
	b.line("| target | measured | |")
	b.line("|---|---|---|")
	if len(r.rounds("qps", "lbd", "qps")) == 0 {
		why := "lbd not measured"
		if s := r.get("lbd_skip"); s != "" {
			why += ": " + r.clean(s)
		}
		b.line("| lbd queries/s ≥ 2 × nginx | – | %s |", why)
		b.line("| lbd queries/s ≥ 0.8 × direct | – | not measured |")
		b.line("| no queries lost through lbd | – | not measured |")
	} else {
		ql, qn, qd := r.med("qps", "lbd", "qps"), r.med("qps", "nginx", "qps"), r.med("qps", "direct", "qps")
		rn, rd := ratio(ql, qn), ratio(ql, qd)
		target := func(shown string, limit float64, missing string) string {
			if shown == "" {
				return missing
			}
			return met(shown, ">=", limit)
		}
		b.line("| lbd queries/s ≥ 2 × nginx | %s × | %s |", orDash(rn), target(rn, 2, "nginx not measured"))
		b.line("| lbd queries/s ≥ 0.8 × direct | %s × | %s |", orDash(rd), target(rd, 0.8, "direct not measured"))
		if capped {
			rc := ratio(r.med("cap", "lbd", "qps"), r.med("cap", "nginx", "qps"))
			b.line("| lbd queries/s ≥ 2 × nginx, both held to %s%% of a core (capped pass) | %s × | %s |", capPct, orDash(rc), target(rc, 2, "not measured"))
		}
		var lost, sent int64
		for _, st := range []string{"qps", "lat", "cap"} {
			lost += r.sum(st, "lbd", "lost")
			sent += r.sum(st, "lbd", "sent")
		}
		b.line("| no queries lost through lbd | %d of %d lost | %s |", lost, sent, met(strconv.FormatInt(lost, 10), "<=", 0))
	}
	b.line("")
	b.line("## Every round")
	b.line("")
	b.line("Throughput pass:")
	b.line("")
	b.line("| system | round | queries/s | lost / sent | average ms | stddev ms | proxy CPU %% | others on CPU %s %% | others on CPU %s %% | CPU %s busy %% |", pc, cc, cc)
	b.line("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	r.udpRounds(&b, "qps", "qps", "lost/sent", "avg", "sd", "cpu", "other1", "other0", "busy0")
	if r.setInt("LAT_QPS") > 0 {
		b.line("")
		b.line("Latency pass, %s queries/s asked for:", latQPS)
		b.line("")
		b.line("| system | round | answered/s | p50 ms | p99 ms | p99.9 ms | lost / sent | proxy CPU %% | others on CPU %s %% | others on CPU %s %% | CPU %s busy %% |", pc, cc, cc)
		b.line("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		r.udpRounds(&b, "lat", "answered", "p50", "p99", "p999", "lost/sent", "cpu", "other1", "other0", "busy0")
	}
	if capped {
		b.line("")
		b.line("Capped pass, each proxy held to %s%% of one core:", capPct)
		b.line("")
		b.line("| system | round | queries/s | lost / sent | proxy CPU %% | others on CPU %s %% | CPU %s busy %% |", pc, cc)
		b.line("|---|---:|---:|---:|---:|---:|---:|")
		r.udpRounds(&b, "cap", "qps", "lost/sent", "cpu", "other1", "busy0")
	}
	b.line("")
	b.line("Proxy CPU %% is the proxy's user+system CPU time over the load's duration (100 = its whole core); \"others on CPU %s\" is the user+system time of every other process on the proxy's core and \"others on CPU %s\" that of every process but dnsperf and dnsmasq on theirs, both of which should be near 0; CPU %s busy %% is everything on CPU %s, softirq included (100 = saturated).", pc, cc, cc, cc)
	r.problems(&b)
	b.line("")
	b.line("## Commands")
	b.line("")
	b.line("```sh")
	b.line("# queries.txt: %s lines, \"h1.%s A\" .. \"h%s.%s A\"", names, zone, names, zone)
	b.line("# backend (CPU %s)", cc)
	r.backends(&b)
	b.line("# proxies (CPU %s), one fresh process per round", pc)
	r.proxies(&b, cols)
	b.line("# clients (CPU %s)", cc)
	r.clients(&b, []string{"qps", "lat", "cap"}, cols, func(step string) string {
		switch step {
		case "qps":
			return ", throughput"
		case "lat":
			return ", latency"
		}
		return fmt.Sprintf(", capped at %s%% (cgroup %s cpu quota)", capPct, r.set("CAP_KIND"))
	})
	b.line("```")
	b.line("")
	b.line("## Configurations")
	if err := r.configs(&b, cols); err != nil {
		return "", err
	}
	return b.String(), nil
}

// udpRounds writes a row for every measurement of step that has the first
// of metrics: the system, the round, then a cell for each metric
// ("lost/sent": both in one cell).
func (r *run) udpRounds(b *md, step string, metrics ...string) {
	for _, u := range r.units {
		if u.step != step {
			continue
		}
		if _, ok := r.value(u.step, u.system, u.round, metrics[0]); !ok {
			continue
		}
		cells := []string{sysname(u.system), strconv.Itoa(u.round)}
		for _, m := range metrics {
			if m == "lost/sent" {
				cells = append(cells, r.cell(u, "lost")+" / "+r.cell(u, "sent"))
			} else {
				cells = append(cells, r.cell(u, m))
			}
		}
		b.line("| %s |", strings.Join(cells, " | "))
	}
}

// udpPlot draws the median queries/s of the throughput pass per system,
// the rounds' spread as whiskers and the two throughput targets as dashed
// lines.
func udpPlot(r *run, path string) (bool, error) {
	var groups []plot.Group
	top := 0.0
	for _, s := range []string{"direct", "nginx", "lbd"} {
		vs := floats(r.rounds("qps", s, "qps"))
		if len(vs) == 0 {
			if s == "lbd" && r.get("lbd_skip") != "" {
				groups = append(groups, plot.Group{Label: "lbd", Bars: []plot.Bar{{Value: math.NaN(), Color: sysColor(s), Label: "not measured"}}})
			}
			continue
		}
		lo, hi := minmax(vs)
		m := *median(vs)
		groups = append(groups, plot.Group{Label: sysname(s), Bars: []plot.Bar{{
			Value: m / 1000, Color: sysColor(s), Lo: lo / 1000, Hi: hi / 1000, HasRange: true,
			Label: fmt.Sprintf("%.1fk", m/1000),
		}}})
		top = max(top, hi/1000)
	}
	if len(groups) == 0 {
		return false, nil
	}
	var lines []plot.Line
	var keys []plot.Key
	target := func(name string, v float64, s string) {
		lines = append(lines, plot.Line{Value: v, Color: sysColor(s)})
		keys = append(keys, plot.Key{Name: fmt.Sprintf("%s (%.1fk)", name, v), Color: sysColor(s), Line: true, Dashed: true})
		top = max(top, v)
	}
	if d := r.med("qps", "direct", "qps"); d != nil {
		target("target for lbd: 0.8 x direct", 0.8**d/1000, "direct")
	}
	if n := r.med("qps", "nginx", "qps"); n != nil {
		target("target for lbd: 2 x nginx", 2**n/1000, "nginx")
	}
	yMax, step, tick := plot.Axis(top)
	c := plot.New(800, 580)
	c.Chart(0, 0, 800, 515, plot.Chart{
		Title: fmt.Sprintf("DNS over UDP: dnsperf -> dnsmasq, proxy on one core\n(%s) thousand queries/s, median of %s round(s),\nwhiskers: min-max; higher is better", r.day(), r.get("rounds")),
		YMax:  yMax, YStep: step, TickFormat: tick,
		Groups: groups,
		Lines:  lines,
	})
	for i, k := range keys { // one a line: they are long
		c.Legend(90, 525+25*i, []plot.Key{k})
	}
	return true, c.WritePNG(path)
}
