package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/lbd-lb/lbd/bench/internal/plot"
)

func httpReport(r *run) (string, error) {
	var b md
	cols := r.cols()
	modes := r.list("steps")
	pc, cc := r.get("proxy_cpu"), r.get("client_cpu")
	alg := r.set("JWT_ALG")
	ports := strings.Fields(r.set("BACKENDS"))
	for len(ports) < 3 {
		ports = append(ports, "?")
	}
	b.line("# lbd HTTP benchmark: layer-7 proxying with keep-alive")
	b.line("")
	b.line("Written by `bench/run.sh http` (`bench/http.sh`, part of `make bench`) on %s.", r.get("date"))
	b.line("")
	b.line("%s", r.host())
	b.line("- Versions: HAProxy %s, nginx %s, lbd %s, wrk %s", r.version("haproxy"), r.version("nginx"), r.lbdVersion(), r.version("wrk"))
	b.line("- Backends: one nginx (`worker_processes 1`) listening on 127.0.0.1:%s, :%s and :%s, answering `ok` (2 bytes) to every request. `direct` is wrk against the first port alone; every proxy balances round-robin over the three ports with keep-alive to them (HAProxy `http-reuse always`, nginx `upstream keepalive 128`, lbd's pooled connections).", ports[0], ports[1], ports[2])
	b.line("- Client: wrk, keep-alive, %s connections, %s thread(s), %s s, `GET /`.", r.set("WRK_CONNS"), r.set("WRK_THREADS"), r.set("WRK_SECS"))
	b.line("- Each proxy runs alone on CPU %s (`taskset -c %s`; HAProxy `nbthread 1`, nginx `worker_processes 1`, lbd `workers = 1` with `GOMAXPROCS=1`), freshly started for every measurement; wrk and the backend share CPU %s.", pc, pc, cc)
	b.line("- Workloads: %s. `plain`: one catch-all route; HAProxy and nginx run bare, adding no forwarding header, while lbd always replaces the client's X-Forwarded-For and Forwarded and sets X-Forwarded-For, -Proto and -Host. `fwd`: the same route with HAProxy (`option forwardfor`, `del-header`, `set-header`) and nginx (`proxy_set_header`) set up to do that same work; before each fwd measurement every proxy is checked to deliver exactly `X-Forwarded-For: 127.0.0.1`, `X-Forwarded-Proto: http`, the client's Host and no Forwarded to the backend, for a client that sent forged ones (lbd serves fwd on its plain listener). `jwt`: the same route behind %s verification of a bearer token on every request (lbd `[[auth]]` with `%s`; HAProxy `jwt_verify` plus an `exp` check in `http-request` rules). Each proxy is first checked to answer 200, and for `jwt` 401 without a token and with a token signed by another key. nginx (open source) has no JWT verification and `direct` has no proxy, so neither runs `jwt`.",
		strings.Join(modes, " "), alg, r.set("LBD_KEY"))
	b.line("- Systems in run order: %s; %s round(s), systems interleaved within each round; the table shows the median.", r.get("systems_run"), r.get("rounds"))
	b.line("- Run-to-run spread on this kind of machine is 10–20%%: compare only within one run.")
	r.skipped(&b)
	b.line("")
	hdr, sep := "| workload | metric |", "|---|---|"
	for _, s := range cols {
		hdr += " " + sysname(s) + " |"
		sep += "---:|"
	}
	b.line("%s lbd/HAProxy | lbd/nginx |", hdr)
	b.line("%s---:|---:|", sep)
	for _, mode := range modes {
		for _, m := range []struct{ metric, label string }{{"rps", "requests/s"}, {"p50", "p50 latency (ms)"}, {"p99", "p99 latency (ms)"}} {
			line := fmt.Sprintf("| %s | %s |", mode, m.label)
			for _, s := range cols {
				var c string
				switch {
				case r.absent(mode, s) != "":
					c = r.absent(mode, s)
				case len(r.rounds(mode, s, "rps")) == 0:
					c = "–"
				case m.metric == "rps":
					c = kilo(r.med(mode, s, m.metric))
				default:
					c = num("%.3f", r.med(mode, s, m.metric))
				}
				line += " " + c + " |"
			}
			l := r.med(mode, "lbd", m.metric)
			line += fmt.Sprintf(" %s | %s |", orDash(ratio(l, r.med(mode, "haproxy", m.metric))), orDash(ratio(l, r.med(mode, "nginx", m.metric))))
			b.line("%s", line)
		}
	}
	b.line("")
	b.line("Higher is better for requests/s, lower for latency.")
	b.line("")
	b.line("## Targets")
	b.line("")
	b.line("| target | measured | |")
	b.line("|---|---|---|")
	vsHAProxy := func(mode string) string {
		return ratio(r.med(mode, "lbd", "rps"), r.med(mode, "haproxy", "rps"))
	}
	for _, t := range []struct{ mode, label string }{
		{"plain", "plain: lbd requests/s ≥ 0.8 × HAProxy's (1.0 × is the aim)"},
		{"fwd", "plain, every proxy setting the same forwarding headers (fwd): lbd requests/s ≥ 0.8 × HAProxy's"},
	} {
		if !slices.Contains(modes, t.mode) {
			continue
		}
		if rh := vsHAProxy(t.mode); rh != "" {
			aim := ""
			if met(rh, ">=", 1) == "met" {
				aim = ", aim met"
			}
			b.line("| %s | %s × | %s%s |", t.label, rh, met(rh, ">=", 0.8), aim)
		} else {
			b.line("| %s | – | not measured |", t.label)
		}
	}
	if slices.Contains(modes, "jwt") {
		if rh := vsHAProxy("jwt"); rh != "" {
			b.line("| with JWT: lbd requests/s ≥ HAProxy's with `jwt_verify` | %s × | %s |", rh, met(rh, ">=", 1))
		} else {
			b.line("| with JWT: lbd requests/s ≥ HAProxy's with `jwt_verify` | – | not measured |")
		}
		if alg != "RS256" {
			b.line("")
			b.line("The JWT target is for RS256 tokens; this run uses %s (JWT_ALG=%s).", alg, alg)
		}
	}
	b.line("")
	b.line("## Every round")
	b.line("")
	b.line("| workload | system | round | requests/s | p50 ms | p99 ms | proxy CPU %% | others on CPU %s %% | CPU %s busy %% |", pc, cc)
	b.line("|---|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, u := range r.units {
		if _, ok := r.value(u.step, u.system, u.round, "rps"); !ok {
			continue
		}
		b.line("| %s | %s | %d | %s | %s | %s | %s | %s | %s |", u.step, sysname(u.system), u.round,
			r.cell(u, "rps"), r.cell(u, "p50"), r.cell(u, "p99"), r.cell(u, "cpu"), r.cell(u, "other1"), r.cell(u, "busy0"))
	}
	b.line("")
	b.line("Proxy CPU %% is the proxy's user+system CPU time over the load's duration (100 = its whole core); \"others on CPU %s\" is that of every other process on the proxy's core, which should be near 0; CPU %s busy %% is everything on wrk's and the backend's core, softirq included (100 = saturated).", pc, cc)
	r.problems(&b)
	b.line("")
	b.line("## Commands")
	b.line("")
	b.line("```sh")
	if alg == "RS256" {
		b.line("# jwt-rsa.key: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048; jwks.json: its public key;")
		b.line("# jwt-token: RS256 over {\"sub\":\"bench\",\"aud\":\"bench\",\"exp\":<now + 1 day>}, signed with openssl dgst -sha256 -sign")
	} else {
		b.line("# jwt-secret: 32 random bytes as 64 hex characters; jwt-token: HS256 over")
		b.line("# {\"sub\":\"bench\",\"aud\":\"bench\",\"exp\":<now + 1 day>}, signed with openssl dgst -sha256 -hmac")
	}
	b.line("# backend (CPU %s)", cc)
	r.backends(&b)
	b.line("# proxies (CPU %s), one fresh process per measurement", pc)
	r.proxies(&b, cols)
	b.line("# client (CPU %s)", cc)
	r.clients(&b, modes, cols, func(mode string) string { return ", " + mode })
	b.line("```")
	b.line("")
	b.line("## Configurations")
	if alg == "HS256" {
		b.line("")
		b.line("The HAProxy configuration holds the HMAC secret, shown here as `<secret>`.")
	}
	if err := r.configs(&b, cols); err != nil {
		return "", err
	}
	return b.String(), nil
}

