package comparebench

import (
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Result is one run: one workload on one system.
type Result struct {
	Round    int    `json:"round"`
	Workload string `json:"workload"`
	System   string `json:"system"`
	// OfferedRate is a steady workload's events per second offered; 0 for a backlog.
	OfferedRate int `json:"offered_rate,omitempty"`
	// Events were committed; Distinct of them reached a read_committed
	// consumer (a run fails unless all did), in Seen records.
	Events     int `json:"events"`
	Seen       int `json:"seen"`
	Distinct   int `json:"distinct"`
	Duplicates int `json:"duplicates"`
	// WriteSeconds is how long the backlog took to commit.
	WriteSeconds float64 `json:"write_seconds,omitempty"`
	// StartupSeconds is a backlog's time from the system's start to the
	// consumer's first event.
	StartupSeconds float64 `json:"startup_seconds,omitempty"`
	// Seconds is a backlog's time from the first event seen to the last, or
	// how long a steady workload's writers took to commit what they offered
	// (longer than asked when they fell behind); EventsPerSec is Events
	// over it: for a steady workload the rate reached.
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	// CPUMicrosPerEvent is the system's CPU over the run (its start-up
	// included) per event; BrokerCPUMicrosPerEvent the broker's, 0 when
	// its process is unknown.
	CPUMicrosPerEvent       float64 `json:"cpu_us_per_event"`
	BrokerCPUMicrosPerEvent float64 `json:"broker_cpu_us_per_event"`
	// PeakRSSMB is the system's peak resident set over the run.
	PeakRSSMB float64 `json:"peak_rss_mb"`
	// P50Ms, P99Ms and P999Ms are a steady workload's commit-to-visible
	// latencies through the read_committed consumer.
	P50Ms  float64 `json:"p50_ms,omitempty"`
	P99Ms  float64 `json:"p99_ms,omitempty"`
	P999Ms float64 `json:"p999_ms,omitempty"`
}

func (r *Result) line() string {
	s := fmt.Sprintf("%8.0f events/s  cpu %7.2f µs/ev  broker %7.2f µs/ev  rss %6.1f MB  dup %d", r.EventsPerSec,
		r.CPUMicrosPerEvent, r.BrokerCPUMicrosPerEvent, r.PeakRSSMB, r.Duplicates)
	if r.OfferedRate > 0 {
		s += fmt.Sprintf("  p50 %.1f ms  p99 %.1f ms  p99.9 %.1f ms", r.P50Ms, r.P99Ms, r.P999Ms)
	}
	return s
}

// Machine is where the runs ran.
type Machine struct {
	CPUs    int    `json:"cpus"`
	LoadAvg string `json:"loadavg_at_start"`
	When    string `json:"when"`
}

// Report is every run and the medians per workload and system.
type Report struct {
	Machine Machine   `json:"machine"`
	Config  Config    `json:"config"`
	Runs    []*Result `json:"runs"`
	// Medians holds, per workload and system, the median of each figure
	// over the rounds.
	Medians []*Result `json:"medians"`
}

func newReport(cfg Config) *Report {
	load, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(load))
	return &Report{Config: cfg, Machine: Machine{CPUs: numCPU(), LoadAvg: strings.Join(f[:min(3, len(f))], " "), When: time.Now().UTC().Format(time.RFC3339)}}
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}

func (rep *Report) summarize() {
	rep.Medians = nil
	for _, w := range rep.Config.Workloads {
		for _, s := range rep.Config.Systems {
			var runs []*Result
			for _, r := range rep.Runs {
				if r.Workload == w && r.System == s {
					runs = append(runs, r)
				}
			}
			if len(runs) == 0 {
				continue
			}
			med := func(f func(*Result) float64) float64 {
				v := make([]float64, len(runs))
				for i, r := range runs {
					v[i] = f(r)
				}
				slices.Sort(v)
				if len(v)%2 == 1 {
					return v[len(v)/2]
				}
				return (v[len(v)/2-1] + v[len(v)/2]) / 2
			}
			m := &Result{Workload: w, System: s, OfferedRate: runs[0].OfferedRate, Events: runs[0].Events}
			m.EventsPerSec = med(func(r *Result) float64 { return r.EventsPerSec })
			m.CPUMicrosPerEvent = med(func(r *Result) float64 { return r.CPUMicrosPerEvent })
			m.BrokerCPUMicrosPerEvent = med(func(r *Result) float64 { return r.BrokerCPUMicrosPerEvent })
			m.PeakRSSMB = med(func(r *Result) float64 { return r.PeakRSSMB })
			m.P50Ms = med(func(r *Result) float64 { return r.P50Ms })
			m.P99Ms = med(func(r *Result) float64 { return r.P99Ms })
			m.P999Ms = med(func(r *Result) float64 { return r.P999Ms })
			m.StartupSeconds = med(func(r *Result) float64 { return r.StartupSeconds })
			for _, r := range runs {
				m.Duplicates += r.Duplicates
			}
			rep.Medians = append(rep.Medians, m)
		}
	}
}

