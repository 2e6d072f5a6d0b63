package plot

import (
	"image/color"
	"math"
	"path/filepath"
	"testing"
)

func TestAxis(t *testing.T) {
	cases := []struct {
		top        float64
		yMax, step float64
		format     string
	}{
		{1.89, 2.5, 0.5, "%.1f"},
		{72.45, 100, 20, "%.0f"},
		{0, 1, 0.2, "%.1f"},
		{math.NaN(), 1, 0.2, "%.1f"},
		{0.05, 0.06, 0.01, "%.2f"},
	}
	for _, c := range cases {
		yMax, step, f := Axis(c.top)
		if math.Abs(yMax-c.yMax) > 1e-9 || math.Abs(step-c.step) > 1e-9 || f != c.format {
			t.Errorf("Axis(%v) = %v, %v, %q; want %v, %v, %q", c.top, yMax, step, f, c.yMax, c.step, c.format)
		}
	}
}

// A chart with every kind of bar draws without trouble and inks its bars.
func TestChart(t *testing.T) {
	blue := color.RGBA{43, 108, 176, 255}
	c := New(400, 300)
	c.Chart(0, 0, 400, 260, Chart{
		Title: "two\nlines", YMax: 10, YStep: 2, TickFormat: "%.0f", ValueFormat: "%.1fk",
		Groups: []Group{
			{Label: "a", Bars: []Bar{{Value: 5, Color: blue, Lo: 4, Hi: 6, HasRange: true}, {Value: 12, Color: blue, Mark: 3, HasMark: true}}},
			{Label: "b", Bars: []Bar{{Value: math.NaN(), Color: blue, Label: "not measured"}}},
		},
		Lines: []Line{{Value: 8, Color: Black}},
	})
	c.Legend(10, 280, []Key{{Name: "x", Color: blue}, {Name: "target → 2×", Color: Black, Line: true, Dashed: true}})
	inked := 0
	b := c.Image().Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if c.Image().RGBAAt(x, y) == blue {
				inked++
			}
		}
	}
	if inked < 1000 {
		t.Fatalf("only %d pixels of the bars' colour", inked)
	}
	if err := c.WritePNG(filepath.Join(t.TempDir(), "c.png")); err != nil {
		t.Fatal(err)
	}
}
