package main

import (
	"fmt"
	"math"
	"strings"

	"github.com/lbd-lb/lbd/bench/internal/plot"
)

// tcpMetric is one row of the TCP table: a metric of one step.
type tcpMetric struct {
	id, step, metric string
	label, short     string
	format           func(*float64) string
	// target is the lbd/HAProxy target as shown, check the same as an
	// operator and a limit ("" for none).
	target, check string
	limit         float64
	// cpu: the row carries the proxy's CPU during the step's load.
	cpu bool
}

func tcpMetrics(r *run) []tcpMetric {
	idle := r.set("IDLE_CONNS")
	f := func(format string) func(*float64) string { return func(v *float64) string { return num(format, v) } }
	all := map[string][]tcpMetric{
		"bulk1": {{id: "bulk1", step: "bulk1", metric: "gbps", label: "bulk, iperf3 -P 1 (Gbit/s)", short: "bulk -P1", format: f("%.1f"), target: "≥ 1.0", check: ">=", limit: 1, cpu: true}},
		"bulk8": {{id: "bulk8", step: "bulk8", metric: "gbps", label: "bulk, iperf3 -P 8 (Gbit/s)", short: "bulk -P8", format: f("%.1f"), target: "≥ 1.0", check: ">=", limit: 1, cpu: true}},
		"conn":  {{id: "conn", step: "conn", metric: "rps", label: "connection rate, Connection: close, 32 conns (conn/s)", short: "conn/s", format: kilo, target: "≥ 1.0", check: ">=", limit: 1, cpu: true}},
		"rr": {
			{id: "rr_rps", step: "rr", metric: "rps", label: "request/response, keep-alive, 64 conns (req/s)", short: "rr req/s", format: kilo, target: "≥ 1.0", check: ">=", limit: 1, cpu: true},
			{id: "rr_p50", step: "rr", metric: "p50", label: "request/response p50 (ms)", short: "rr p50", format: f("%.3f"), target: "–"},
			{id: "rr_p99", step: "rr", metric: "p99", label: "request/response p99 (ms)", short: "rr p99", format: f("%.3f"), target: "≤ 1.0", check: "<=", limit: 1},
		},
		"idle": {
			{id: "idle", step: "idle", metric: "kib", label: "memory per idle connection, " + idle + " conns (KiB RSS)", short: "idle KiB/conn", format: f("%.2f"), target: "≤ 0.6", check: "<=", limit: 0.6},
			{id: "idlecpu", step: "idle", metric: "idlecpu", label: "CPU while holding " + idle + " idle conns (% of a core)", short: "idle CPU %", format: f("%.2f"), target: "–"},
		},
	}
	var out []tcpMetric
	for _, st := range r.list("steps") {
		out = append(out, all[st]...)
	}
	return out
}

