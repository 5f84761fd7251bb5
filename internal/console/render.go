package console

import (
	"bytes"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// assets are the templates and the stylesheet, embedded so the binary
// serves the console with nothing beside it.
//
//go:embed templates/*.html static/*
var assets embed.FS

// pages holds one template set per page, each the layout plus the page.
type pages struct{ byName map[string]*template.Template }

var pageNames = []string{"pipeline", "journey", "dlq", "dlq_show", "replay", "ledger", "message"}

var funcs = template.FuncMap{
	"time": fmtTime,
	"ptime": func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return fmtTime(*t)
	},
	"ago":    ago,
	"bytes":  bytesHuman,
	"status": statusClass,
	"deref": func(p any) any {
		switch v := p.(type) {
		case *int:
			if v != nil {
				return *v
			}
		case *int64:
			if v != nil {
				return *v
			}
		case *string:
			if v != nil {
				return *v
			}
		}
		return "-"
	},
	"short": func(s string, n int) string {
		r := []rune(s)
		if len(r) <= n {
			return s
		}
		return string(r[:n-1]) + "…"
	},
	"seconds": func(f float64) string { return fmt.Sprintf("%.1f", f) },
	// rate renders a per-second or per-minute rate; "-" before the second scrape.
	"rate": func(p *float64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprintf("%.2f", *p)
	},
	"fnum": func(f float64) string {
		if f == math.Trunc(f) && math.Abs(f) < 1e15 {
			return fmt.Sprintf("%.0f", f)
		}
		return fmt.Sprintf("%.2f", f)
	},
	"fbytes": func(f float64) string { return bytesHuman(int64(f)) },
	"dur":    func(d time.Duration) string { return d.Round(time.Millisecond).String() },
}

func loadPages() (*pages, error) {
	p := &pages{byName: map[string]*template.Template{}}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/parts.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		p.byName[name] = t
	}
	return p, nil
}

// view is what every page template gets.
type view struct {
	Title   string
	Nav     string
	Actions bool // --allow-actions
	Data    any
}

// wantsJSON reports whether the request asked for ?format=json (or a form
// field format=json, or Accept: application/json).
func wantsJSON(r *http.Request) bool {
	if r.FormValue("format") == "json" {
		return true
	}
	return strings.HasPrefix(r.Header.Get("Accept"), "application/json")
}

// render writes data as the named page, or as JSON when asked.
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name, title string, data any) {
	if wantsJSON(r) {
		writeJSON(w, code, data)
		return
	}
	var buf bytes.Buffer
	if err := s.pages.byName[name].Execute(&buf, view{Title: title, Nav: name, Actions: s.cfg.AllowActions, Data: data}); err != nil {
		s.cfg.Logger.ErrorContext(r.Context(), "console: render", "page", name, "err", err)
		http.Error(w, "console: render "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

func writeJSON(w http.ResponseWriter, code int, data any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(data)
}

// Message is the body of an error or refusal page, and its JSON.
type Message struct {
	Status  int    `json:"status"`
	Error   string `json:"error"`
	Explain string `json:"explain,omitempty"`
}

// fail renders a message page with the code.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, code int, msg, explain string) {
	s.render(w, r, code, "message", http.StatusText(code), Message{Status: code, Error: msg, Explain: explain})
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	}
	return fmt.Sprintf("%.1fh ago", d.Hours())
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// statusClass maps a status word to the stylesheet's colour class.
func statusClass(s string) string {
	switch strings.ToLower(s) {
	case "ok", "succeeded", "replay", "done", "reconciled", "closed", "active":
		return "ok"
	case "warn", "retrying", "pending", "in_flight", "retriable", "waiting", "half-open", "standby", "quarantine":
		return "warn"
	case "":
		return ""
	}
	return "err"
}

// printable is the text of b, or base64 when it is not UTF-8.
func printable(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return "base64:" + base64.StdEncoding.EncodeToString(b)
}