// httpPlot draws the median requests/s per workload and system, the
// rounds' spread as whiskers, grouped by workload.
func httpPlot(r *run, path string) (bool, error) {
	var groups []plot.Group
	var shown []string
	top := 0.0
	for _, mode := range r.list("steps") {
		g := plot.Group{Label: mode}
		for _, s := range systemOrder {
			vs := floats(r.rounds(mode, s, "rps"))
			if len(vs) == 0 {
				continue
			}
			if !slices.Contains(shown, s) {
				shown = append(shown, s)
			}
			lo, hi := minmax(vs)
			m := *median(vs)
			g.Bars = append(g.Bars, plot.Bar{Value: m / 1000, Color: sysColor(s), Lo: lo / 1000, Hi: hi / 1000, HasRange: true, Label: fmt.Sprintf("%.1fk", m/1000)})
			top = max(top, hi/1000)
		}
		if len(g.Bars) > 0 {
			groups = append(groups, g)
		}
	}
	if len(groups) == 0 {
		return false, nil
	}
	var legendOrder []string
	for _, s := range systemOrder {
		if slices.Contains(shown, s) {
			legendOrder = append(legendOrder, s)
		}
	}
	yMax, step, tick := plot.Axis(top)
	c := plot.New(900, 560)
	c.Chart(0, 0, 900, 515, plot.Chart{
		Title: fmt.Sprintf("HTTP keep-alive: wrk -c%s -> proxy on one core -> 3 nginx ports\n(%s) thousand requests/s, median of %s round(s),\nwhiskers: min-max; higher is better", r.set("WRK_CONNS"), r.day(), r.get("rounds")),
		YMax:  yMax, YStep: step, TickFormat: tick,
		Groups: groups,
	})
	c.Legend(90, 530, legend(legendOrder))
	return true, c.WritePNG(path)
}