func tcpReport(r *run) (string, error) {
	var b md
	cols := r.cols()
	metrics := tcpMetrics(r)
	pc, cc := r.get("proxy_cpu"), r.get("client_cpu")
	idle := r.set("IDLE_CONNS")
	b.line("# lbd TCP benchmarks")
	b.line("")
	b.line("Written by `bench/run.sh` (`make bench`) on %s.", r.get("date"))
	b.line("")
	b.line("%s", r.host())
	b.line("- Versions: HAProxy %s, nginx %s, lbd %s, wrk %s, iperf3 %s, %s",
		r.version("haproxy"), r.version("nginx"), r.lbdVersion(), r.version("wrk"), r.version("iperf3"), r.version("go"))
	b.line("- Each proxy runs alone on CPU %s (`taskset -c %s`), freshly started for every measurement; clients and backends run on CPU %s. All traffic is on 127.0.0.1.", pc, pc, cc)
	b.line("- Workloads: %s; systems in run order: %s; %s round(s) per cell, systems interleaved within each round; the table shows the median. iperf3 runs %s s, wrk %s s.",
		r.set("WORKLOADS"), r.get("systems_run"), r.get("rounds"), r.set("BULK_SECS"), r.set("WRK_SECS"))
	b.line("- Run-to-run spread on this kind of machine is 10–20%%: compare only within one run.")
	r.skipped(&b)
	b.line("")
	hdr, sep := "| workload |", "|---|"
	for _, s := range cols {
		hdr += " " + sysname(s) + " |"
		sep += "---:|"
	}
	b.line("%s nginx/HAProxy | lbd/HAProxy | lbd/nginx | target lbd/HAProxy |", hdr)
	b.line("%s---:|---:|---:|---|", sep)
	for _, m := range metrics {
		line := "| " + m.label + " |"
		for _, s := range cols {
			line += " " + m.format(r.med(m.step, s, m.metric)) + " |"
		}
		lbd, hap, ngx := r.med(m.step, "lbd", m.metric), r.med(m.step, "haproxy", m.metric), r.med(m.step, "nginx", m.metric)
		rh := ratio(lbd, hap)
		target := m.target
		if rh != "" && m.check != "" {
			target += " (" + met(rh, m.check, m.limit) + ")"
		}
		b.line("%s %s | %s | %s | %s |", line, orDash(ratio(ngx, hap)), orDash(rh), orDash(ratio(lbd, ngx)), target)
	}
	b.line("")
	b.line("Higher is better except for latency and memory. The memory row is the growth of the proxy's VmRSS (summed over its processes) while %s connections, each with one byte exchanged end to end, are held open, divided by %s; it has no direct row. The idle CPU row is the CPU the proxy used over %s s while holding them (its timers and housekeeping), in percent of one core.",
		idle, idle, r.set("IDLE_CPU_SECS"))
	b.line("")
	b.line("## Every round")
	b.line("")
	b.line("| workload | system | values, in round order | proxy CPU %% | others on CPU %s %% |", pc)
	b.line("|---|---|---|---|---|")
	for _, m := range metrics {
		for _, s := range cols {
			vals := r.rounds(m.step, s, m.metric)
			if len(vals) == 0 && s == "lbd" {
				continue
			}
			cpu, other := "–", "–"
			if m.cpu {
				cpu = orDash(strings.Join(r.rounds(m.step, s, "cpu"), " "))
				other = orDash(strings.Join(r.rounds(m.step, s, "other1"), " "))
			}
			b.line("| %s | %s | %s | %s | %s |", m.short, sysname(s), orDash(strings.Join(vals, " ")), cpu, other)
		}
	}
	b.line("")
	b.line("Proxy CPU %% is the proxy's user+system CPU time over the load's duration (100 = its whole core); the last column is the user+system time of every other process on the proxy's core, which should be near 0.")
	r.problems(&b)
	b.line("")
	b.line("## Commands")
	b.line("")
	b.line("```sh")
	b.line("# backends (CPU %s)", cc)
	r.backends(&b)
	if p := r.set("IDLE_PORT"); p != "" {
		b.line("# idle: bench/idleconns is the backend itself, listening on 127.0.0.1:%s", p)
	}
	b.line("# proxies (CPU %s), one fresh process per measurement", pc)
	r.proxies(&b, cols)
	b.line("# clients (CPU %s)", cc)
	r.clients(&b, r.list("steps"), cols, func(string) string { return "" })
	b.line("```")
	b.line("")
	b.line("## Configurations")
	if err := r.configs(&b, cols); err != nil {
		return "", err
	}
	return b.String(), nil
}

// tcpPlot draws each system's median as a ratio to HAProxy's, grouped by
// metric; nothing without HAProxy results.
func tcpPlot(r *run, path string) (bool, error) {
	metrics := tcpMetrics(r)
	var systems []string
	for _, s := range []string{"haproxy", "nginx", "lbd"} {
		for _, m := range metrics {
			if r.med(m.step, s, m.metric) != nil {
				systems = append(systems, s)
				break
			}
		}
	}
	var groups []plot.Group
	top := 1.0
	for _, m := range metrics {
		hap := r.med(m.step, "haproxy", m.metric)
		if hap == nil {
			continue
		}
		g := plot.Group{Label: m.short}
		for _, s := range systems {
			v := math.NaN()
			if q := ratioF(r.med(m.step, s, m.metric), hap); q != nil {
				v = math.Round(*q*100) / 100
				top = max(top, v)
			}
			g.Bars = append(g.Bars, plot.Bar{Value: v, Color: sysColor(s)})
		}
		groups = append(groups, g)
	}
	if len(groups) == 0 {
		return false, nil
	}
	yMax, step, tick := plot.Axis(top)
	c := plot.New(1100, 560)
	c.Chart(0, 0, 1100, 515, plot.Chart{
		Title: fmt.Sprintf("TCP proxies on one core, ratio to HAProxy in the same run (%s)\nhigher is better, except rr p50/p99 and idle KiB/conn", r.day()),
		YMax:  yMax, YStep: step, TickFormat: tick, ValueFormat: "%.2f",
		Groups: groups,
		Lines:  []plot.Line{{Value: 1, Color: plot.Black}},
	})
	keys := legend(systems)
	keys = append(keys, plot.Key{Name: "HAProxy = 1", Color: plot.Black, Line: true, Dashed: true})
	c.Legend(90, 530, keys)
	return true, c.WritePNG(path)
}