func (rep *Report) median(workload, system string) *Result {
	for _, m := range rep.Medians {
		if m.Workload == workload && m.System == system {
			return m
		}
	}
	return nil
}

// Table prints the medians, one row per workload and system, with each
// peer's ratios against the relay: "events/s ×" is the relay's rate over the
// peer's, "CPU ×" and "RSS ×" the peer's over the relay's (above 1: the relay
// is ahead).
func (rep *Report) Table(w io.Writer) {
	fmt.Fprintf(w, "medians of %d round(s); %d CPUs, load at start %s\n", rep.Config.Rounds, rep.Machine.CPUs, rep.Machine.LoadAvg)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tsystem\tevents/s\tCPU µs/ev\tbroker µs/ev\tpeak RSS MB\tp50 ms\tp99 ms\tp99.9 ms\tdups\trelay events/s ×\tpeer CPU ×\tpeer RSS ×\t")
	for _, m := range rep.Medians {
		lat := "-\t-\t-"
		if m.OfferedRate > 0 {
			lat = fmt.Sprintf("%.1f\t%.1f\t%.1f", m.P50Ms, m.P99Ms, m.P999Ms)
		}
		ratios := "\t\t"
		if r := rep.median(m.Workload, SystemRelay); r != nil && m.System != SystemRelay {
			ratios = fmt.Sprintf("%.2f\t%.2f\t%.2f", r.EventsPerSec/m.EventsPerSec, m.CPUMicrosPerEvent/r.CPUMicrosPerEvent, m.PeakRSSMB/r.PeakRSSMB)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.2f\t%.2f\t%.1f\t%s\t%d\t%s\t\n", m.Workload, m.System, m.EventsPerSec, m.CPUMicrosPerEvent,
			m.BrokerCPUMicrosPerEvent, m.PeakRSSMB, lat, m.Duplicates, ratios)
	}
	_ = tw.Flush()
}

// WriteJSON writes the report to path.
func (rep *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench compare: write %s: %w", path, err)
	}
	return nil
}

// WritePNG plots, for the steady workloads, each system's p50 (dashed) and
// p99 (solid) commit-to-visible latency against the offered rate.
func (rep *Report) WritePNG(path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("commit to visible (read_committed), %d CPUs", rep.Machine.CPUs)
	p.X.Label.Text = "offered events/s"
	p.Y.Label.Text = "latency ms (p99 solid, p50 dashed)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Legend.Left = true
	colors := []color.Color{color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}}
	plotted := 0
	for i, s := range rep.Config.Systems {
		var p50, p99 plotter.XYs
		for _, m := range rep.Medians {
			if m.System == s && m.OfferedRate > 0 && m.P99Ms > 0 {
				p50 = append(p50, plotter.XY{X: float64(m.OfferedRate), Y: max(m.P50Ms, 0.01)})
				p99 = append(p99, plotter.XY{X: float64(m.OfferedRate), Y: max(m.P99Ms, 0.01)})
			}
		}
		if len(p99) == 0 {
			continue
		}
		slices.SortFunc(p50, func(a, b plotter.XY) int { return int(a.X - b.X) })
		slices.SortFunc(p99, func(a, b plotter.XY) int { return int(a.X - b.X) })
		c := colors[i%len(colors)]
		l99, pts99, err := plotter.NewLinePoints(p99)
		if err != nil {
			return err
		}
		l99.Color, pts99.Color, pts99.Shape = c, c, draw.CircleGlyph{}
		l50, err := plotter.NewLine(p50)
		if err != nil {
			return err
		}
		l50.Color, l50.Dashes = c, []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l99, pts99, l50)
		p.Legend.Add(s, l99)
		plotted++
	}
	if plotted == 0 {
		return fmt.Errorf("bench compare: no steady workload ran: nothing to plot in %s", path)
	}
	if err := p.Save(8*vg.Inch, 5*vg.Inch, path); err != nil {
		return fmt.Errorf("bench compare: write %s: %w", path, err)
	}
	return nil
}
