package main

import (
	"fmt"
	"image/color"
	"math"

	"github.com/lbd-lb/lbd/bench/internal/plot"
)

var colors = []color.RGBA{
	{31, 119, 180, 255}, // Maglev
	{255, 127, 14, 255}, // Karger
	{44, 160, 44, 255},  // rendezvous
}

func writePlot(path string, res *results) error {
	const W, H = 1600, 640
	c := plot.New(W, H)

	// Left: overprovisioning per method and size, with the paper's figures
	// marked.
	var bal []plot.Group
	top := 0.0
	for _, m := range res.sizes {
		g := plot.Group{Label: fmt.Sprintf("M=%d", m)}
		for i, prefix := range []string{"Maglev", "Karger", "Rendezvous"} {
			r := res.find(prefix, m)
			if r == nil {
				continue
			}
			b := plot.Bar{Value: r.setMean(), Color: colors[i]}
			if m == 65537 && prefix == "Karger" {
				b.Mark, b.HasMark = paperKarger, true
			}
			if m == 65537 && prefix == "Rendezvous" {
				b.Mark, b.HasMark = paperRendezvous, true
			}
			top = max(top, b.Value)
			if b.HasMark {
				top = max(top, b.Mark)
			}
			g.Bars = append(g.Bars, b)
		}
		bal = append(bal, g)
	}
	c.Chart(0, 0, 640, H-70, plot.Chart{
		Title: fmt.Sprintf("overprovisioning, N=%d, mean of %d sets", res.n, res.sets),
		YMax:  math.Ceil(top/10) * 10, YStep: 10, TickFormat: "%.0f%%", ValueFormat: "%.1f%%",
		Groups: bal,
	})

	// Right: disruption per failure count and size, the ideal marked.
	var dis []plot.Group
	top = 0
	for _, m := range res.sizes {
		for fi, f := range res.fails {
			g := plot.Group{Label: fmt.Sprintf("%d/%d", f, m)}
			for i, prefix := range []string{"Maglev", "Karger", "Rendezvous"} {
				r := res.find(prefix, m)
				if r == nil {
					continue
				}
				g.Bars = append(g.Bars, plot.Bar{Value: 100 * r.moved[fi], Color: colors[i], Mark: 100 * r.ideal[fi], HasMark: true})
				top = max(top, 100*r.moved[fi])
			}
			dis = append(dis, g)
		}
	}
	c.Chart(640, 0, W-640, H-70, plot.Chart{
		Title: "keys moved when backends fail (failed/M)",
		YMax:  math.Ceil(top/2) * 2, YStep: 2, TickFormat: "%.0f%%", ValueFormat: "%.1f%%",
		Groups: dis,
	})

	c.Legend(90, H-45, []plot.Key{
		{Name: "Maglev", Color: colors[0]},
		{Name: fmt.Sprintf("Karger ring, %d vnodes", res.vnodes), Color: colors[1]},
		{Name: "Rendezvous", Color: colors[2]},
		{Name: "paper (left), ideal (right)", Color: plot.Black, Line: true},
	})
	return c.WritePNG(path)
}
