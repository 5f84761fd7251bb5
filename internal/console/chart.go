package console

import (
	"fmt"
	"html/template"
	"sort"
	"strings"
	"time"
)

// chartColors are the lines' colours, one per group, then the dead letters'.
var chartColors = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

const (
	chartW, chartH = 720.0, 160.0
	chartPad       = 30.0
	chartMaxLines  = 6
)

// chart draws the ring as an inline SVG: lag in records per group (the six
// largest) and the dead letters in total, over the last span. Every value
// is a number or an escaped name, so the markup is safe to inline.
func chart(ring []point, span time.Duration) template.HTML {
	if len(ring) < 2 {
		return template.HTML(`<p class="muted">The chart starts after the second sample.</p>`)
	}
	// Until an hour of samples is in, the chart spans what there is.
	end := ring[len(ring)-1].at
	start := end.Add(-span)
	if first := ring[0].at; first.After(start) {
		start, span = first, end.Sub(first)
	}
	if span <= 0 {
		return template.HTML(`<p class="muted">The chart starts after the second sample.</p>`)
	}
	peak := map[string]int64{}
	var maxY int64 = 1
	for _, p := range ring {
		for g, v := range p.lag {
			peak[g] = max(peak[g], v)
			maxY = max(maxY, v)
		}
		maxY = max(maxY, int64(p.deadLetters))
	}
	groups := make([]string, 0, len(peak))
	for g := range peak {
		groups = append(groups, g)
	}
	sort.Slice(groups, func(i, j int) bool {
		if peak[groups[i]] != peak[groups[j]] {
			return peak[groups[i]] > peak[groups[j]]
		}
		return groups[i] < groups[j]
	})
	if len(groups) > chartMaxLines {
		groups = groups[:chartMaxLines]
	}
	x := func(t time.Time) float64 {
		return chartPad + (chartW-2*chartPad)*float64(t.Sub(start))/float64(span)
	}
	y := func(v int64) float64 { return chartH - chartPad - (chartH-2*chartPad)*float64(v)/float64(maxY) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="lag and dead letters, last %s">`, chartW, chartH, span)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" class="axis"/>`, chartPad, chartH-chartPad, chartW-chartPad, chartH-chartPad)
	fmt.Fprintf(&b, `<text x="2" y="%.0f" class="tick">%d</text><text x="2" y="%.0f" class="tick">0</text>`, chartPad, maxY, chartH-chartPad)
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="tick">-%s</text><text x="%.0f" y="%.0f" class="tick">now</text>`,
		chartPad, chartH-8, span.Round(time.Second), chartW-chartPad-20, chartH-8)
	line := func(color string, val func(point) (int64, bool)) {
		var pts []string
		for _, p := range ring {
			if v, ok := val(p); ok {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.at), y(v)))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, color, strings.Join(pts, " "))
	}
	legend := func(i int, color, name string) {
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" fill="%s" class="legend">%s</text>`, chartPad+10, 14+12*i, color, template.HTMLEscapeString(name))
	}
	for i, g := range groups {
		c := chartColors[i%len(chartColors)]
		line(c, func(p point) (int64, bool) { v, ok := p.lag[g]; return v, ok })
		legend(i, c, "lag "+g)
	}
	dc := "#d62728"
	line(dc, func(p point) (int64, bool) { return int64(p.deadLetters), true })
	legend(len(groups), dc, "dead letters")
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // #nosec: numbers and escaped names only
}
