// Package plot draws the benchmarks' bar charts as PNG images with the
// standard library alone: filled rectangles and a 5×7 bitmap font of
// upper-case letters, digits and a little punctuation (text is drawn upper
// case; a few typographic characters are replaced by ASCII ones).
package plot

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strings"
)

// Colours shared by the charts.
var (
	White = color.RGBA{255, 255, 255, 255}
	Black = color.RGBA{0, 0, 0, 255}
	Grey  = color.RGBA{215, 215, 215, 255}
)

// Canvas is an image to draw on.
type Canvas struct{ img *image.RGBA }

// New returns a white canvas of w × h pixels.
func New(w, h int) *Canvas {
	c := &Canvas{image.NewRGBA(image.Rect(0, 0, w, h))}
	c.Rect(0, 0, w, h, White)
	return c
}

// Image is what has been drawn.
func (c *Canvas) Image() *image.RGBA { return c.img }

// Rect fills the rectangle from x0, y0 (inclusive) to x1, y1 (exclusive).
func (c *Canvas) Rect(x0, y0, x1, y1 int, col color.RGBA) {
	r := image.Rect(x0, y0, x1, y1).Intersect(c.img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c.img.SetRGBA(x, y, col)
		}
	}
}

// DashedLine draws a horizontal dashed line 3 pixels thick centred on y.
func (c *Canvas) DashedLine(x0, x1, y int, col color.RGBA) {
	for x := x0; x < x1; x += 16 {
		c.Rect(x, y-1, min(x+10, x1), y+2, col)
	}
}

const glyphW, glyphH = 5, 7

// ascii replaces the characters the font lacks by ASCII ones.
var ascii = strings.NewReplacer("×", "x", "–", "-", "—", "-", "→", "->", "≥", ">=", "≤", "<=")

// Text draws s (upper-cased) with its top-left corner at x, y, each font
// pixel scale × scale screen pixels.
func (c *Canvas) Text(x, y int, s string, scale int, col color.RGBA) {
	for _, r := range strings.ToUpper(ascii.Replace(s)) {
		if g, ok := font[r]; ok {
			for row, line := range g {
				for colx, px := range line {
					if px == '#' {
						c.Rect(x+colx*scale, y+row*scale, x+(colx+1)*scale, y+(row+1)*scale, col)
					}
				}
			}
		}
		x += (glyphW + 1) * scale
	}
}

// TextWidth is the width in pixels of s drawn at scale.
func TextWidth(s string, scale int) int {
	return len([]rune(ascii.Replace(s)))*(glyphW+1)*scale - scale
}

// Centered draws s centred on cx with its top at y.
func (c *Canvas) Centered(cx, y int, s string, scale int, col color.RGBA) {
	c.Text(cx-TextWidth(s, scale)/2, y, s, scale, col)
}

// Bar is one bar of a chart.
type Bar struct {
	// Value is the bar's height; NaN leaves its place empty, with Label
	// (if any) written at its foot.
	Value float64
	Color color.RGBA
	// Label replaces the value written above the bar.
	Label string
	// Mark, if HasMark, is a reference value drawn as a black line across
	// the bar.
	Mark    float64
	HasMark bool
	// Lo and Hi, if HasRange, are drawn as a whisker (the spread of the
	// rounds).
	Lo, Hi   float64
	HasRange bool
}

// Group is a set of bars side by side under one label.
type Group struct {
	Label string
	Bars  []Bar
}

// Line is a dashed horizontal reference line across the chart.
type Line struct {
	Value float64
	Color color.RGBA
}

// Chart is a grouped bar chart.
type Chart struct {
	// Title is written above the chart; "\n" starts another line.
	Title string
	// The y axis goes from 0 to YMax with a grid line every YStep,
	// labelled in TickFormat; each bar's value is written above it in
	// ValueFormat.
	YMax, YStep             float64
	TickFormat, ValueFormat string
	Groups                  []Group
	Lines                   []Line
}

// Chart draws ch in the box x0, y0, w, h.
func (c *Canvas) Chart(x0, y0, w, h int, ch Chart) {
	titles := strings.Split(ch.Title, "\n")
	for i, t := range titles {
		c.Centered(x0+w/2, y0+8+20*i, t, 2, Black)
	}
	left, right, top, bottom := x0+70, x0+w-20, y0+50+20*(len(titles)-1), y0+h-45
	yMax := ch.YMax
	ypix := func(v float64) int { return bottom - int(math.Round(float64(bottom-top)*min(v, yMax)/yMax)) }
	for v := 0.0; v <= yMax+1e-9; v += ch.YStep {
		y := ypix(v)
		c.Rect(left, y, right, y+1, Grey)
		lbl := fmt.Sprintf(ch.TickFormat, v)
		c.Text(left-10-TextWidth(lbl, 2), y-7, lbl, 2, Black)
	}
	c.Rect(left, top, left+2, bottom+1, Black)
	c.Rect(left, bottom, right, bottom+2, Black)
	if len(ch.Groups) > 0 {
		gw := (right - left) / len(ch.Groups)
		for gi, g := range ch.Groups {
			gx := left + gi*gw
			c.bars(gx, gw, bottom, ypix, ch.ValueFormat, g.Bars)
			c.Centered(gx+gw/2, bottom+12, g.Label, 2, Black)
		}
	}
	for _, l := range ch.Lines {
		c.DashedLine(left+2, right, ypix(l.Value), l.Color)
	}
}

