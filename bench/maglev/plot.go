package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strings"
)

// The plot is drawn with the standard library alone: filled rectangles and
// a 5×7 bitmap font of the characters the labels use.

var (
	white  = color.RGBA{255, 255, 255, 255}
	black  = color.RGBA{0, 0, 0, 255}
	grey   = color.RGBA{215, 215, 215, 255}
	colors = []color.RGBA{
		{31, 119, 180, 255}, // Maglev
		{255, 127, 14, 255}, // Karger
		{44, 160, 44, 255},  // rendezvous
	}
)

type canvas struct{ img *image.RGBA }

func (c *canvas) rect(x0, y0, x1, y1 int, col color.RGBA) {
	r := image.Rect(x0, y0, x1, y1).Intersect(c.img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c.img.SetRGBA(x, y, col)
		}
	}
}

const glyphW, glyphH = 5, 7

// text draws s (upper-cased) with its top-left corner at x, y.
func (c *canvas) text(x, y int, s string, scale int, col color.RGBA) {
	for _, r := range strings.ToUpper(s) {
		if g, ok := font[r]; ok {
			for row, line := range g {
				for colx, px := range line {
					if px == '#' {
						c.rect(x+colx*scale, y+row*scale, x+(colx+1)*scale, y+(row+1)*scale, col)
					}
				}
			}
		}
		x += (glyphW + 1) * scale
	}
}

func textWidth(s string, scale int) int { return len([]rune(s))*(glyphW+1)*scale - scale }

func (c *canvas) centered(cx, y int, s string, scale int, col color.RGBA) {
	c.text(cx-textWidth(s, scale)/2, y, s, scale, col)
}

type bar struct {
	value float64
	color color.RGBA
	// tick marks a reference value on the bar (the paper's figure, the
	// ideal disruption); NaN for none
	tick float64
}

type group struct {
	label string
	bars  []bar
}

// chart draws a grouped bar chart in the box x0, y0, w, h, with a y axis
// from 0 to yMax in steps of yStep labelled in tickFormat, and each bar's
// value written above it in valueFormat.
func (c *canvas) chart(x0, y0, w, h int, title string, yMax, yStep float64, tickFormat, valueFormat string, groups []group) {
	c.centered(x0+w/2, y0+8, title, 2, black)
	left, right, top, bottom := x0+70, x0+w-20, y0+50, y0+h-45
	ypix := func(v float64) int { return bottom - int(math.Round(float64(bottom-top)*min(v, yMax)/yMax)) }
	for v := 0.0; v <= yMax+1e-9; v += yStep {
		y := ypix(v)
		c.rect(left, y, right, y+1, grey)
		lbl := fmt.Sprintf(tickFormat, v)
		c.text(left-10-textWidth(lbl, 2), y-7, lbl, 2, black)
	}
	c.rect(left, top, left+2, bottom+1, black)
	c.rect(left, bottom, right, bottom+2, black)
	gw := (right - left) / len(groups)
	for gi, g := range groups {
		gx := left + gi*gw
		bw := min(40, (gw-20)/len(g.bars))
		bx := gx + (gw-bw*len(g.bars))/2
		for bi, b := range g.bars {
			x := bx + bi*bw
			c.rect(x+2, ypix(b.value), x+bw-2, bottom, b.color)
			lbl := fmt.Sprintf(valueFormat, b.value)
			scale := 2
			if textWidth(lbl, 2) > bw+4 {
				scale = 1
			}
			c.centered(x+bw/2, ypix(b.value)-8*scale-2, lbl, scale, black)
			if !math.IsNaN(b.tick) {
				y := ypix(b.tick)
				c.rect(x-2, y-1, x+bw+2, y+2, black)
			}
		}
		c.centered(gx+gw/2, bottom+12, g.label, 2, black)
	}
}

