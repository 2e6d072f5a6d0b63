// Command report turns the raw results of a bench/run.sh run into the
// Markdown tables and PNG plots of bench/results: tcp.md and tcp.png,
// udp.md and udp.png, http.md and http.png. bench/run.sh runs it after
// each workload:
//
//	go run ./bench/report -in bench/work/<timestamp> -out bench/results tcp udp http
//
// The input format is described in data.go; each workload's tables and plot
// are in its own file (tcp.go, udp.go, http.go).
package main

import (
	"flag"
	"fmt"
	"image/color"
	"log"
	"os"
	"path/filepath"

	"github.com/lbd-lb/lbd/bench/internal/plot"
)

type workload struct {
	markdown func(*run) (string, error)
	// plot draws path; false when there is nothing to draw.
	plot func(r *run, path string) (bool, error)
}

var workloads = map[string]workload{
	"tcp":  {tcpReport, tcpPlot},
	"udp":  {udpReport, udpPlot},
	"http": {httpReport, httpPlot},
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("report: ")
	in := flag.String("in", "", "the run directory (bench/work/<timestamp>)")
	out := flag.String("out", "bench/results", "where <workload>.md and <workload>.png go")
	noPlot := flag.Bool("no-plot", false, "write the Markdown only")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: report -in DIR [-out DIR] [-no-plot] tcp|udp|http...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *in == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	for _, w := range flag.Args() {
		if err := write(*in, *out, w, !*noPlot); err != nil {
			log.Fatalf("%s: %v", w, err)
		}
	}
}

// write makes the report of workload w from the run in dir.
func write(in, out, w string, withPlot bool) error {
	wl, ok := workloads[w]
	if !ok {
		return fmt.Errorf("unknown workload (expected tcp, udp or http)")
	}
	r, err := load(in, w)
	if err != nil {
		return err
	}
	text, err := wl.markdown(r)
	if err != nil {
		return err
	}
	md := filepath.Join(out, w+".md")
	if err := os.WriteFile(md, []byte(text), 0o644); err != nil {
		return err
	}
	log.Printf("table: %s", md)
	if !withPlot {
		return nil
	}
	png := filepath.Join(out, w+".png")
	drawn, err := wl.plot(r, png)
	if err != nil {
		return err
	}
	if drawn {
		log.Printf("plot: %s", png)
	} else {
		log.Printf("nothing to plot for %s", w)
	}
	return nil
}

// sysColor is a system's colour in every plot.
func sysColor(system string) color.RGBA {
	switch system {
	case "direct":
		return color.RGBA{0x4d, 0x4d, 0x4d, 255}
	case "haproxy":
		return color.RGBA{0xd9, 0x5f, 0x02, 255}
	case "nginx":
		return color.RGBA{0x2c, 0xa2, 0x5f, 255}
	case "lbd":
		return color.RGBA{0x2b, 0x6c, 0xb0, 255}
	}
	return plot.Black
}

func legend(systems []string) []plot.Key {
	var keys []plot.Key
	for _, s := range systems {
		keys = append(keys, plot.Key{Name: sysname(s), Color: sysColor(s)})
	}
	return keys
}