func (c *Canvas) bars(gx, gw, bottom int, ypix func(float64) int, valueFormat string, bars []Bar) {
	if len(bars) == 0 {
		return
	}
	bw := min(40, (gw-20)/len(bars))
	bx := gx + (gw-bw*len(bars))/2
	for bi, b := range bars {
		x := bx + bi*bw
		if math.IsNaN(b.Value) {
			if b.Label != "" {
				c.Centered(x+bw/2, bottom-20, b.Label, 1, b.Color)
			}
			continue
		}
		c.Rect(x+2, ypix(b.Value), x+bw-2, bottom, b.Color)
		above := b.Value
		if b.HasRange {
			lo, hi := ypix(b.Lo), ypix(b.Hi)
			c.Rect(x+bw/2-1, hi, x+bw/2+1, lo+1, Black)
			c.Rect(x+bw/2-6, hi, x+bw/2+6, hi+2, Black)
			c.Rect(x+bw/2-6, lo-1, x+bw/2+6, lo+1, Black)
			above = max(above, b.Hi)
		}
		lbl := b.Label
		if lbl == "" {
			lbl = fmt.Sprintf(valueFormat, b.Value)
		}
		scale := 2
		if TextWidth(lbl, 2) > bw+4 {
			scale = 1
		}
		c.Centered(x+bw/2, ypix(above)-8*scale-2, lbl, scale, Black)
		if b.HasMark {
			y := ypix(b.Mark)
			c.Rect(x-2, y-1, x+bw+2, y+2, Black)
		}
	}
}

// Key is one entry of a legend: a filled box, or with Line a line of the
// colour (dashed with Dashed).
type Key struct {
	Name   string
	Color  color.RGBA
	Line   bool
	Dashed bool
}

// Legend writes keys in a row starting at x, y and returns where it ended.
func (c *Canvas) Legend(x, y int, keys []Key) int {
	for _, k := range keys {
		if k.Line {
			if k.Dashed {
				c.DashedLine(x, x+26, y+7, k.Color)
			} else {
				c.Rect(x, y+6, x+24, y+9, k.Color)
			}
			c.Text(x+32, y, k.Name, 2, Black)
			x += 32 + TextWidth(k.Name, 2) + 40
			continue
		}
		c.Rect(x, y, x+20, y+14, k.Color)
		c.Text(x+28, y, k.Name, 2, Black)
		x += 28 + TextWidth(k.Name, 2) + 40
	}
	return x
}

// Axis picks a y axis for values up to top: a maximum a little above it
// and a step of 1, 2 or 5 times a power of ten giving four to ten grid
// lines, with a tick format showing as many decimals as the step needs.
func Axis(top float64) (yMax, step float64, tickFormat string) {
	if !(top > 0) || math.IsInf(top, 0) {
		return 1, 0.2, "%.1f"
	}
	raw := top * 1.15 / 6
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	step = 10 * pow
	for _, m := range []float64{1, 2, 5} {
		if m*pow >= raw {
			step = m * pow
			break
		}
	}
	yMax = math.Ceil(top*1.15/step) * step
	decimals := max(0, int(-math.Floor(math.Log10(step)+1e-9)))
	return yMax, step, fmt.Sprintf("%%.%df", decimals)
}

// WritePNG writes the canvas to path.
func (c *Canvas) WritePNG(path string) error {
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
	' ':  {".....", ".....", ".....", ".....", ".....", ".....", "....."},
	'A':  {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'B':  {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."},
	'C':  {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."},
	'D':  {"####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."},
	'E':  {"#####", "#....", "#....", "####.", "#....", "#....", "#####"},
	'F':  {"#####", "#....", "#....", "####.", "#....", "#....", "#...."},
	'G':  {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"},
	'H':  {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'I':  {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'J':  {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."},
	'K':  {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"},
	'L':  {"#....", "#....", "#....", "#....", "#....", "#....", "#####"},
	'M':  {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"},
	'N':  {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"},
	'O':  {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'P':  {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."},
	'Q':  {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"},
	'R':  {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"},
	'S':  {".####", "#....", "#....", ".###.", "....#", "....#", "####."},
	'T':  {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."},
	'U':  {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'V':  {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."},
	'W':  {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."},
	'X':  {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"},
	'Y':  {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."},
	'Z':  {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"},
	'0':  {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."},
	'1':  {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'2':  {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"},
	'3':  {"####.", "....#", "....#", ".###.", "....#", "....#", "####."},
	'4':  {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."},
	'5':  {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."},
	'6':  {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."},
	'7':  {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."},
	'8':  {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."},
	'9':  {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."},
	'%':  {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"},
	'.':  {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."},
	',':  {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."},
	'-':  {".....", ".....", ".....", "#####", ".....", ".....", "....."},
	'=':  {".....", ".....", "#####", ".....", "#####", ".....", "....."},
	'(':  {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."},
	')':  {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."},
	'/':  {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."},
	':':  {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."},
	'>':  {"#....", ".#...", "..#..", "...#.", "..#..", ".#...", "#...."},
	'<':  {"....#", "...#.", "..#..", ".#...", "..#..", "...#.", "....#"},
	'+':  {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."},
	';':  {".....", ".##..", ".##..", ".....", ".##..", "..#..", ".#..."},
	'_':  {".....", ".....", ".....", ".....", ".....", ".....", "#####"},
	'\'': {"..#..", "..#..", ".#...", ".....", ".....", ".....", "....."},
}