func writePlot(path string, res *results) error {
	const W, H = 1600, 640
	c := &canvas{image.NewRGBA(image.Rect(0, 0, W, H))}
	c.rect(0, 0, W, H, white)
	nan := math.NaN()

	// Left: overprovisioning per method and size.
	var bal []group
	top := 0.0
	for _, m := range res.sizes {
		g := group{label: fmt.Sprintf("M=%d", m)}
		for i, prefix := range []string{"Maglev", "Karger", "Rendezvous"} {
			r := res.find(prefix, m)
			if r == nil {
				continue
			}
			b := bar{value: r.setMean(), color: colors[i], tick: nan}
			if m == 65537 && prefix == "Karger" {
				b.tick = paperKarger
			}
			if m == 65537 && prefix == "Rendezvous" {
				b.tick = paperRendezvous
			}
			top = max(top, b.value)
			if !math.IsNaN(b.tick) {
				top = max(top, b.tick)
			}
			g.bars = append(g.bars, b)
		}
		bal = append(bal, g)
	}
	c.chart(0, 0, 640, H-70, fmt.Sprintf("overprovisioning, N=%d, mean of %d sets", res.n, res.sets), math.Ceil(top/10)*10, 10, "%.0f%%", "%.1f%%", bal)

	// Right: disruption per failure count and size.
	var dis []group
	top = 0
	for _, m := range res.sizes {
		for fi, f := range res.fails {
			g := group{label: fmt.Sprintf("%d/%d", f, m)}
			for i, prefix := range []string{"Maglev", "Karger", "Rendezvous"} {
				r := res.find(prefix, m)
				if r == nil {
					continue
				}
				g.bars = append(g.bars, bar{value: 100 * r.moved[fi], color: colors[i], tick: 100 * r.ideal[fi]})
				top = max(top, 100*r.moved[fi])
			}
			dis = append(dis, g)
		}
	}
	c.chart(640, 0, W-640, H-70, "keys moved when backends fail (failed/M)", math.Ceil(top/2)*2, 2, "%.0f%%", "%.1f%%", dis)

	// Legend.
	x, y := 90, H-45
	for i, name := range []string{"Maglev", fmt.Sprintf("Karger ring, %d vnodes", res.vnodes), "Rendezvous"} {
		c.rect(x, y, x+20, y+14, colors[i])
		c.text(x+28, y, name, 2, black)
		x += 28 + textWidth(name, 2) + 40
	}
	c.rect(x, y+6, x+24, y+9, black)
	c.text(x+32, y, "paper (left), ideal (right)", 2, black)

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, c.img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// font holds 5×7 glyphs, '#' for ink.
var font = map[rune][glyphH]string{
	' ': {".....", ".....", ".....", ".....", ".....", ".....", "....."},
	'A': {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'B': {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."},
	'C': {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."},
	'D': {"####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."},
	'E': {"#####", "#....", "#....", "####.", "#....", "#....", "#####"},
	'F': {"#####", "#....", "#....", "####.", "#....", "#....", "#...."},
	'G': {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"},
	'H': {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'I': {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'J': {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."},
	'K': {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"},
	'L': {"#....", "#....", "#....", "#....", "#....", "#....", "#####"},
	'M': {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"},
	'N': {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"},
	'O': {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'P': {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."},
	'Q': {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"},
	'R': {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"},
	'S': {".####", "#....", "#....", ".###.", "....#", "....#", "####."},
	'T': {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."},
	'U': {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'V': {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."},
	'W': {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."},
	'X': {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"},
	'Y': {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."},
	'Z': {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"},
	'0': {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."},
	'1': {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'2': {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"},
	'3': {"####.", "....#", "....#", ".###.", "....#", "....#", "####."},
	'4': {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."},
	'5': {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."},
	'6': {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."},
	'7': {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."},
	'8': {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."},
	'9': {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."},
	'%': {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"},
	'.': {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."},
	',': {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."},
	'-': {".....", ".....", ".....", "#####", ".....", ".....", "....."},
	'=': {".....", ".....", "#####", ".....", "#####", ".....", "....."},
	'(': {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."},
	')': {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."},
	'/': {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."},
	':': {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."},
}
